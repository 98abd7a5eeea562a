"""Decode while writing: a compressed image not yet in the cache is written to real loop devices
while it is decoded into the cache, and ends exactly as the unpack-then-write path would: the
same bytes over every mapped range, the same reported sha256s, the complete image in the cache;
a damaged or cancelled stream never leaves a card that looks good or a cache entry that looks
complete."""

from __future__ import annotations

import hashlib
import random
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.cache import ImageCache
from flasher.errors import Cancelled, ImageError
from flasher.events import CancelToken, Event, Phase, PhaseChanged
from flasher.models import DeviceConfig
from flasher.pipeline import FlashJob, prepare, resolve_target, run_flash, write
from flasher.provider import ImageProvider, SourceSpec
from flasher.unpacking import BackgroundUnpack
from flasher.writer.plan import HEAD_BYTES
from tests.conftest import ImageFactory
from tests.support.bootcheck import fsck_boot
from tests.support.filesystems import extract, require
from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevice, LoopDevices

MiB = 1024 * 1024


@pytest.fixture
def image(mbr_image: ImageFactory) -> BuiltImage:
    return mbr_image()


def _random_card(loops: LoopDevices, image: BuiltImage) -> LoopDevice:
    """A card that held random data before: skipped or unwritten ranges show."""
    return loops.create(image.size_bytes + 8 * MiB, fill=random.Random(7).randbytes(MiB))


def _config(image: BuiltImage) -> DeviceConfig:
    return DeviceConfig(device_type=image.device_type, hostname="stream-1")


def _flash(
    source: Path, card: LoopDevice, cache: Path, image: BuiltImage, *, overlap: bool
) -> tuple[tuple[tuple[int, int], ...], str | None, bool]:
    """Flash `source` to `card` through prepare/write: (mapped ranges, the target's sha256,
    whether the write followed the decoding)."""
    provider = ImageProvider(ImageCache(cache))
    with prepare(
        SourceSpec(path=str(source)), provider, config=_config(image), one_flash=overlap
    ) as job:
        followed = job.image.feed.growth is not None
        (result,) = write(job, [resolve_target(card.path)]).results
    assert result.ok and result.verified, result.error
    ranges = job.image.ranges if job.image.ranges is not None else _late_ranges(job)
    return ranges, result.sha256, followed


def _late_ranges(job: object) -> tuple[tuple[int, int], ...]:
    growth = job.image.feed.growth  # type: ignore[attr-defined]
    assert growth is not None
    ranges = growth.ranges
    assert ranges is not None
    return tuple(ranges)


@pytest.mark.parametrize(("scheme", "kind"), [("mbr", "gz"), ("mbr", "zst"), ("gpt", "gz")])
def test_a_flash_that_follows_the_decoding_writes_what_unpacking_first_writes(
    image_factory: ImageFactory,
    compressed_image: Callable[[Path, str], Path],
    loops: LoopDevices,
    tmp_path: Path,
    scheme: str,
    kind: str,
) -> None:
    image = image_factory(scheme=scheme)
    source = compressed_image(image.path, kind)
    old_card, new_card = _random_card(loops, image), _random_card(loops, image)
    old_ranges, old_sha, old_followed = _flash(
        source, old_card, tmp_path / "cache-old", image, overlap=False
    )
    new_ranges, new_sha, new_followed = _flash(
        source, new_card, tmp_path / "cache-new", image, overlap=True
    )
    assert (old_followed, new_followed) == (False, True)
    assert new_ranges == old_ranges
    assert new_sha == old_sha
    for offset, length in old_ranges:
        assert new_card.read(offset, length) == old_card.read(offset, length), offset


def test_the_cache_ends_with_the_complete_image_and_the_next_flash_uses_it(
    image: BuiltImage,
    compressed_image: Callable[[Path, str], Path],
    loops: LoopDevices,
    tmp_path: Path,
) -> None:
    source = compressed_image(image.path, "gz")
    cache = tmp_path / "cache"
    _, first_sha, first_followed = _flash(
        source, _random_card(loops, image), cache, image, overlap=True
    )
    raw = [p for p in cache.iterdir() if p.name.endswith(".raw")]
    assert len(raw) == 1
    assert _sha256(raw[0]) == _sha256(image.path)
    _, second_sha, second_followed = _flash(
        source, _random_card(loops, image), cache, image, overlap=True
    )
    assert (first_followed, second_followed) == (True, False)
    assert second_sha == first_sha


class Gate:
    """Holds the decoder at half the image until a card is being written, so what happens
    next (a damaged end, a cancel) happens while both run."""

    def __init__(self, image: BuiltImage, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writing = threading.Event()
        self.events: list[Event] = []
        halfway = image.size_bytes // 2
        decoded = BackgroundUnpack.decoded
        opened = self.writing

        def gated(self: BackgroundUnpack, end: int, written: list[tuple[int, int]]) -> None:
            if end >= halfway:
                opened.wait(30)
            decoded(self, end, written)

        monkeypatch.setattr(BackgroundUnpack, "decoded", gated)

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, PhaseChanged) and event.phase is Phase.WRITING and event.target:
            self.writing.set()


@pytest.fixture
def gate(image: BuiltImage, monkeypatch: pytest.MonkeyPatch) -> Gate:
    return Gate(image, monkeypatch)


def _damaged_gz(source: Path, damage: str, tmp_path: Path) -> Path:
    data = bytearray(source.read_bytes())
    if damage == "bad_crc":  # every byte decodes; the check at the very end fails
        data[-8:-4] = bytes(b ^ 0xFF for b in data[-8:-4])
    else:  # cut in the middle, with the real size trailer kept so the size is known
        data = data[: len(data) * 9 // 10] + data[-8:]
    out = tmp_path / f"{damage}.img.gz"
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    ("damage", "problems"),
    [("bad_crc", {"corrupt", "checksum"}), ("truncated", {"truncated", "corrupt"})],
)
def test_a_damaged_stream_fails_the_job_erases_the_card_and_caches_nothing(
    image: BuiltImage,
    compressed_image: Callable[[Path, str], Path],
    loops: LoopDevices,
    tmp_path: Path,
    damage: str,
    problems: set[str],
    gate: Gate,
) -> None:
    source = _damaged_gz(compressed_image(image.path, "gz"), damage, tmp_path)
    card = _random_card(loops, image)
    cache = tmp_path / "cache"
    job = FlashJob(SourceSpec(path=str(source)), targets=(card.path,), config=_config(image))
    with pytest.raises(ImageError) as caught:
        run_flash(job, ImageProvider(ImageCache(cache)), on_event=gate.on_event)
    assert caught.value.problem is not None and caught.value.problem.value in problems
    assert PhaseChanged(Phase.WRITING, card.path) in gate.events  # the card was being written
    assert card.read(0, HEAD_BYTES) == bytes(HEAD_BYTES)
    assert _cached_files(cache) == []


def test_a_cancel_mid_decode_erases_the_card_and_caches_nothing(
    image: BuiltImage,
    compressed_image: Callable[[Path, str], Path],
    loops: LoopDevices,
    tmp_path: Path,
    gate: Gate,
) -> None:
    source = compressed_image(image.path, "gz")
    card = _random_card(loops, image)
    cache = tmp_path / "cache"
    cancel = CancelToken()

    def on_event(event: Event) -> None:
        if isinstance(event, PhaseChanged) and event.phase is Phase.WRITING and event.target:
            cancel.cancel()
        gate.on_event(event)

    job = FlashJob(SourceSpec(path=str(source)), targets=(card.path,), config=_config(image))
    report = run_flash(job, ImageProvider(ImageCache(cache)), on_event=on_event, cancel=cancel)
    (result,) = report.results
    assert not result.ok and isinstance(result.error, Cancelled)
    assert card.read(0, HEAD_BYTES) == bytes(HEAD_BYTES)
    assert _cached_files(cache) == []


def test_zero_mapped_ranges_reach_a_card_that_held_random_data(
    image: BuiltImage,
    compressed_image: Callable[[Path, str], Path],
    loops: LoopDevices,
    tmp_path: Path,
) -> None:
    require("e2fsck")
    source = compressed_image(image.path, "gz")
    card = _random_card(loops, image)
    ranges, _sha, followed = _flash(source, card, tmp_path / "cache", image, overlap=True)
    assert followed
    zero_mapped = _zero_blocks(image.path, ranges)
    assert len(zero_mapped) > 16  # ext4 inode tables and the like: mapped, yet zero
    assert all(card.read(pos, 4096) == bytes(4096) for pos in zero_mapped)
    for part in image.partitions:
        if part.fs == "ext4":
            copy = extract(card.backing, part.start_bytes, part.size_bytes, tmp_path / "p.ext4")
            fsck = subprocess.run(["e2fsck", "-fn", str(copy)], capture_output=True, check=False)
            assert fsck.returncode == 0, fsck.stdout.decode(errors="replace")
            copy.unlink()
    fsck_boot(card.backing, image.boot_offset, image.boot_size, tmp_path)


def _zero_blocks(path: Path, ranges: tuple[tuple[int, int], ...]) -> list[int]:
    """Offsets of the whole 4 KiB blocks inside `ranges` that are zero in the file."""
    zero = bytes(4096)
    found: list[int] = []
    with open(path, "rb") as f:
        for offset, length in ranges:
            start = -(-offset // 4096) * 4096
            f.seek(start)
            data = f.read(offset + length - start)
            found += [
                start + i for i in range(0, len(data) - 4095, 4096) if data[i : i + 4096] == zero
            ]
    return found


def _cached_files(cache: Path) -> list[str]:
    """Files in the cache that could pass for an image (locks and the index aside)."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if p.is_file() and not p.name.startswith("index"))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
