"""The capacity probe: honest cards pass and keep their data; fake-capacity cards (wrapping or
losing writes past their real size) are caught with their real capacity, through the writer
helper's "probe" operation."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from flasher.error_codes import ProblemCode
from flasher.errors import CounterfeitCard, DriveRejected, WriterProtocolError
from flasher.models import Drive
from flasher.writer import sysblock
from flasher.writer.blockdev import BlockDevicePolicy
from flasher.writer.capacity import check_capacity, probe_drive
from flasher.writer.launchers import InProcessLauncher
from flasher.writer.probe import (
    PROBE_BLOCK_BYTES,
    make_tag,
    plan_offsets,
    probe_capacity,
    read_tag,
)
from flasher.writer.probe_service import decode_probe_request
from tests.support.loopdev import LoopDevices, require_loop
from tests.support.writer_policy import FakeCardPolicy, WrappingSectors

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[LoopDevices]:
    require_loop()
    with LoopDevices(tmp_path) as devices:
        yield devices


def _confirmed(path: str) -> Drive:
    dev = sysblock.rdev_of(path)
    assert dev is not None
    return Drive(
        path=path, size_bytes=sysblock.size_bytes(dev), dev=dev, serial=sysblock.read_serial(dev)
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("size_bytes", [64 * MiB, 31914983424, 8 * GiB + 12 * MiB])
def test_plan_covers_the_whole_size_and_the_last_block(size_bytes: int) -> None:
    offsets = plan_offsets(size_bytes, 64)
    assert 64 <= len(offsets) <= 129
    assert offsets[0] == 0
    assert offsets[-1] == size_bytes // PROBE_BLOCK_BYTES * PROBE_BLOCK_BYTES - PROBE_BLOCK_BYTES
    assert all(o % PROBE_BLOCK_BYTES == 0 for o in offsets)


def test_a_tag_reads_back_only_whole_and_under_its_nonce() -> None:
    tag = make_tag(b"n" * 16, 8192)
    assert read_tag(tag, b"n" * 16) == 8192
    assert read_tag(tag, b"m" * 16) is None
    assert read_tag(tag[:-1] + b"\0", b"n" * 16) is None


@pytest.mark.parametrize(
    ("real_bytes", "vanish"),
    [
        (64 * MiB, False),  # wraps modulo a power of two
        (100 * MiB, False),  # wraps modulo another size
        (100 * MiB, True),  # writes past the real size vanish
        (GiB - 4096, True),  # only the last block is missing
    ],
)
def test_probe_finds_the_real_capacity_of_a_fake_card(
    tmp_path: Path, real_bytes: int, vanish: bool
) -> None:
    fake = WrappingSectors(str(tmp_path / "fake"), GiB, real_bytes, vanish=vanish)
    try:
        report = probe_capacity(fake)
    finally:
        fake.close()
    assert not report.ok
    assert report.real_bytes == real_bytes
    assert report.wrapped is not vanish


def test_probe_restores_what_it_overwrote_on_a_wrapping_card(tmp_path: Path) -> None:
    backing = tmp_path / "fake"
    backing.write_bytes(random.Random(1).randbytes(64 * MiB))
    before = _sha256(backing)
    fake = WrappingSectors(str(backing), GiB, 64 * MiB)
    try:
        report = probe_capacity(fake, restore=True)
    finally:
        fake.close()
    assert report.restored
    assert _sha256(backing) == before


def test_helper_refuses_a_wrapping_card_as_counterfeit(tmp_path: Path) -> None:
    policy = FakeCardPolicy(str(tmp_path / "fake"), 256 * MiB)
    card = Drive(path="/dev/sdz", size_bytes=32 * GiB, dev="8:240", serial="FAKE")
    with pytest.raises(CounterfeitCard) as caught:
        check_capacity(card, launcher=InProcessLauncher(policy))
    assert caught.value.real_bytes == 256 * MiB
    assert caught.value.advertised_bytes == 32 * GiB
    assert isinstance(caught.value, DriveRejected)


def test_honest_loop_device_passes_and_keeps_its_data(loops: LoopDevices) -> None:
    loop = loops.create(96 * MiB, fill=b"\x5a\xc3honest")
    before = hashlib.sha256(loop.read()).hexdigest()
    report = check_capacity(_confirmed(loop.path), launcher=InProcessLauncher(BlockDevicePolicy()))
    assert report.ok and report.real_bytes == 96 * MiB
    assert report.bad_positions == 0 and report.restored
    assert hashlib.sha256(loop.read()).hexdigest() == before


def test_loop_device_whose_medium_runs_out_is_counterfeit(loops: LoopDevices) -> None:
    """A loop device over a file on a tmpfs smaller than the device: writes past the space
    fail, as on a card that stores less than it claims."""
    loop = loops.create_on_tmpfs(256 * MiB, tmpfs_bytes=48 * MiB)
    stored = _fill_until_full(loop.backing)
    report = probe_drive(
        _confirmed(loop.path), launcher=InProcessLauncher(BlockDevicePolicy()), restore=False
    )
    assert not report.ok
    assert report.real_bytes == stored
    assert not report.wrapped


def _fill_until_full(backing: Path) -> int:
    """Write the backing file from the start until its filesystem is full: the bytes stored."""
    chunk = b"\xa5" * (64 * 1024)
    stored = 0
    with open(backing, "r+b", buffering=0) as f:
        try:
            while True:
                stored += f.write(chunk) or 0
        except OSError:
            pass
    return stored


def test_probe_goes_through_the_write_checks(loops: LoopDevices) -> None:
    loop = loops.create(32 * MiB)
    confirmed = _confirmed(loop.path)
    wrong = Drive(path=loop.path, size_bytes=confirmed.size_bytes * 2, dev=confirmed.dev)
    with pytest.raises(DriveRejected) as caught:
        probe_drive(wrong, launcher=InProcessLauncher(BlockDevicePolicy()))
    assert caught.value.problem is not ProblemCode.COUNTERFEIT


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b'{"v":2,"op":"probe","targets":[],"options":{"positions":64,"restore":true}}', "1 to"),
        (
            b'{"v":2,"op":"probe","targets":[{"path":"/dev/sdb","dev":"8:16","size":1,'
            b'"serial":""}],"options":{"positions":4,"restore":true}}',
            "positions",
        ),
        (
            b'{"v":2,"op":"probe","targets":[{"path":"sdb","dev":"8:16","size":1,"serial":""}],'
            b'"options":{"positions":64,"restore":true}}',
            "absolute",
        ),
    ],
)
def test_bad_probe_requests_are_refused(line: bytes, complaint: str) -> None:
    with pytest.raises(WriterProtocolError, match=complaint):
        decode_probe_request(line)
