"""The flash benchmark's rounds: every case once, the sub-second ones several times, shuffled."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import flash_bench
from benchlib.cases import ImageSet, full_matrix


def test_sub_second_cases_come_several_times_a_round_and_the_rest_once() -> None:
    cases = full_matrix(with_flasher=True)
    order = flash_bench.round_order(cases, 0, 3)
    counts = Counter(case.key for case, _ in order)
    for key in (
        "bmaptool/raw/1t/noverify",
        "flasher/raw/1t/verify",
        "flasher/raw/1t/noverify",
        "flasher/gz/1t/verify/warmcache",
    ):
        assert counts[key] == 3, key
    for key in (
        "dd/raw/1t",
        "flasher/raw/4t/verify",
        "flasher/xz/1t/verify",
        "bmaptool/gz/1t/verify",
    ):
        assert counts[key] == 1, key
    assert set(counts) == {case.key for case in cases}
    repeats = sorted(k for case, k in order if case.key == "flasher/raw/1t/verify")
    assert repeats == [0, 1, 2]


def test_each_round_has_an_order_of_its_own_that_a_rerun_repeats() -> None:
    cases = full_matrix(with_flasher=True)
    first = [(c.key, k) for c, k in flash_bench.round_order(cases, 0, 3)]
    assert first == [(c.key, k) for c, k in flash_bench.round_order(cases, 0, 3)]
    assert first != [(c.key, k) for c, k in flash_bench.round_order(cases, 1, 3)]
    once = flash_bench.round_order(cases, 0, 1)
    assert sorted(c.key for c, _ in once) == sorted(c.key for c in cases)


def test_an_image_of_any_name_brings_its_own_files(tmp_path: Path) -> None:
    image = tmp_path / "u.img"
    for name in ("u.img", "u.img.bmap", "u.img.gz", "u-dense.img", "balena.img.xz"):
        (tmp_path / name).write_bytes(b"x")
    images = ImageSet.of(image)
    assert images.missing() == []
    assert images.bmap == tmp_path / "u.img.bmap"
    assert images.source("raw") == tmp_path / "u-dense.img"
    assert images.source("gz") == tmp_path / "u.img.gz"
    assert images.absent_kinds() == ["zip", "xz", "zst"]  # balena.img.xz is another image's
    args = flash_bench.parse_args(["--image", str(image)])
    assert args.image == image and args.images is None


def test_a_folder_means_its_balena_img() -> None:
    images = ImageSet(Path("/d"))
    assert (images.sparse, images.bmap, images.dense) == (
        Path("/d/balena.img"),
        Path("/d/balena.img.bmap"),
        Path("/d/balena-dense.img"),
    )


def test_a_checkout_run_finds_this_checkout_first_and_an_installed_one_its_own_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    checkout = flash_bench.flasher_env(tmp_path / "c", tmp_path / "s")
    assert checkout["PYTHONPATH"].split(":") == [str(flash_bench.REPO), "/elsewhere"]
    assert checkout["FLASHER_CACHE_DIR"] == str(tmp_path / "c")
    assert checkout["FLASHER_CONFIG_DIR"] == str(tmp_path / "s")
    installed = flash_bench.flasher_env(tmp_path / "c", tmp_path / "s", checkout=False)
    assert installed["PYTHONPATH"] == "/elsewhere"
    assert installed["FLASHER_CACHE_DIR"] == str(tmp_path / "c")
    assert flash_bench.parse_args(["--image", "x.img", "--installed"]).installed is True
    assert flash_bench.parse_args(["--image", "x.img"]).installed is False


def test_flasher_runs_in_the_benchmarks_keep_what_they_compile_as_a_users_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYTHONDONTWRITEBYTECODE (set in some shells, never by an install) stays out of every
    flasher run the benchmarks time, so flasher keeps its dataclasses' code as for a user."""
    import cards_bench

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    for checkout in (True, False):
        env = flash_bench.flasher_env(tmp_path / "c", tmp_path / "s", checkout=checkout)
        assert "PYTHONDONTWRITEBYTECODE" not in env
    assert "PYTHONDONTWRITEBYTECODE" not in cards_bench.flasher_env(tmp_path, "flash")
