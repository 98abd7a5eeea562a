"""Multi-block .xz test files: a small disk-like image, its .xz made by the xz tool, its plan."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from flasher.image import xzparallel

MiB = 1024 * 1024
BLOCK_BYTES = 256 * 1024
CHECK_BYTES = {"none": 0, "crc32": 4, "crc64": 8, "sha256": 32}


def write_disk(path: Path) -> Path:
    """3 MiB like a disk: an MBR signature, random, repetitive text and zero regions."""
    rng = random.Random(11)
    data = bytearray(3 * MiB + 12345)
    data[510:512] = b"\x55\xaa"
    data[MiB : MiB + 700_000] = rng.randbytes(700_000)
    data[2 * MiB : 3 * MiB] = (b"resin-rootA supervisor\n" * 50000)[:MiB]
    path.write_bytes(bytes(data))
    return path


def make_xz(folder: Path, source: Path, *args: str) -> Path:
    """`source` compressed by `xz -3 ARGS` into `folder` (made once per set of arguments)."""
    out = folder / f"{source.stem}{''.join(args).replace('=', '_')}.img.xz"
    if not out.exists():
        with open(out, "wb") as f:
            subprocess.run(["xz", "-c", "-3", *args, str(source)], stdout=f, check=True)
    return out


def multi_block_args(check: str = "crc64") -> tuple[str, ...]:
    """xz's arguments for a file of `BLOCK_BYTES` blocks with `check`."""
    return "-T2", f"--block-size={BLOCK_BYTES}", f"--check={check}"


def plan_of(path: Path) -> xzparallel.XzPlan:
    data = path.read_bytes()
    plan = xzparallel.plan_xz(lambda n, at: data[at : at + n], len(data))
    assert plan is not None
    return plan


def block_offsets(plan: xzparallel.XzPlan) -> list[tuple[int, xzparallel.XzBlock]]:
    """(file offset, block) of the first stream's blocks."""
    stream = plan.streams[0]
    offset, out = 12, []
    for block in stream.blocks:
        out.append((offset, block))
        offset += block.stored_bytes
    return out
