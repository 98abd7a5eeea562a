"""Build realistic balenaOS-layout disk images for tests with the real tools (no root needed).

`build_image` lays out the partitions balenaOS uses (MBR: boot FAT, rootA, rootB, extended,
state, data; GPT: the same five, named), 4 MiB aligned. sfdisk writes the table, mkfs.vfat and
mtools build the boot FAT, mkfs.ext4 -d builds the ext4 partitions; each partition is built as a
file of its own and copied sparsely into the image. The result is deterministic (fixed ids and
UUIDs, SOURCE_DATE_EPOCH, E2FSPROGS_FAKE_TIME, fixed mtimes, seeded content), so the same options
give the same bytes. `compress` makes .gz/.xz/.zst/.bz2/.zip copies with the real compressors.
A missing tool skips the calling test with the tool's name.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.support.bootfiles import default_boot_files, text_bytes

MiB = 1024 * 1024
ALIGN_BYTES = 4 * MiB  # balenaOS aligns every partition to 4 MiB
SECTOR_BYTES = 512
EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z: every timestamp in a built image

GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
BOOT_LABELS = ("resin-boot", "balena-boot", "flash-boot", None)
# (boot size, sectors per cluster) giving a cluster count inside each FAT type's legal range
FAT_GEOMETRY = {12: (8 * MiB, 8), 16: (16 * MiB, 4), 32: (36 * MiB, 1)}
COMPRESSORS = {
    "gz": ["gzip", "-n", "-6", "-c"],
    "xz": ["xz", "-3", "-T1", "-c"],
    "zst": ["zstd", "-q", "-3", "--no-progress", "-c"],
    "bz2": ["bzip2", "-9", "-c"],
}


@dataclass(frozen=True)
class BuiltPartition:
    number: int
    label: str
    fs: str  # "fat12" | "fat16" | "fat32" | "ext4" | "extended"
    start_bytes: int
    size_bytes: int
    type_id: str  # MBR type in hex ("0c") or GPT type GUID (upper case)
    name: str  # GPT partition name; "" on MBR
    bootable: bool


@dataclass(frozen=True)
class BuiltImage:
    path: Path
    scheme: str
    size_bytes: int
    partitions: tuple[BuiltPartition, ...]
    boot_label: str | None
    fat_bits: int
    device_type: str
    os_version: str
    boot_files: Mapping[str, bytes]  # path inside the boot FAT -> content
    disk_id: str  # MBR disk signature (0x…) or GPT disk GUID
    fat_volume_id: int

    @property
    def boot(self) -> BuiltPartition:
        return self.partitions[0]

    @property
    def boot_offset(self) -> int:
        return self.boot.start_bytes

    @property
    def boot_size(self) -> int:
        return self.boot.size_bytes

    def partition(self, label: str) -> BuiltPartition:
        return next(p for p in self.partitions if p.label == label)


def require_tools(*tools: str) -> None:
    """Skip the calling test when a tool is not installed, naming it."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LC_ALL="C",
        TZ="UTC",
        SOURCE_DATE_EPOCH=str(EPOCH),
        E2FSPROGS_FAKE_TIME=str(EPOCH),
        MTOOLS_SKIP_CHECK="1",
    )
    return env


def _run(cmd: list[str], *, stdin_bytes: bytes | None = None, cwd: Path | None = None) -> None:
    result = subprocess.run(
        cmd, input=stdin_bytes, cwd=cwd, env=_env(), capture_output=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _fill(root: Path, rng: random.Random, total_bytes: int, prefix: str) -> None:
    """Deterministic files, half text-like (compressible) and half random, in a few folders."""
    done, index = 0, 0
    while done < total_bytes:
        size = min(total_bytes - done, rng.randint(4096, 512 * 1024))
        folder = root / rng.choice(["usr/lib", "usr/share", "var/lib", "opt"])
        folder.mkdir(parents=True, exist_ok=True)
        data = text_bytes(rng, size) if index % 2 else rng.randbytes(size)
        (folder / f"{prefix}{index:04d}.bin").write_bytes(data)
        done += size
        index += 1


def _pin_times(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (EPOCH, EPOCH))
    os.utime(root, (EPOCH, EPOCH))


def _build_fat(
    path: Path,
    *,
    size_bytes: int,
    fat_bits: int,
    sectors_per_cluster: int,
    label: str | None,
    volume_id: int,
    hidden_sectors: int,
    files: Mapping[str, bytes],
) -> None:
    with open(path, "wb") as f:
        f.truncate(size_bytes)
    # --invariant must precede -i, or it replaces the volume id with its own fixed one
    cmd = ["mkfs.vfat", "-F", str(fat_bits), "-s", str(sectors_per_cluster), "--invariant"]
    cmd += ["-i", f"{volume_id:08X}", "-h", str(hidden_sectors)]
    if label:
        cmd += ["-n", label]
    _run([*cmd, str(path)])
    with tempfile.TemporaryDirectory() as stage_dir:
        stage = Path(stage_dir)
        for rel, data in files.items():
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        _pin_times(stage)
        entries = sorted(str(p) for p in stage.iterdir())
        if entries:
            _run(["mcopy", "-s", "-m", "-Q", "-i", str(path), *entries, "::/"])


def _build_ext4(
    path: Path, *, size_bytes: int, label: str, source: Path, rng: random.Random
) -> None:
    with open(path, "wb") as f:
        f.truncate(size_bytes)
    _pin_times(source)
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-L",
            label,
            "-U",
            _uuid(rng),
            "-E",
            f"hash_seed={_uuid(rng)},root_owner=0:0",
            "-d",
            str(source),
            str(path),
        ]
    )
    # mke2fs -d copies each source file's ctime (userspace cannot set it) and its atime (which
    # mke2fs's own reading just bumped): pin both afterwards
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(EPOCH))
    entries = ["/", "/lost+found"] + [
        "/" + p.relative_to(source).as_posix() for p in sorted(source.rglob("*"))
    ]
    script = "".join(f'sif "{e}" {t} {stamp}\n' for e in entries for t in ("ctime", "atime"))
    _run(["debugfs", "-w", "-f", "-", str(path)], stdin_bytes=script.encode())


def _copy_sparse(src: Path, dst_fd: int, offset: int) -> None:
    """Copy only the data extents of `src` into the image at `offset` (holes stay holes)."""
    with open(src, "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # no data after pos
            end = os.lseek(fd, start, os.SEEK_HOLE)
            src_pos = start
            while src_pos < end:
                n = os.copy_file_range(fd, dst_fd, end - src_pos, src_pos, offset + src_pos)
                if n == 0:
                    raise RuntimeError(f"short copy from {src}")
                src_pos += n
            pos = end


def _layout(scheme: str, boot_bytes: int, sizes: Mapping[str, int]) -> list[tuple[str, int, int]]:
    """(role, start, size) for every partition, extended included, 4 MiB aligned."""
    pos = ALIGN_BYTES
    out: list[tuple[str, int, int]] = []
    for role, size in (("boot", boot_bytes), ("rootA", sizes["rootA"]), ("rootB", sizes["rootB"])):
        out.append((role, pos, size))
        pos += size
    if scheme == "mbr":
        ext_start = pos
        pos += ALIGN_BYTES  # room for the EBR ahead of each logical partition
        out.append(("state", pos, sizes["state"]))
        pos += sizes["state"] + ALIGN_BYTES
        out.append(("data", pos, sizes["data"]))
        pos += sizes["data"]
        out.insert(3, ("extended", ext_start, pos - ext_start))
    else:
        for role in ("state", "data"):
            out.append((role, pos, sizes[role]))
            pos += sizes[role]
    return out


def build_image(
    directory: Path,
    *,
    scheme: str = "mbr",
    boot_label: str | None = "resin-boot",
    fat_bits: int = 16,
    device_type: str = "raspberrypi4-64",
    os_version: str = "6.5.50+rev8",
    boot_files: Mapping[str, bytes | None] | None = None,
    root_fill_bytes: int = 3 * MiB,
    data_fill_bytes: int = 1 * MiB,
    boot_size_bytes: int | None = None,
    flasher: bool = False,
    seed: int = 1,
    name: str | None = None,
) -> BuiltImage:
    """Build a balenaOS-layout image in `directory`; `boot_files` adds, replaces (bytes) or
    removes (None) files of the default boot partition content."""
    if scheme not in ("mbr", "gpt"):
        raise ValueError(f"scheme must be mbr or gpt, not {scheme!r}")
    if fat_bits not in FAT_GEOMETRY:
        raise ValueError(f"fat_bits must be 12, 16 or 32, not {fat_bits}")
    if boot_label not in BOOT_LABELS:
        raise ValueError(f"boot_label must be one of {BOOT_LABELS}, not {boot_label!r}")
    require_tools("sfdisk", "mkfs.vfat", "mcopy", "mkfs.ext4", "debugfs")
    rng = random.Random(seed)
    default_boot, spc = FAT_GEOMETRY[fat_bits]
    boot_bytes = boot_size_bytes or default_boot
    sizes = {"rootA": 20 * MiB, "rootB": 12 * MiB, "state": 8 * MiB, "data": 16 * MiB}
    prefix = {"balena-boot": "balena", "flash-boot": "flash"}.get(boot_label or "", "resin")
    labels = {
        "boot": boot_label or "",
        "rootA": f"{prefix}-rootA",
        "rootB": f"{prefix}-rootB",
        "state": "resin-state",
        "data": "resin-data",
    }
    files = default_boot_files(device_type, os_version, flasher=flasher)
    for rel, data in (boot_files or {}).items():
        if data is None:
            files.pop(rel, None)
        else:
            files[rel] = data
    layout = _layout(scheme, boot_bytes, sizes)
    end = max(start + size for _, start, size in layout)
    total = end + (ALIGN_BYTES if scheme == "gpt" else 0)  # room for the backup GPT
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"balena-{scheme}-fat{fat_bits}-{seed}.img")
    disk_id = _uuid(rng).upper() if scheme == "gpt" else f"0x{rng.getrandbits(32):08x}"
    volume_id = rng.getrandbits(32)

    table = "gpt" if scheme == "gpt" else "dos"
    lines = [f"label: {table}", f"label-id: {disk_id}", "unit: sectors"]
    built: list[BuiltPartition] = []
    fs_name = f"fat{fat_bits}"
    for number, (role, start, size) in enumerate(layout, start=1):
        sector, count = start // SECTOR_BYTES, size // SECTOR_BYTES
        fs = fs_name if role == "boot" else ("extended" if role == "extended" else "ext4")
        if scheme == "gpt":
            type_id = GPT_ESP if role == "boot" else GPT_LINUX
            part_name = labels[role] or "boot"
            lines.append(
                f"start={sector}, size={count}, type={type_id}, uuid={_uuid(rng).upper()}, "
                f'name="{part_name}"'
            )
        else:
            type_id = {"boot": "0c", "extended": "0f"}.get(role, "83")
            part_name = ""
            lines.append(
                f"start={sector}, size={count}, type={type_id.lstrip('0')}"
                + (", bootable" if role == "boot" else "")
            )
        built.append(
            BuiltPartition(
                number,
                labels.get(role, ""),
                fs,
                start,
                size,
                type_id,
                part_name,
                role == "boot" and scheme == "mbr",
            )
        )

    with tempfile.TemporaryDirectory(dir=directory) as work_dir:
        work = Path(work_dir)
        tmp_image = work / "image"
        with open(tmp_image, "wb") as f:
            f.truncate(total)
        _run(
            ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(tmp_image)],
            stdin_bytes="\n".join(lines).encode() + b"\n",
        )
        fd = os.open(tmp_image, os.O_WRONLY)
        try:
            for part, (role, start, size) in zip(built, layout, strict=True):
                part_file = work / f"p{part.number}"
                if role == "boot":
                    _build_fat(
                        part_file,
                        size_bytes=size,
                        fat_bits=fat_bits,
                        sectors_per_cluster=spc,
                        label=boot_label,
                        volume_id=volume_id,
                        hidden_sectors=start // SECTOR_BYTES,
                        files=files,
                    )
                elif role == "extended":
                    continue
                else:
                    tree = work / f"tree-{role}"
                    tree.mkdir()
                    if role == "rootA":
                        (tree / "etc").mkdir()
                        (tree / "etc/os-release").write_bytes(files.get("os-release", b""))
                        _fill(tree, rng, root_fill_bytes, "root")
                    elif role == "data":
                        _fill(tree, rng, data_fill_bytes, "layer")
                    elif role == "state":
                        (tree / "root-overlay").mkdir()
                        (tree / "machine-id").write_bytes(b"%032x\n" % rng.getrandbits(128))
                    _build_ext4(part_file, size_bytes=size, label=part.label, source=tree, rng=rng)
                _copy_sparse(part_file, fd, start)
                part_file.unlink()
        finally:
            os.close(fd)
        os.utime(tmp_image, (EPOCH, EPOCH))  # zip records it
        os.replace(tmp_image, path)
    return BuiltImage(
        path=path,
        scheme=scheme,
        size_bytes=total,
        partitions=tuple(built),
        boot_label=boot_label,
        fat_bits=fat_bits,
        device_type=device_type,
        os_version=os_version,
        boot_files=dict(files),
        disk_id=disk_id,
        fat_volume_id=volume_id,
    )


def compress(path: Path, kind: str, *, member_name: str = "payload.bin") -> Path:
    """Compress `path` with the real tool into `<path>.<kind>`; a zip holds one member named
    `member_name` (not the image's name, so readers must find it by content)."""
    out = path.with_name(f"{path.name}.{kind}")
    if kind == "zip":
        require_tools("zip")
        with tempfile.TemporaryDirectory(dir=path.parent) as stage_dir:
            # zip follows the symlink: the member gets the image's bytes and mtime
            (Path(stage_dir) / member_name).symlink_to(path.resolve())
            tmp = Path(stage_dir) / "out.zip"
            _run(["zip", "-q", "-X", "-6", str(tmp), member_name], cwd=Path(stage_dir))
            os.replace(tmp, out)
        return out
    if kind not in COMPRESSORS:
        raise ValueError(f"unknown compression {kind!r}")
    cmd = COMPRESSORS[kind]
    require_tools(cmd[0])
    tmp = out.with_name(out.name + ".tmp")
    # the input is named (not piped) so zstd records the content size, as `zstd file.img` does
    with open(tmp, "wb") as dst:
        result = subprocess.run(
            [*cmd, str(path)], stdout=dst, stderr=subprocess.PIPE, env=_env(), check=False
        )
    if result.returncode != 0:
        tmp.unlink()
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr.decode(errors='replace')}")
    os.replace(tmp, out)
    return out


def copy_image(image: BuiltImage, directory: Path) -> BuiltImage:
    """A writable, sparse copy of a built image (the session-cached ones are read-only)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / image.path.name
    with open(target, "wb") as f:
        f.truncate(image.size_bytes)
        _copy_sparse(image.path, f.fileno(), 0)
    return replace(image, path=target)
