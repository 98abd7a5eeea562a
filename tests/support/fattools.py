"""FAT test helpers: volumes made by mkfs.vfat, read, written and checked with mtools and
fsck.fat; a missing tool skips the calling test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MiB = 1024 * 1024


EPOCH = 1_700_000_000  # 2023-11-14 22:13:20 UTC


# (image size, sectors per cluster) giving a cluster count legal for each FAT type
GEOMETRY = {12: (4 * MiB, 4), 16: (16 * MiB, 4), 32: (34 * MiB, 1)}


MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


BITS = [12, 16, 32]


def require_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def make_fat(
    tmp_path: Path, bits: int, *, label: str = "resin-boot", extra: tuple[str, ...] = ()
) -> Path:
    require_tools("mkfs.vfat", "fsck.fat", "mcopy", "mdir")
    size, spc = GEOMETRY[bits]
    path = tmp_path / f"fat{bits}.img"
    with path.open("wb") as f:
        f.truncate(size)
    subprocess.run(
        [
            "mkfs.vfat",
            "-F",
            str(bits),
            "-s",
            str(spc),
            "-n",
            label,
            "-i",
            "1234abcd",
            *extra,
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path


def fsck_clean(path: Path) -> None:
    result = subprocess.run(["fsck.fat", "-n", str(path)], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "differ" not in output, output


def mtools_write(path: Path, fat_path: str, data: bytes, tmp_path: Path) -> None:
    src = tmp_path / "mtools-src"
    src.write_bytes(data)
    subprocess.run(
        ["mcopy", "-n", "-o", "-i", str(path), str(src), f"::{fat_path}"],
        check=True,
        capture_output=True,
        env=MTOOLS_ENV,
    )


def mdir_names(path: Path, directory: str = "/") -> list[str]:
    out = subprocess.run(
        ["mdir", "-b", "-i", str(path), f"::{directory}"],
        check=True,
        capture_output=True,
        env=MTOOLS_ENV,
    ).stdout.decode()
    prefix = "::" + directory.rstrip("/") + "/"
    return [line[len(prefix) :].rstrip("/") for line in out.splitlines() if line]


def payload(size: int, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed) & 0xFF for i in range(size))
