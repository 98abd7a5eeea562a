"""Small real filesystems and disks for the allocation-map tests, and the tools that check them.

Filesystems are made by mkfs.ext4 -d / mkfs.vfat + mcopy from a seeded file tree, disks by sfdisk
with the filesystems copied in sparsely (holes stay holes, so bmaptool sees what a published
image would show). Reading back goes through debugfs rdump / mcopy -s, checking through
e2fsck -fn / fsck.fat -n. A missing tool skips the calling test, naming it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

MiB = 1024 * 1024
SECTOR_BYTES = 512
COPY_CHUNK_BYTES = 1 * MiB
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B9B9E5EB99"
ENV = {**os.environ, "LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1", "E2FSPROGS_FAKE_TIME": "1700000000"}


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def run(
    cmd: Sequence[str | os.PathLike[str]], *, stdin: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [os.fspath(c) for c in cmd], input=stdin, env=ENV, capture_output=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cmd[0]} failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
        )
    return result


def make_tree(root: Path, *, seed: int, total_bytes: int, fat_names: bool = False) -> Path:
    """A seeded tree: nested folders, empty and small and multi-megabyte pseudo-random files."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "empty.txt").write_bytes(b"")
    folders = ["", "etc", "usr/lib", "usr/share/doc", "var/lib/data"]
    done, index = 0, 0
    while done < total_bytes:
        size = min(total_bytes - done, rng.choice([17, 900, 5000, 70_000, 400_000, 1_300_000]))
        folder = root / rng.choice(folders)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"F{index:03d}.BIN" if fat_names else f"file-{index:03d}.bin"
        (folder / name).write_bytes(rng.randbytes(size))
        done += size
        index += 1
    return root


def tree_contents(root: Path, *, ignore: Sequence[str] = ()) -> dict[str, bytes | None]:
    """Every path under `root` (relative, "/"-separated): file bytes, or None for a folder."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if (rel / d).as_posix() not in ignore]
        for d in dirnames:
            out[(rel / d).as_posix()] = None
        for f in filenames:
            out[(rel / f).as_posix()] = (Path(dirpath) / f).read_bytes()
    return out


def mkfs_ext4(path: Path, size_bytes: int, options: Sequence[str], tree: Path | None) -> None:
    require("mkfs.ext4")
    with open(path, "wb") as f:
        f.truncate(size_bytes)
    populate = ["-d", tree] if tree is not None else []
    run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", *options, *populate, path])


def mkfs_fat(path: Path, size_bytes: int, fat_bits: int, tree: Path | None) -> None:
    require("mkfs.vfat", "mcopy")
    with open(path, "wb") as f:
        f.truncate(size_bytes)
    run(["mkfs.vfat", "-F", str(fat_bits), "-n", f"FAT{fat_bits}", path])
    if tree is not None:
        entries = sorted(tree.iterdir())
        run(["mcopy", "-s", "-i", path, *entries, "::/"])


@dataclass(frozen=True)
class PartSpec:
    kind: str  # "ext4", "fat12", "fat16", "fat32", "raw" (random bytes), "extended"
    size_bytes: int
    options: tuple[str, ...] = ()
    tree_bytes: int = 0  # 0 = empty filesystem


@dataclass(frozen=True)
class DiskPart:
    number: int
    kind: str
    start_bytes: int
    size_bytes: int
    tree: Path | None


def build_disk(
    directory: Path,
    scheme: str,
    specs: Sequence[PartSpec],
    *,
    first_offset: int = 1 * MiB,
    gap_bytes: int = 0,
    seed: int = 1,
) -> tuple[Path, list[DiskPart]]:
    """A disk image with `specs` laid out in order (MBR: specs after an "extended" one become
    its logical partitions). Partitions start `gap_bytes` apart, aligned to 1 MiB."""
    require("sfdisk")
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    parts: list[DiskPart] = []
    lines = [f"label: {'gpt' if scheme == 'gpt' else 'dos'}", "unit: sectors"]
    position = first_offset
    number = 0
    logical = False
    for index, spec in enumerate(specs):
        if spec.kind == "extended":
            number += 1
            rest = sum(s.size_bytes + gap_bytes + MiB for s in specs[index + 1 :])
            lines.append(f"start={position // SECTOR_BYTES}, size={rest // SECTOR_BYTES}, type=f")
            parts.append(DiskPart(number, "extended", position, rest, None))
            logical = True
            number = 4
            position += MiB  # room for the first EBR, as fdisk leaves it
            continue
        number += 1
        tree = None
        if spec.tree_bytes:
            tree = make_tree(
                directory / f"tree{number}",
                seed=seed * 100 + number,
                total_bytes=spec.tree_bytes,
                fat_names=spec.kind.startswith("fat"),
            )
        if scheme == "gpt":
            kind = GPT_BASIC_DATA if spec.kind.startswith("fat") else GPT_LINUX
        else:
            kind = {"fat12": "1", "fat16": "e", "fat32": "c"}.get(spec.kind, "83")
        lines.append(
            f"start={position // SECTOR_BYTES}, size={spec.size_bytes // SECTOR_BYTES}, type={kind}"
        )
        parts.append(DiskPart(number, spec.kind, position, spec.size_bytes, tree))
        position += spec.size_bytes + gap_bytes
        if logical:
            position += MiB  # the next EBR sits in the gap before each logical partition
    disk = directory / f"disk-{scheme}.img"
    with open(disk, "wb") as f:
        f.truncate(position + 2 * MiB)
    run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", disk],
        stdin="\n".join(lines).encode() + b"\n",
    )
    for part, spec in zip(
        [p for p in parts if p.kind != "extended"],
        [s for s in specs if s.kind != "extended"],
        strict=True,
    ):
        fs_file = directory / f"p{part.number}.fs"
        if spec.kind == "ext4":
            mkfs_ext4(fs_file, spec.size_bytes, spec.options, part.tree)
        elif spec.kind.startswith("fat"):
            mkfs_fat(fs_file, spec.size_bytes, int(spec.kind[3:]), part.tree)
        else:
            fs_file.write_bytes(rng.randbytes(spec.size_bytes))
        copy_sparse(fs_file, disk, part.start_bytes)
        fs_file.unlink()
    return disk, parts


def copy_sparse(src: Path, dst: Path, offset: int) -> None:
    """Copy `src` into `dst` at `offset`, leaving all-zero chunks as holes."""
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        position = 0
        while chunk := fin.read(COPY_CHUNK_BYTES):
            if chunk.count(0) != len(chunk):
                fout.seek(offset + position)
                fout.write(chunk)
            position += len(chunk)


def patch_bytes(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def extract(image: Path, start: int, size: int, dst: Path) -> Path:
    with open(image, "rb") as fin, open(dst, "wb") as fout:
        fin.seek(start)
        remaining = size
        while remaining:
            chunk = fin.read(min(COPY_CHUNK_BYTES, remaining))
            if not chunk:
                raise AssertionError(f"{image} ends before byte {start + size}")
            fout.write(chunk)
            remaining -= len(chunk)
    return dst


def garbage_copy(src: Path, dst: Path, unmapped: Sequence[tuple[int, int]], *, seed: int) -> None:
    """A copy of `src` with every byte of `unmapped` replaced by pseudo-random garbage."""
    rng = random.Random(seed)
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        for offset, length in unmapped:
            f.seek(offset)
            while length:
                n = min(length, 8 * MiB)
                f.write(rng.randbytes(n))
                length -= n


def ext4_readback(
    fs_image: Path, out: Path
) -> tuple[subprocess.CompletedProcess[bytes], dict[str, bytes | None]]:
    """`e2fsck -fn` of the filesystem, and its whole tree as dumped by debugfs."""
    require("e2fsck", "debugfs")
    fsck = run(["e2fsck", "-fn", fs_image], check=False)
    out.mkdir(parents=True)
    run(["debugfs", "-R", f"rdump / {out}", fs_image])
    return fsck, tree_contents(out, ignore=("lost+found",))


def fat_readback(
    fs_image: Path, out: Path
) -> tuple[subprocess.CompletedProcess[bytes], dict[str, bytes | None]]:
    """`fsck.fat -n` of the filesystem, and its whole tree as copied out by mcopy."""
    require("fsck.fat", "mcopy")
    fsck = run(["fsck.fat", "-n", fs_image], check=False)
    out.mkdir(parents=True)
    listing = run(["mdir", "-b", "-i", fs_image, "::/"]).stdout.split()
    if listing:
        run(["mcopy", "-s", "-n", "-i", fs_image, "::/*", out])
    return fsck, tree_contents(out)


def partition_readback(
    image: Path, number: int, start: int, size: int, *, ext4: bool, work: Path
) -> tuple[int, dict[str, bytes | None]]:
    """fsck's exit code and the file tree of partition `number` of `image` (ext4, else FAT),
    through a copy of it in `work`."""
    work.mkdir(parents=True, exist_ok=True)
    fs_file = extract(image, start, size, work / f"p{number}.fs")
    reader = ext4_readback if ext4 else fat_readback
    fsck, tree = reader(fs_file, work / f"p{number}")
    fs_file.unlink()
    return fsck.returncode, tree


def expected_tree(tree: Path | None) -> dict[str, bytes | None]:
    return tree_contents(tree) if tree is not None else {}


def sfdisk_dump(image: Path) -> str:
    """The partition table as sfdisk prints it, with the file name taken out."""
    text = run(["sfdisk", "-d", image]).stdout.decode()
    return text.replace(str(image), "IMAGE")


def nonzero_blocks(image: Path, block_bytes: int) -> list[tuple[int, int]]:
    """Merged byte ranges of every `block_bytes` block of `image` holding a non-zero byte."""
    out: list[tuple[int, int]] = []
    with open(image, "rb") as f:
        offset = 0
        while chunk := f.read(block_bytes * 256):
            for i in range(0, len(chunk), block_bytes):
                block = chunk[i : i + block_bytes]
                if block.count(0) != len(block):
                    start = offset + i
                    if out and out[-1][0] + out[-1][1] == start:
                        out[-1] = (out[-1][0], out[-1][1] + len(block))
                    else:
                        out.append((start, len(block)))
            offset += len(chunk)
    return out
