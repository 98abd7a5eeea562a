"""Checks on configured images with the real tools: `fsck.fat -n` on the boot partition, files read
back with `mtype -i image@@offset`, and hashes of the regions a configuration must not touch.
A missing tool skips the calling test, naming it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from tests.support.filesystems import ENV, extract, require

HASH_CHUNK_BYTES = 4 * 1024 * 1024


def fsck_boot(image: Path, start_bytes: int, size_bytes: int, scratch: Path) -> str:
    """Run `fsck.fat -n` on a copy of the partition; fail with its output unless it is clean."""
    require("fsck.fat")
    copy = extract(image, start_bytes, size_bytes, scratch / f"boot-{start_bytes}.fat")
    result = subprocess.run(
        ["fsck.fat", "-n", str(copy)], capture_output=True, text=True, env=ENV, check=False
    )
    copy.unlink()
    assert result.returncode == 0, f"fsck.fat -n failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def mtype(image: Path, start_bytes: int, path: str) -> bytes:
    """The bytes of `path` in the FAT filesystem at `start_bytes`, as mtools reads them."""
    require("mtype")
    result = subprocess.run(
        ["mtype", "-i", f"{image}@@{start_bytes}", f"::{path}"],
        capture_output=True,
        env=ENV,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def mdir_names(image: Path, start_bytes: int, path: str) -> list[str]:
    """Long names in a FAT directory, as `mdir -b` lists them."""
    require("mdir")
    result = subprocess.run(
        ["mdir", "-b", "-i", f"{image}@@{start_bytes}", f"::{path}"],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return sorted(os.path.basename(line.rstrip("/")) for line in result.stdout.split("\n") if line)


def region_sha256(image: Path, start_bytes: int, end_bytes: int) -> str:
    digest = hashlib.sha256()
    with open(image, "rb") as f:
        f.seek(start_bytes)
        remaining = end_bytes - start_bytes
        while remaining > 0:
            chunk = f.read(min(HASH_CHUNK_BYTES, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def outside_sha256(image: Path, start_bytes: int, end_bytes: int) -> tuple[str, str, int]:
    """Hashes of everything before and after [start, end), and the file size."""
    size = image.stat().st_size
    return region_sha256(image, 0, start_bytes), region_sha256(image, end_bytes, size), size


def file_sha256(image: Path) -> str:
    return region_sha256(image, 0, image.stat().st_size)
