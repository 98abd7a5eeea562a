"""Early writeback: an unpacked image reaches the disk while it is decoded, not all at the end."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from flasher.image import sources
from flasher.image.byteio import start_writeback
from flasher.image.sources import WRITEBACK_BYTES, open_source

MiB = 1024 * 1024


def test_writeback_starts_on_a_file_with_dirty_pages(tmp_path: Path) -> None:
    path = tmp_path / "dirty.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"\x5a" * MiB, 0)
        assert start_writeback(fd, 0, MiB) is True
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\x5a" * MiB


def test_writeback_on_a_bad_descriptor_says_it_did_not_start(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "closed.bin", os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    assert start_writeback(fd, 0, MiB) is False


def test_unpacking_hands_each_decoded_stretch_to_writeback_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 2 * WRITEBACK_BYTES + 8 * MiB
    packed = tmp_path / "image.gz"
    with gzip.open(packed, "wb", compresslevel=1) as out:
        block = bytes(range(256)) * 4096  # 1 MiB, no zero block: every byte is written
        for _ in range(size // MiB):
            out.write(block)
    calls: list[tuple[int, int]] = []

    def record(fd: int, offset: int, length: int) -> bool:
        calls.append((offset, length))
        return start_writeback(fd, offset, length)

    monkeypatch.setattr(sources, "start_writeback", record)
    assert open_source(packed).unpack_to(tmp_path / "image.raw") == size
    assert [offset for offset, _length in calls] == [
        sum(length for _offset, length in calls[:i]) for i in range(len(calls))
    ]
    assert all(length >= WRITEBACK_BYTES for _offset, length in calls)
    assert size - sum(length for _offset, length in calls) < WRITEBACK_BYTES
