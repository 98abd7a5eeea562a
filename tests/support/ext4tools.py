"""Helpers for the ext2/3/4 reader tests: a filesystem made by mkfs.ext4, and byte patches to
it (no pytest fixtures here)."""

from __future__ import annotations

from pathlib import Path

from tests.support.filesystems import MiB, mkfs_ext4

SB = 1024  # superblock offset


def build(
    tmp_path: Path, options: tuple[str, ...], size: int = 64 * MiB, tree: Path | None = None
) -> Path:
    path = tmp_path / "fs.img"
    mkfs_ext4(path, size, options, tree)
    return path


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_u32(path: Path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return int.from_bytes(f.read(4), "little")


def read_bytes(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)
