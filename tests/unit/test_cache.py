"""The image cache: content addressing, read-only files, index, locks, unpacking, pruning, CLI."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest

from flasher.cache import ImageCache, ImageMeta, key_digest
from flasher.cli import cache_cmds
from flasher.cli.context import CliContext
from flasher.cli.output import Output
from flasher.errors import Cancelled, ConfigError, ImageError
from flasher.events import CancelToken, Event, Progress

DAY_S = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _disk(path: Path, seed: int, size: int = 2 * 1024 * 1024) -> Path:
    """Bytes that look like a disk (an MBR signature) with seeded content."""
    data = bytearray(size)
    data[510:512] = b"\x55\xaa"
    data[4096 : 4096 + 65536] = random.Random(seed).randbytes(65536)
    path.write_bytes(bytes(data))
    return path


def _zipped(disk: Path) -> Path:
    out = disk.with_suffix(".zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(disk, "image.img")
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(tmp_path: Path, clock: Clock) -> ImageCache:
    return ImageCache(tmp_path / "cache", clock=clock)


def test_add_file_stores_a_read_only_copy_under_its_sha256(
    cache: ImageCache, tmp_path: Path
) -> None:
    disk = _disk(tmp_path / "a.img", 1)
    meta = ImageMeta(device_type="raspberrypi4-64", os_version="6.5.50+rev8", file_type=".img")
    entry = cache.add_file(disk, meta=meta, key="k1")
    assert entry.path == cache.root / f"{entry.sha256}.img"
    assert entry.path.read_bytes() == disk.read_bytes() and disk.exists()
    assert entry.path.stat().st_mode & 0o777 == 0o444
    assert (entry.kind, entry.meta, entry.keys) == ("raw", meta, ("k1",))
    assert cache.find("k1") == entry


def test_the_same_content_is_stored_once(cache: ImageCache, tmp_path: Path) -> None:
    first = cache.add_file(_disk(tmp_path / "a.img", 1), meta=ImageMeta(), key="k1")
    second = cache.add_file(_disk(tmp_path / "b.img", 1), meta=ImageMeta(), key="k2", move=True)
    assert first.path == second.path and second.keys == ("k1", "k2")
    assert len(cache.entries()) == 1 and not (tmp_path / "b.img").exists()


def test_files_that_are_not_images_are_refused(cache: ImageCache, tmp_path: Path) -> None:
    page = tmp_path / "page.img"
    page.write_bytes(b"<html><body>Bad Gateway</body></html>\n" * 30)
    with pytest.raises(ImageError):
        cache.add_file(page, meta=ImageMeta(), key="k")
    assert cache.entries() == [] and cache.find("k") is None


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_an_entry_whose_file_is_gone_or_changed_is_not_served(
    cache: ImageCache, tmp_path: Path, damage: str
) -> None:
    entry = cache.add_file(_disk(tmp_path / "a.img", 1), meta=ImageMeta(), key="k")
    entry.path.chmod(0o644)
    if damage == "delete":
        entry.path.unlink()
    else:
        with open(entry.path, "r+b") as f:
            f.truncate(1024)
    assert cache.find("k") is None and cache.entries() == []


def test_a_damaged_index_starts_over_without_failing(cache: ImageCache, tmp_path: Path) -> None:
    cache.add_file(_disk(tmp_path / "a.img", 1), meta=ImageMeta(), key="k")
    (cache.root / "index.json").write_text("{not json")
    assert cache.entries() == []
    assert cache.add_file(_disk(tmp_path / "b.img", 2), meta=ImageMeta(), key="k2").keys == ("k2",)


def test_the_unpacked_copy_is_made_once_and_read_only(cache: ImageCache, tmp_path: Path) -> None:
    disk = _disk(tmp_path / "a.img", 1)
    entry = cache.add_file(_zipped(disk), meta=ImageMeta(), key="k")
    events: list[Event] = []
    raw = cache.unpacked(entry, on_event=events.append)
    assert raw.read_bytes() == disk.read_bytes() and raw.stat().st_mode & 0o777 == 0o444
    assert any(isinstance(e, Progress) for e in events)
    again: list[Event] = []
    assert cache.unpacked(entry, on_event=again.append) == raw and again == []
    refreshed = cache.get(entry.sha256)
    assert refreshed is not None and refreshed.unpacked_path == raw
    assert refreshed.unpacked_size_bytes == disk.stat().st_size


def test_a_raw_entry_is_its_own_unpacked_image(cache: ImageCache, tmp_path: Path) -> None:
    entry = cache.add_file(_disk(tmp_path / "a.img", 1), meta=ImageMeta())
    assert cache.unpacked(entry) == entry.path


def test_concurrent_unpacks_of_one_image_unpack_it_once(cache: ImageCache, tmp_path: Path) -> None:
    entry = cache.add_file(
        _zipped(_disk(tmp_path / "a.img", 1, 32 * 1024 * 1024)), meta=ImageMeta()
    )
    progress_lists: list[list[Event]] = [[], []]
    threads = [
        threading.Thread(target=cache.unpacked, args=(entry,), kwargs={"on_event": events.append})
        for events in progress_lists
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(bool(events) for events in progress_lists) == [False, True]


def test_a_lock_held_by_another_process_is_waited_for(cache: ImageCache, tmp_path: Path) -> None:
    lock_file = cache.root / "locks" / f"{key_digest('download:x')}.lock"
    lock_file.parent.mkdir(parents=True)
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, pathlib, sys, time\n"
            "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(0.4)\n"
            "pathlib.Path(sys.argv[2]).touch(); fcntl.flock(f, fcntl.LOCK_UN)\n",
            str(lock_file),
            str(released),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with cache.lock("download:x", blocking=False) as held:
        assert held is False
    waited: list[bool] = []
    with cache.lock("download:x", on_wait=lambda: waited.append(True)) as held:
        assert held is True and waited == [True]
        assert released.exists()  # it only got the lock after the holder let go
    holder.wait(timeout=5)


def _three_images(cache: ImageCache, clock: Clock, tmp_path: Path) -> list[str]:
    """Images last used 3, 2 and 1 day(s) ago; returns their sha256, oldest first."""
    shas = []
    for age_days in (3, 2, 1):
        clock.now = 1_700_000_000.0 - age_days * DAY_S
        disk = _disk(tmp_path / f"{age_days}.img", age_days)
        shas.append(cache.add_file(disk, meta=ImageMeta(), key=f"k{age_days}").sha256)
    clock.now = 1_700_000_000.0
    return shas


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({"older_than_s": 1.5 * DAY_S}, [2]),
        ({"older_than_s": 2.5 * DAY_S}, [1, 2]),
        ({"keep": 2}, [1, 2]),
        ({"keep": 0}, []),
        ({"max_size_bytes": 5 * 1024 * 1024}, [1, 2]),
        ({"max_size_bytes": 0}, []),
        ({"everything": True}, []),
        ({}, [0, 1, 2]),
    ],
)
def test_prune_removes_the_least_recently_used_first(
    cache: ImageCache, clock: Clock, tmp_path: Path, options: dict[str, Any], kept: list[int]
) -> None:
    shas = _three_images(cache, clock, tmp_path)
    report = cache.prune(**options)
    remaining = {e.sha256 for e in cache.entries()}
    assert remaining == {shas[i] for i in kept}
    assert {e.sha256 for e in report.removed} == set(shas) - remaining
    assert sorted(p.name for p in cache.root.glob("*.img")) == sorted(f"{s}.img" for s in remaining)


def test_using_an_image_makes_it_recent(cache: ImageCache, clock: Clock, tmp_path: Path) -> None:
    shas = _three_images(cache, clock, tmp_path)
    cache.touch(shas[0])
    cache.prune(keep=1)
    assert [e.sha256 for e in cache.entries()] == [shas[0]]


def test_prune_keeps_images_another_process_is_using(cache: ImageCache, tmp_path: Path) -> None:
    entry = cache.add_file(_disk(tmp_path / "a.img", 1), meta=ImageMeta(), key="busy-key")
    with cache.lock("busy-key"):
        report = cache.prune(everything=True)
    assert report.busy == (entry.sha256,) and cache.entries() == [entry]


def test_prune_all_removes_partial_downloads_and_strays(cache: ImageCache, tmp_path: Path) -> None:
    cache.add_file(_disk(tmp_path / "a.img", 1), meta=ImageMeta(), key="k")
    cache.partial_path("download:gone").write_bytes(b"x" * 1000)
    (cache.root / "0123.img").write_bytes(b"not in the index")
    cache.prune(everything=True)
    assert list(cache.root.glob("*.img")) == [] and list((cache.root / "partial").iterdir()) == []


def test_the_cache_folder_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert ImageCache().root == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000", 1000),
        ("500M", 500 * 10**6),
        ("2GiB", 2 * 1024**3),
        ("1.5G", 1_500_000_000),
        ("64KiB", 65536),
        ("3kB", 3000),
    ],
)
def test_sizes_take_decimal_and_binary_units(text: str, size: int) -> None:
    assert cache_cmds.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5X", "-3", "1iB", "2 GB free"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        cache_cmds.parse_size(text)


def _cli(argv: list[str]) -> tuple[int, Any]:
    """Run a cache command through its own registration; returns (exit code, JSON output)."""
    parser = argparse.ArgumentParser()
    top = parser.add_subparsers(dest="group")
    groups = {name: top.add_parser(name).add_subparsers() for name in ("os", "cache")}
    cache_cmds.register(groups)
    args = parser.parse_args(argv)
    stdout = io.StringIO()
    code = args.handler(args, CliContext(args=args, out=Output(json_mode=True, stdout=stdout)))
    return code, json.loads(stdout.getvalue())


def test_cache_list_and_prune_commands_report_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    entry = ImageCache().add_file(_disk(tmp_path / "a.img", 1), meta=ImageMeta(os_version="6.5"))
    code, listed = _cli(["cache", "list", "--json"])
    assert code == 0 and [i["sha256"] for i in listed["images"]] == [entry.sha256]
    assert listed["images"][0]["os_version"] == "6.5" and listed["total_disk_bytes"] > 0
    code, pruned = _cli(["cache", "prune", "--keep", "0", "--json"])
    assert code == 0 and pruned["removed"] == [entry.sha256] and pruned["freed_bytes"] > 0
    assert ImageCache().entries() == []


def test_cache_prune_without_a_criterion_is_a_usage_error() -> None:
    with pytest.raises(ConfigError):
        _cli(["cache", "prune"])


def test_lock_waits_are_cancellable(cache: ImageCache) -> None:
    cancel = CancelToken()
    entered: list[bool] = []
    with cache.lock("download:y"):
        threading.Timer(0.2, cancel.cancel).start()
        with pytest.raises(Cancelled), cache.lock("download:y", cancel=cancel):
            entered.append(True)
    assert entered == []


def test_prune_by_age_also_drops_stale_partial_downloads(
    cache: ImageCache, clock: Clock, tmp_path: Path
) -> None:
    stale = cache.partial_path("download:old")
    stale.write_bytes(b"x" * 1000)
    fresh = cache.partial_path("download:new")
    fresh.write_bytes(b"y" * 1000)
    os.utime(stale, (clock.now - 3 * DAY_S, clock.now - 3 * DAY_S))
    os.utime(fresh, (clock.now, clock.now))
    cache.prune(older_than_s=DAY_S)
    assert not stale.exists() and fresh.exists()


def test_a_local_compressed_file_is_unpacked_once_without_a_copy(
    cache: ImageCache, tmp_path: Path
) -> None:
    disk = _disk(tmp_path / "disk.img", seed=7)
    zipped = _zipped(disk)
    first = cache.unpacked_local(zipped, "local:a")
    inode = first.stat().st_ino
    again = cache.unpacked_local(zipped, "local:a")
    assert again == first and again.stat().st_ino == inode
    assert first.read_bytes() == disk.read_bytes()
    assert first.stat().st_mode & 0o222 == 0
    assert cache.entries() == []  # nothing was copied into the content store


def test_a_changed_local_file_gets_a_new_unpacked_copy(cache: ImageCache, tmp_path: Path) -> None:
    disk = _disk(tmp_path / "disk.img", seed=1)
    old = cache.unpacked_local(_zipped(disk), "local:v1")
    _disk(disk, seed=2)
    new = cache.unpacked_local(_zipped(disk), "local:v2")
    assert new != old
    assert new.read_bytes() == disk.read_bytes() != old.read_bytes()


def test_prune_all_removes_local_unpacked_copies(cache: ImageCache, tmp_path: Path) -> None:
    made = cache.unpacked_local(_zipped(_disk(tmp_path / "disk.img", seed=3)), "local:x")
    cache.prune(everything=True)
    assert not made.exists()
