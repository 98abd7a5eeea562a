"""prepare/write, the path every face shares: one prepared image, cards derived from it, files
written and read back, and the same facts for every caller."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from flasher.cache import ImageCache
from flasher.errors import ConfigError, DriveRejected
from flasher.models import DeviceConfig
from flasher.pipeline import FlashJob, prepare, resolve_target, run_flash, write
from flasher.provider import ImageProvider, SourceSpec
from tests.conftest import ImageFactory
from tests.support.bootcheck import mtype
from tests.support.images import BuiltImage


@pytest.fixture
def image(mbr_image: ImageFactory) -> BuiltImage:
    return mbr_image()


@pytest.fixture
def provider(tmp_path: Path) -> ImageProvider:
    return ImageProvider(ImageCache(tmp_path / "cache"))


def _config(image: BuiltImage, **options: object) -> DeviceConfig:
    return DeviceConfig(device_type=image.device_type, **options)  # type: ignore[arg-type]


def _boot_start(image: BuiltImage) -> int:
    return next(p.start_bytes for p in image.partitions if p.number == 1)


def _hostname(card: Path, image: BuiltImage) -> str | None:
    config = json.loads(mtype(card, _boot_start(image), "/config.json"))
    value = config.get("hostname")
    return str(value) if value is not None else None


def test_cards_derived_from_one_prepared_job_get_their_own_hostnames(
    image: BuiltImage, provider: ImageProvider, tmp_path: Path
) -> None:
    source = SourceSpec(path=str(image.path))
    with prepare(source, provider, config=_config(image)) as job:
        cards = {name: job.card(hostname=name) for name in ("kiosk-01", "kiosk-02")}
        for name, card in cards.items():
            target = resolve_target(str(tmp_path / f"{name}.img"))
            (result,) = write(job, [target], card=card).results
            assert result.ok and result.verified
    assert [_hostname(tmp_path / f"{n}.img", image) for n in cards] == ["kiosk-01", "kiosk-02"]
    assert cards["kiosk-01"].config_sha256 != cards["kiosk-02"].config_sha256


def test_a_card_reuses_the_map_and_adds_only_what_its_overlay_replaced(
    image: BuiltImage, provider: ImageProvider
) -> None:
    with prepare(SourceSpec(path=str(image.path)), provider, config=_config(image)) as job:
        card = job.card(hostname="a-much-longer-hostname-than-before")
        assert job.image.ranges is not None and card.ranges is not None
        shared = set(job.image.ranges) & set(card.ranges)
        # Outside the boot partition every range is the same.
        boot_end = _boot_start(image) + image.partitions[0].size_bytes
        assert {r for r in job.image.ranges if r[0] >= boot_end} <= shared


def test_an_invalid_card_hostname_is_refused_before_writing(
    image: BuiltImage, provider: ImageProvider, tmp_path: Path
) -> None:
    with (
        prepare(SourceSpec(path=str(image.path)), provider, config=_config(image)) as job,
        pytest.raises(ConfigError) as caught,
    ):
        job.card(hostname="not a hostname")
    assert caught.value.field == "hostname"
    assert list(tmp_path.glob("*.img")) == []


def test_a_card_of_an_unconfigured_job_cannot_take_a_hostname(
    image: BuiltImage, provider: ImageProvider
) -> None:
    with (
        prepare(SourceSpec(path=str(image.path)), provider) as job,
        pytest.raises(ConfigError) as caught,
    ):
        job.card(hostname="kiosk-01")
    assert caught.value.field == "hostname"


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
def test_a_flash_of_a_local_file_does_not_read_all_of_the_image_for_a_hash(
    image: BuiltImage, provider: ImageProvider, tmp_path: Path, compressed: bool
) -> None:
    source = image.path
    if compressed:
        source = tmp_path / "image.img.gz"
        source.write_bytes(gzip.compress(image.path.read_bytes(), compresslevel=1))
    job = FlashJob(SourceSpec(path=str(source)), targets=(str(tmp_path / "card.img"),))
    report = run_flash(job, provider)
    assert report.ok
    assert report.image_sha256 is None
    assert all(r.sha256 for r in report.results)  # what was written is still proven


def test_a_flash_given_the_raw_files_sha256_reports_it(
    image: BuiltImage, provider: ImageProvider, tmp_path: Path
) -> None:
    digest = hashlib.sha256(image.path.read_bytes()).hexdigest()
    job = FlashJob(
        SourceSpec(path=str(image.path)),
        targets=(str(tmp_path / "card.img"),),
        expected_sha256=digest,
    )
    report = run_flash(job, provider)
    assert report.ok
    assert report.image_sha256 == digest


def test_a_prepared_raw_file_for_many_cards_is_hashed_for_the_report(
    image: BuiltImage, provider: ImageProvider
) -> None:
    with prepare(SourceSpec(path=str(image.path)), provider) as job:
        assert job.sha256() == hashlib.sha256(image.path.read_bytes()).hexdigest()


def test_write_all_maps_nothing_and_writes_every_byte(
    image: BuiltImage, provider: ImageProvider, tmp_path: Path
) -> None:
    with prepare(SourceSpec(path=str(image.path)), provider, write_all=True) as job:
        assert job.image.ranges is None and job.mapped_bytes == job.size_bytes
        (result,) = write(job, [resolve_target(str(tmp_path / "card.img"))]).results
    assert result.ok and result.bytes_written == image.size_bytes
    assert (tmp_path / "card.img").read_bytes() == image.path.read_bytes()


def test_the_source_itself_is_rejected_as_a_target(
    image: BuiltImage, provider: ImageProvider
) -> None:
    with (
        prepare(SourceSpec(path=str(image.path)), provider) as job,
        pytest.raises(DriveRejected),
    ):
        write(job, [resolve_target(str(image.path))])


def test_an_image_that_is_not_balenaos_is_written_as_it_is(
    provider: ImageProvider, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.img"
    plain.write_bytes(bytes(range(256)) * 4096)
    with prepare(SourceSpec(path=str(plain)), provider) as job:
        assert job.identity.device_type is None and not job.configured
        (result,) = write(job, [resolve_target(str(tmp_path / "card.img"))]).results
    assert result.ok and (tmp_path / "card.img").read_bytes() == plain.read_bytes()
