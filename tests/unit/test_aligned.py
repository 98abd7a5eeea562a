"""flasher.writer.aligned: bytearrays whose data start on a page boundary."""

from __future__ import annotations

import ctypes
import mmap

import pytest

from flasher.writer.aligned import aligned_bytearray


def _address(buf: bytearray) -> int:
    view = (ctypes.c_char * len(buf)).from_buffer(buf)
    address = ctypes.addressof(view)
    del view
    return address


@pytest.mark.parametrize("size", [4096, 5000, 1 << 20, 4 << 20])
def test_the_data_start_on_a_page_and_hold_size_zero_bytes(size: int) -> None:
    buf = aligned_bytearray(size)
    assert len(buf) == size
    assert _address(buf) % mmap.PAGESIZE == 0
    assert buf == bytes(size)


@pytest.mark.parametrize("size", [0, 1, 100])
def test_a_buffer_under_a_page_still_holds_size_zero_bytes(size: int) -> None:
    assert aligned_bytearray(size) == bytes(size)


def test_an_aligned_bytearray_is_an_ordinary_one_to_write_and_compare() -> None:
    buf = aligned_bytearray(8192)
    with memoryview(buf) as view:
        view[100:104] = b"abcd"
    assert buf[100:104] == b"abcd"
    assert buf != bytes(8192)
    buf.extend(b"!")  # no export is left behind: it may still grow
    assert len(buf) == 8193
