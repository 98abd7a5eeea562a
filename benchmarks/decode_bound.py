#!/usr/bin/env python3
"""Decode one image file to nowhere: the decompression bound a flash of that file cannot beat.

    decode_bound.py lib KIND FILE       the library alone (isal, zstandard, lzma, plain reads)
    decode_bound.py flasher FILE        flasher's own ImageSource.open_stream()

Prints the decoded byte count. Run by flash_bench.py as one measured row per format; usable
alone. Imports the standard library, isal, zstandard and (for `flasher`) the flasher package.
"""

from __future__ import annotations

import argparse
import lzma
import os
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import zstandard
from isal import isal_zlib

OUT_BYTES = 4 * 1024 * 1024
IN_BYTES = 1024 * 1024
ZIP_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


def _drain(readinto: Callable[[memoryview], int]) -> int:
    buf = memoryview(bytearray(OUT_BYTES))
    total = 0
    while n := readinto(buf):
        total += n
    return total


def decode_raw(path: Path) -> int:
    with open(path, "rb", buffering=0) as f:
        return _drain(f.readinto)


def decode_gz(path: Path) -> int:
    with open(path, "rb") as f:
        return _inflate_bounded(f.read, 31)


def _inflate_bounded(data_in: Callable[[int], bytes], wbits: int) -> int:
    inflater = isal_zlib.decompressobj(wbits)
    total = 0
    pending = b""
    while True:
        if not pending:
            pending = data_in(IN_BYTES)
            if not pending:
                return total
        out = inflater.decompress(pending, OUT_BYTES)
        total += len(out)
        pending = inflater.unconsumed_tail
        if inflater.eof:
            return total


def decode_zip(path: Path) -> int:
    """Raw deflate of the largest member, found through the central directory."""
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(member.header_offset)
        fields = ZIP_LOCAL_HEADER.unpack(f.read(ZIP_LOCAL_HEADER.size))
        name_len, extra_len = fields[-2], fields[-1]
        f.seek(name_len + extra_len, os.SEEK_CUR)
        left = member.compress_size

        def data_in(size: int) -> bytes:
            nonlocal left
            data = f.read(min(size, left))
            left -= len(data)
            return data

        return _inflate_bounded(data_in, -15)


def decode_xz(path: Path) -> int:
    total = 0
    with open(path, "rb") as f:
        decoder = lzma.LZMADecompressor()
        while not decoder.eof:
            data = f.read(IN_BYTES) if decoder.needs_input else b""
            if decoder.needs_input and not data:
                raise SystemExit(f"{path}: the xz stream is truncated")
            total += len(decoder.decompress(data, OUT_BYTES))
    return total


def decode_zst(path: Path) -> int:
    with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
        return _drain(reader.readinto)


LIBRARY: dict[str, Callable[[Path], int]] = {
    "raw": decode_raw,
    "gz": decode_gz,
    "zip": decode_zip,
    "xz": decode_xz,
    "zst": decode_zst,
}


def decode_flasher(path: Path) -> int:
    from flasher.heap import tune_for_streaming
    from flasher.image.sources import open_source

    tune_for_streaming()  # as the flasher command does before it decodes

    with open_source(path).open_stream() as stream:
        readinto: Callable[[memoryview], int] = getattr(stream, "readinto")  # noqa: B009
        return _drain(readinto)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="via", required=True)
    lib = sub.add_parser("lib", help="the decompression library alone")
    lib.add_argument("kind", choices=sorted(LIBRARY))
    lib.add_argument("file", type=Path)
    own = sub.add_parser("flasher", help="flasher's ImageSource.open_stream()")
    own.add_argument("file", type=Path)
    args = parser.parse_args()
    total = LIBRARY[args.kind](args.file) if args.via == "lib" else decode_flasher(args.file)
    print(total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
