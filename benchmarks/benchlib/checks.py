"""Correctness after a write: each partition on the target hashes like the same region of the image.

The partition table is read with `sfdisk --json` (not with flasher's own parser, so the check
does not share the code it checks). Extended-partition containers are skipped: their logical
partitions are hashed instead. Imports the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

READ_BYTES = 4 * 1024 * 1024
EXTENDED_TYPES = frozenset({"5", "f", "85"})
SECTOR_BYTES = 512


@dataclass(frozen=True)
class Region:
    name: str
    start_bytes: int
    size_bytes: int


def partition_regions(image: Path, *, skip: frozenset[str] = frozenset()) -> list[Region]:
    """The table area (before the first partition) and every data partition of `image`."""
    out = subprocess.run(
        ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
    )
    table = json.loads(out.stdout)["partitiontable"]
    unit = int(table.get("sectorsize", SECTOR_BYTES))
    regions: list[Region] = []
    parts = sorted(table["partitions"], key=lambda p: int(p["start"]))
    if parts:
        regions.append(Region("table", 0, int(parts[0]["start"]) * unit))
    for part in parts:
        if part["type"].lower() in EXTENDED_TYPES:
            continue
        name = part["node"].rsplit("/", 1)[-1]
        number = name[len(image.name) :] if name.startswith(image.name) else name
        label = f"p{number}"
        if label in skip:
            continue
        regions.append(Region(label, int(part["start"]) * unit, int(part["size"]) * unit))
    return regions


def digests(path: str | Path, regions: list[Region], size_bytes: int) -> dict[str, str]:
    """sha256 of each region and of the first `size_bytes` ("image"), in one sequential pass."""
    whole = hashlib.sha256()
    parts = {r.name: hashlib.sha256() for r in regions}
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos = 0
        while pos < size_bytes:
            data = os.pread(fd, min(READ_BYTES, size_bytes - pos), pos)
            if not data:
                raise OSError(f"{path} ends at byte {pos}, inside the image")
            view = memoryview(data)
            whole.update(view)
            end = pos + len(data)
            for r in regions:
                lo, hi = max(pos, r.start_bytes), min(end, r.start_bytes + r.size_bytes)
                if lo < hi:
                    parts[r.name].update(view[lo - pos : hi - pos])
            pos = end
    finally:
        os.close(fd)
    return {"image": whole.hexdigest(), **{name: h.hexdigest() for name, h in parts.items()}}


def compare_target(
    target: str, regions: list[Region], expected: dict[str, str], size_bytes: int
) -> dict[str, object]:
    """Hash `target`; `ok` when every partition region equals the image's.

    `whole_image_equal` also covers the bytes between partitions (EBRs, gaps): a sparse writer
    may leave those as the blank card had them, which is not an error when they are zero in the
    image and the card was blank.
    """
    actual = digests(target, regions, size_bytes)
    mismatched = sorted(r.name for r in regions if expected[r.name] != actual[r.name])
    return {
        "target": target,
        "ok": not mismatched,
        "mismatched": mismatched,
        "whole_image_equal": actual["image"] == expected["image"],
    }
