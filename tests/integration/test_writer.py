"""The writer end to end on real loop devices: helper in-process and as a root subprocess,
verification, sparse writes, failing and cancelled targets, and regular-file targets."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from flasher.drives.discovery import find_drive
from flasher.errors import Cancelled, ImageError, VerificationFailed, WriteFailed
from flasher.events import CancelToken, Event, Phase, PhaseChanged, Progress
from flasher.models import Drive
from flasher.writer import targets
from flasher.writer.blockdev import BlockDevicePolicy
from flasher.writer.client import ImageFeed, verify_image, write_image
from flasher.writer.imagesource import Overlay, RandomAccessSource
from flasher.writer.launchers import DirectLauncher, InProcessLauncher, Launcher
from flasher.writer.plan import WritePlan
from flasher.writer.protocol import TargetSpec
from tests.support.loopdev import LoopDevice, LoopDevices
from tests.support.streams import HeldStream, wait_until_written

MiB = 1024 * 1024
IMAGE_BYTES = 24 * MiB + 1536  # not a multiple of 4 KiB, so the padded tail is exercised
FILL = b"\xaa"
OVERLAY = ((5000, b"config.json was here"), (9 * MiB + 3, b"X" * 70000))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A random raw image and the bytes the prepared image (base + overlay) should have."""
    path = tmp_path_factory.mktemp("writer") / "image.img"
    data = random.Random(7).randbytes(IMAGE_BYTES)
    path.write_bytes(data)
    expected = bytearray(data)
    for offset, patch in OVERLAY:
        expected[offset : offset + len(patch)] = patch
    return path, bytes(expected)


def _drive(loop: LoopDevice) -> Drive:
    drive = find_drive(loop.path)
    assert drive is not None and drive.bus == "loop"
    return drive


def _in_process() -> Launcher:
    return InProcessLauncher(BlockDevicePolicy())


@pytest.mark.root
@pytest.mark.parametrize(
    "make_launcher", [_in_process, DirectLauncher], ids=["in-process", "subprocess"]
)
def test_helper_writes_and_verifies_a_loop_device(
    loops: LoopDevices, image: tuple[Path, bytes], make_launcher: Callable[[], Launcher]
) -> None:
    path, expected = image
    loop = loops.create(32 * MiB, fill=FILL)
    events: list[Event] = []
    (result,) = write_image(
        ImageFeed.from_file(path, overlay=OVERLAY),
        [_drive(loop)],
        launcher=make_launcher(),
        on_event=events.append,
    )
    assert result.ok and result.verified, result.error
    assert result.bytes_written == IMAGE_BYTES
    assert loop.read(0, IMAGE_BYTES) == expected
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases == [Phase.WRITING, Phase.SYNCING, Phase.VERIFYING, Phase.DONE]
    finals = [e for e in events if isinstance(e, Progress) and e.done_bytes == e.total_bytes]
    assert {e.phase for e in finals} == {Phase.WRITING, Phase.VERIFYING}


@pytest.mark.root
def test_helper_erases_the_last_mib_of_a_larger_card(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, _expected = image
    loop = loops.create(40 * MiB, fill=FILL)
    (result,) = write_image(ImageFeed.from_file(path), [_drive(loop)], launcher=_in_process())
    assert result.ok
    assert loop.read(39 * MiB, MiB) == bytes(MiB)
    assert loop.read(30 * MiB, MiB) == FILL * MiB


@pytest.mark.root
@pytest.mark.parametrize(
    "offset", [100, 9 * MiB + 7, IMAGE_BYTES - 1], ids=["partition-table", "middle", "last-byte"]
)
def test_verify_reports_the_offset_of_a_flipped_byte(
    loops: LoopDevices, image: tuple[Path, bytes], offset: int
) -> None:
    path, expected = image
    loop = loops.create(32 * MiB)
    drive = _drive(loop)
    (result,) = write_image(
        ImageFeed.from_file(path, overlay=OVERLAY), [drive], launcher=_in_process()
    )
    assert result.ok
    loop.poke(offset, bytes([expected[offset] ^ 0x01]))
    target = BlockDevicePolicy().open_target(
        TargetSpec(drive.path, drive.dev, drive.size_bytes, drive.serial), lambda _m: None
    )
    with open(path, "rb") as f:
        source = RandomAccessSource(f.fileno(), IMAGE_BYTES, Overlay(OVERLAY))
        try:
            (outcome,) = targets.verify_targets(
                source,
                WritePlan.build(IMAGE_BYTES, None),
                [target],
                on_event=lambda _e: None,
                cancel=CancelToken(),
            )
        finally:
            target.close()
    assert isinstance(outcome.error, VerificationFailed)
    assert outcome.error.offset == offset
    assert outcome.error.range_start <= offset < outcome.error.range_end


@pytest.mark.root
def test_verify_only_job_rechecks_cards_through_the_helper(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, expected = image
    good, bad = loops.create(32 * MiB), loops.create(32 * MiB)
    drives = [_drive(good), _drive(bad)]
    feed = ImageFeed.from_file(path, overlay=OVERLAY)
    written = write_image(feed, drives, launcher=_in_process())
    bad.poke(3 * MiB, bytes([expected[3 * MiB] ^ 0xFF]))
    ok, failed = verify_image(feed, drives, launcher=_in_process())
    assert ok.ok and ok.verified and ok.bytes_written == 0
    assert ok.sha256 == written[0].sha256
    assert isinstance(failed.error, VerificationFailed)
    assert failed.error.offset == 3 * MiB
    assert good.read(0, IMAGE_BYTES) == expected


@pytest.mark.root
def test_sparse_and_full_writes_give_identical_mapped_ranges(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, expected = image
    sparse, full = loops.create(32 * MiB, fill=FILL), loops.create(32 * MiB, fill=FILL)
    ranges = [(0, MiB), (5 * MiB, 3 * MiB + 123), (20 * MiB, 4096)]
    feed = ImageFeed.from_file(path, overlay=OVERLAY)
    (a,) = write_image(feed, [_drive(sparse)], ranges=ranges, launcher=_in_process())
    (b,) = write_image(feed, [_drive(full)], ranges=ranges, write_all=True, launcher=_in_process())
    assert a.ok and b.ok
    assert a.bytes_written < b.bytes_written == IMAGE_BYTES
    for offset, length in ranges:
        mapped = expected[offset : offset + length]
        assert sparse.read(offset, length) == full.read(offset, length) == mapped
    # Far from any mapped range, the sparse write left the old bytes alone.
    assert sparse.read(14 * MiB, MiB) == FILL * MiB
    assert full.read(14 * MiB, MiB) == expected[14 * MiB : 15 * MiB]


def _feed(kind: str, path: Path, data: bytes) -> ImageFeed:
    if kind == "fd":
        return ImageFeed.from_file(path, overlay=OVERLAY)
    return ImageFeed.from_stream(lambda: _as_binary(HeldStream(data)), len(data), overlay=OVERLAY)


def _as_binary(stream: io.RawIOBase) -> BinaryIO:
    return io.BufferedReader(stream)


@pytest.mark.root
@pytest.mark.parametrize("count", [2, 4])
@pytest.mark.parametrize("kind", ["fd", "stream"])
def test_a_target_failing_mid_write_leaves_the_others_verified(
    loops: LoopDevices, image: tuple[Path, bytes], count: int, kind: str
) -> None:
    path, expected = image
    good = [loops.create(32 * MiB) for _ in range(count - 1)]
    # Its medium runs out of space after 8 MiB: writes beyond fail with an I/O error.
    failing = loops.create_on_tmpfs(32 * MiB, tmpfs_bytes=8 * MiB)
    raw = path.read_bytes()
    drives = [_drive(failing), *(_drive(loop) for loop in good)]
    results = write_image(_feed(kind, path, raw), drives, launcher=_in_process())
    assert [r.target for r in results] == [d.path for d in drives]
    bad, *rest = results
    assert not bad.ok and isinstance(bad.error, WriteFailed)
    assert bad.error.offset >= MiB
    for result, loop in zip(rest, good, strict=True):
        assert result.ok and result.verified, result.error
        assert loop.read(0, IMAGE_BYTES) == expected


@pytest.mark.root
def test_cancel_leaves_the_first_mib_zeroed(loops: LoopDevices, image: tuple[Path, bytes]) -> None:
    path, _expected = image
    loop = loops.create(32 * MiB, fill=FILL)
    raw = path.read_bytes()
    release = threading.Event()
    cancel = CancelToken()
    feed = ImageFeed.from_stream(
        lambda: _as_binary(HeldStream(raw, hold_at=12 * MiB, release=release)), len(raw)
    )

    def cancel_mid_write() -> None:
        # Once part of the body is on the card (the source is stuck at 12 MiB), cancel.
        wait_until_written(loop, raw, 20)
        cancel.cancel()
        release.set()

    watcher = threading.Thread(target=cancel_mid_write)
    watcher.start()
    (result,) = write_image(feed, [_drive(loop)], launcher=_in_process(), cancel=cancel)
    watcher.join()
    assert isinstance(result.error, Cancelled), result.error
    assert loop.read(0, MiB) == bytes(MiB)
    assert loop.read(2 * MiB, 4096) == raw[2 * MiB : 2 * MiB + 4096]
    assert loop.read(20 * MiB, 4096) == FILL * 4096


@pytest.mark.root
def test_stream_with_a_wrong_checksum_never_gets_a_partition_table(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, _expected = image
    loop = loops.create(32 * MiB, fill=FILL)
    raw = path.read_bytes()
    feed = ImageFeed.from_stream(lambda: _as_binary(HeldStream(raw)), len(raw), sha256="0" * 64)
    (result,) = write_image(feed, [_drive(loop)], launcher=_in_process())
    assert isinstance(result.error, ImageError) and result.error.problem == "checksum"
    assert loop.read(0, MiB) == bytes(MiB)


@pytest.mark.parametrize("kind", ["fd", "stream"])
def test_writing_without_verify_hashes_nothing(
    tmp_path: Path, image: tuple[Path, bytes], kind: str
) -> None:
    path, expected = image
    out = tmp_path / "plain.img"
    drive = Drive(path=str(out), size_bytes=0, is_file=True)
    (result,) = write_image(_feed(kind, path, path.read_bytes()), [drive], verify=False)
    assert result.ok and not result.verified and result.sha256 is None
    assert out.read_bytes() == expected


@pytest.mark.parametrize("kind", ["fd", "stream"])
def test_regular_file_targets_use_the_same_engine_without_the_helper(
    tmp_path: Path, image: tuple[Path, bytes], kind: str
) -> None:
    path, expected = image
    outputs = [tmp_path / "a.img", tmp_path / "b.img"]
    drives = [Drive(path=str(p), size_bytes=0, is_file=True) for p in outputs]
    results = write_image(_feed(kind, path, path.read_bytes()), drives, ranges=None)
    assert all(r.ok and r.verified for r in results), [r.error for r in results]
    assert results[0].sha256 is not None and results[0].sha256 == results[1].sha256
    for out in outputs:
        assert out.read_bytes() == expected


def test_sparse_file_target_reads_zero_outside_the_mapped_ranges(
    tmp_path: Path, image: tuple[Path, bytes]
) -> None:
    path, _expected = image
    out = tmp_path / "sparse.img"
    ranges = [(0, MiB), (20 * MiB, 4096)]
    (result,) = write_image(
        ImageFeed.from_file(path),
        [Drive(path=str(out), size_bytes=0, is_file=True)],
        ranges=ranges,
    )
    assert result.ok
    written = out.read_bytes()
    assert len(written) == IMAGE_BYTES
    assert written[:MiB] == path.read_bytes()[:MiB]
    assert written[10 * MiB : 11 * MiB] == bytes(MiB)
    assert out.stat().st_blocks * 512 < IMAGE_BYTES // 2  # holes stayed holes


def test_overlay_outside_the_mapped_ranges_is_still_written(
    tmp_path: Path, image: tuple[Path, bytes]
) -> None:
    path, _expected = image
    out = tmp_path / "configured.img"
    (result,) = write_image(
        ImageFeed.from_file(path, overlay=OVERLAY),
        [Drive(path=str(out), size_bytes=0, is_file=True)],
        ranges=[(0, MiB)],
    )
    assert result.ok
    offset, patch = OVERLAY[1]
    assert out.read_bytes()[offset : offset + len(patch)] == patch
