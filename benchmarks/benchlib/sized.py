"""Sparse balenaOS-layout images of a chosen size, for timing what should not depend on size.

The layout comes from the test suite's builder (tests/support/images.py: boot FAT16 first, then
rootA, rootB, extended with state and data); the data partition is then grown to fill the
requested size and given a fresh, empty ext4, so a 4 GiB image holds a few MiB of data.
Imports the standard library and the test builder.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.images import BuiltImage, build_image

MiB = 1024 * 1024
COPY_BYTES = 4 * MiB


def _copy_extents(src: Path, out_fd: int, offset: int) -> None:
    """Copy `src`'s data extents to `out_fd` at `offset` + their position; skip the holes."""
    size = src.stat().st_size
    with open(src, "rb") as fin:
        in_fd = fin.fileno()
        pos = 0
        while pos < size:
            try:
                data_at = os.lseek(in_fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing but a hole after pos
                return
            hole_at = os.lseek(in_fd, data_at, os.SEEK_HOLE)
            while data_at < hole_at:
                chunk = os.pread(in_fd, min(COPY_BYTES, hole_at - data_at), data_at)
                os.pwrite(out_fd, chunk, offset + data_at)
                data_at += len(chunk)
            pos = hole_at


def copy_sparse(src: Path, dest: Path) -> None:
    """A sparse copy: big, mostly empty images copy in a blink."""
    with open(dest, "wb") as fout:
        fout.truncate(src.stat().st_size)
        _copy_extents(src, fout.fileno(), 0)


def _grow_partition(image: Path, number: int) -> None:
    subprocess.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "-N", str(number), str(image)],
        input=", +\n",
        text=True,
        check=True,
        capture_output=True,
    )


def _start_bytes(image: Path, number: int) -> int:
    out = subprocess.run(
        ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
    ).stdout
    table = json.loads(out)["partitiontable"]
    node = f"{image}{number}"
    for part in table["partitions"]:
        if part["node"] == node:
            return int(part["start"]) * int(table.get("sectorsize", 512))
    raise ValueError(f"{image} has no partition {number}")


def base_image(folder: Path) -> BuiltImage:
    return build_image(folder, name="base.img")


def sized_image(base: BuiltImage, dest: Path, size_bytes: int) -> Path:
    """`base` grown to `size_bytes`: the extended and data partitions reach the end."""
    if size_bytes < base.size_bytes:
        raise ValueError(f"{size_bytes} bytes is smaller than the {base.size_bytes}-byte base")
    copy_sparse(base.path, dest)
    os.truncate(dest, size_bytes)
    _grow_partition(dest, 4)
    _grow_partition(dest, 6)
    data_start = _start_bytes(dest, 6)
    data_bytes = size_bytes - data_start
    fs = dest.with_name(dest.name + ".data-fs")
    try:
        with open(fs, "wb") as f:
            f.truncate(data_bytes)
        subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "resin-data",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                str(fs),
            ],
            check=True,
        )
        subprocess.run(
            [
                "fallocate",
                "--punch-hole",
                "--offset",
                str(data_start),
                "--length",
                str(data_bytes),
                str(dest),
            ],
            check=True,
        )
        with open(dest, "r+b") as fout:
            _copy_extents(fs, fout.fileno(), data_start)
    finally:
        fs.unlink(missing_ok=True)
    return dest
