"""Image sources: sniffing by content, streaming decompression, end checks, errors, unpacking."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import shutil
import struct
import subprocess
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.errors import Cancelled, ImageError
from flasher.events import CancelToken, Event, Phase, Progress
from flasher.image import decoders
from flasher.image.sources import SourceKind, open_source
from tests.conftest import ImageFactory
from tests.support.images import require_tools

KINDS = ["gz", "xz", "zst", "bz2", "zip"]
Compress = Callable[[Path, str], Path]
MiB = 1024 * 1024


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stream_bytes(path: Path, read_bytes: int = MiB) -> bytes:
    with open_source(path).open_stream() as stream:
        parts = []
        while chunk := stream.read(read_bytes):
            parts.append(chunk)
    return b"".join(parts)


def _problem(path: Path) -> str:
    """The problem word of the ImageError raised by opening and fully reading `path`."""
    with pytest.raises(ImageError) as caught:
        _stream_bytes(path)
    assert str(path) in str(caught.value)
    return caught.value.problem


@pytest.fixture(scope="session")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 MiB that look like a disk: MBR signature, random, text-like and zero regions."""
    rng = random.Random(7)
    data = bytearray(6 * MiB)
    data[446:462] = bytes([0x80, 0, 0, 0, 0x0C, 0, 0, 0]) + struct.pack("<II", 2048, 8192)
    data[510:512] = b"\x55\xaa"
    data[MiB : 2 * MiB] = rng.randbytes(MiB)
    data[3 * MiB : 4 * MiB] = (b"balena engine supervisor\n" * 50000)[:MiB]
    path = tmp_path_factory.mktemp("small") / "disk.img"
    path.write_bytes(bytes(data))
    path.chmod(0o444)
    return path


@pytest.mark.parametrize("kind", ["raw", *KINDS])
def test_every_format_streams_the_identical_bytes(
    mbr_image: ImageFactory, compressed_image: Compress, kind: str
) -> None:
    image = mbr_image().path
    path = image if kind == "raw" else compressed_image(image, kind)
    assert _sha256(_stream_bytes(path)) == _sha256(image.read_bytes())


@pytest.mark.parametrize("kind", ["raw", *KINDS])
def test_unpack_to_writes_an_identical_sparse_file(
    mbr_image: ImageFactory, compressed_image: Compress, kind: str, tmp_path: Path
) -> None:
    image = mbr_image()
    path = image.path if kind == "raw" else compressed_image(image.path, kind)
    dest = tmp_path / "raw.img"
    size = open_source(path).unpack_to(dest)
    assert size == image.size_bytes == dest.stat().st_size
    assert _sha256(dest.read_bytes()) == _sha256(image.path.read_bytes())
    assert dest.stat().st_blocks * 512 < image.size_bytes // 4  # zero blocks became holes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.img"]


@pytest.mark.parametrize("kind", KINDS)
def test_kind_comes_from_the_content_not_the_name(
    small_disk: Path, compressed_image: Compress, kind: str, tmp_path: Path
) -> None:
    misnamed = tmp_path / "image.img"
    shutil.copyfile(compressed_image(small_disk, kind), misnamed)
    assert open_source(misnamed).kind == SourceKind(kind)


def test_a_raw_image_named_like_an_archive_is_raw(small_disk: Path, tmp_path: Path) -> None:
    misnamed = tmp_path / "image.img.zip"
    shutil.copyfile(small_disk, misnamed)
    assert open_source(misnamed).kind is SourceKind.RAW


@pytest.mark.parametrize(
    ("kind", "size_known"),
    [("raw", True), ("gz", True), ("xz", True), ("zst", True), ("zip", True), ("bz2", False)],
)
def test_uncompressed_size_is_reported_where_the_format_records_it(
    small_disk: Path, compressed_image: Compress, kind: str, size_known: bool
) -> None:
    path = small_disk if kind == "raw" else compressed_image(small_disk, kind)
    expected = small_disk.stat().st_size if size_known else None
    assert open_source(path).uncompressed_size == expected


@pytest.mark.parametrize(
    ("compressed_bytes", "isize", "expected"),
    [
        (1_000_000, 50_000_000, 50_000_000),  # only one value fits 1 MB of deflate
        (300_000_000, 50_000_000, None),  # 50 MB + k * 4 GiB all fit: ambiguous
        (1_000_000, 10, None),  # smaller than the input can be: inconsistent
    ],
)
def test_gzip_isize_is_trusted_only_when_unambiguous(
    compressed_bytes: int, isize: int, expected: int | None
) -> None:
    def pread(length: int, offset: int) -> bytes:
        assert offset == compressed_bytes - 4
        return struct.pack("<I", isize)

    assert decoders.gzip_uncompressed_size(pread, compressed_bytes) == expected


def test_zip_member_is_chosen_by_content_not_name_or_size(small_disk: Path, tmp_path: Path) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("README.img", b"read me\n" * 1000)
        zf.writestr("firmware.img", random.Random(3).randbytes(8 * MiB))  # larger, no table
        zf.write(small_disk, "payload.bin")
    source = open_source(archive)
    assert source.member is not None and source.member.name == "payload.bin"
    assert _stream_bytes(archive) == small_disk.read_bytes()


def test_stored_zip_member_streams_unchanged(small_disk: Path, tmp_path: Path) -> None:
    archive = tmp_path / "stored.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.write(small_disk, "disk")
    assert _stream_bytes(archive) == small_disk.read_bytes()


@pytest.mark.parametrize(
    "members",
    [{"notes.txt": b"hello\n", "logo.png": b"\x89PNG" + bytes(100)}, {}],
    ids=["only-small-files", "empty-archive"],
)
def test_zip_without_a_disk_image_is_rejected(members: dict[str, bytes], tmp_path: Path) -> None:
    archive = tmp_path / "nothing.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ImageError) as caught:
        open_source(archive)
    assert caught.value.problem == "no_image_in_archive"
    assert "nothing.zip" in str(caught.value)


def _flip_middle(path: Path, dest: Path) -> Path:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0x5A
    dest.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_data_is_reported_as_corrupt(
    small_disk: Path, compressed_image: Compress, kind: str, tmp_path: Path
) -> None:
    bad = _flip_middle(compressed_image(small_disk, kind), tmp_path / f"bad.{kind}")
    assert _problem(bad) == "corrupt"


def test_gzip_crc_mismatch_is_corrupt(
    small_disk: Path, compressed_image: Compress, tmp_path: Path
) -> None:
    data = bytearray(compressed_image(small_disk, "gz").read_bytes())
    data[-8] ^= 0xFF  # first byte of the trailer's CRC-32
    bad = tmp_path / "crc.gz"
    bad.write_bytes(bytes(data))
    assert _problem(bad) == "corrupt"


def test_zip_member_crc_mismatch_is_corrupt(small_disk: Path, tmp_path: Path) -> None:
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(small_disk, "disk.img")
    data = bytearray(archive.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    data[central + 16] ^= 0xFF  # the central directory's CRC-32 of the member
    archive.write_bytes(bytes(data))
    with pytest.raises(ImageError) as caught:
        _stream_bytes(archive)
    assert caught.value.problem == "corrupt"
    assert "CRC-32" in str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("keep", [0.6, "all-but-4"])
def test_a_cut_file_is_reported_as_truncated(
    small_disk: Path, compressed_image: Compress, kind: str, keep: float | str, tmp_path: Path
) -> None:
    data = compressed_image(small_disk, kind).read_bytes()
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(data[: int(len(data) * keep)] if isinstance(keep, float) else data[:-4])
    assert _problem(cut) == "truncated"


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zst"])
def test_concatenated_streams_decode_as_one(
    small_disk: Path, compressed_image: Compress, kind: str, tmp_path: Path
) -> None:
    one = compressed_image(small_disk, kind).read_bytes()
    both = tmp_path / f"both.{kind}"
    both.write_bytes(one + one)
    assert _stream_bytes(both) == small_disk.read_bytes() * 2


@pytest.mark.parametrize(("tail", "problem"), [(bytes(1024), None), (b"garbage!", "corrupt")])
def test_data_after_the_gzip_stream_is_checked(
    small_disk: Path, compressed_image: Compress, tail: bytes, problem: str | None, tmp_path: Path
) -> None:
    path = tmp_path / "tail.gz"
    path.write_bytes(compressed_image(small_disk, "gz").read_bytes() + tail)
    if problem is None:
        assert _stream_bytes(path) == small_disk.read_bytes()
    else:
        assert _problem(path) == problem


def _tar(disk: Path, tmp: Path) -> bytes:
    with tarfile.open(tmp / "x.tar", "w") as tar:
        tar.add(disk, "disk.img")
    return (tmp / "x.tar").read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("image.tar", _tar, "tar"),
        ("image.img.gz", lambda d, t: gzip.compress(_tar(d, t)), "tar"),
        ("image.7z", lambda d, t: b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(600), "7-Zip"),
        ("image.rar", lambda d, t: b"Rar!\x1a\x07\x01\x00" + bytes(600), "RAR"),
        ("image.dmg", lambda d, t: bytes(4096) + b"koly" + bytes(508), "Apple"),
        ("image.qcow2", lambda d, t: b"QFI\xfb\x00\x00\x00\x03" + bytes(600), "QCOW"),
        ("image.gz.gz", lambda d, t: gzip.compress(gzip.compress(d.read_bytes())), "twice"),
    ],
    ids=["tar", "tar.gz", "7z", "rar", "dmg", "qcow2", "gz.gz"],
)
def test_other_archives_and_disk_formats_are_unsupported(
    small_disk: Path,
    tmp_path: Path,
    name: str,
    content: Callable[[Path, Path], bytes],
    what: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content(small_disk, tmp_path))
    with pytest.raises(ImageError) as caught:
        open_source(path)
    assert caught.value.problem == "unsupported"
    assert what in str(caught.value) and str(path) in str(caught.value)
    assert caught.value.hint


def test_an_encrypted_zip_image_is_unsupported(small_disk: Path, tmp_path: Path) -> None:
    require_tools("zip")
    archive = tmp_path / "secret.zip"
    subprocess.run(["zip", "-q", "-j", "-P", "pw", str(archive), str(small_disk)], check=True)
    with pytest.raises(ImageError) as caught:
        open_source(archive)
    assert caught.value.problem == "unsupported" and "encrypted" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\x00" * 100, "not_an_image"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>\n" * 40, "not_an_image"),
        (b'{"error": "not found"}\n' * 40, "not_an_image"),
    ],
    ids=["empty", "tiny", "html", "json"],
)
def test_files_that_cannot_be_disk_images_are_rejected(
    content: bytes, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "download.img"
    path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        open_source(path)
    assert (caught.value.problem, caught.value.path) == (problem, str(path))


def test_a_compressed_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "page.img.gz"
    path.write_bytes(gzip.compress(b"<html><body>Service Unavailable</body></html>\n" * 50))
    with pytest.raises(ImageError) as caught:
        open_source(path)
    assert caught.value.problem == "not_an_image" and "HTML" in str(caught.value)


@pytest.mark.parametrize(("name", "problem"), [("missing.img", "not_found"), (".", "not_a_file")])
def test_missing_files_and_folders_are_named(name: str, problem: str, tmp_path: Path) -> None:
    path = tmp_path / name
    with pytest.raises(ImageError) as caught:
        open_source(path)
    assert caught.value.problem == problem and str(path) in str(caught.value)


@pytest.fixture(scope="module")
def zero_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 128 MiB sparse image of zeros after an MBR: deflate/zstd expand it ~1000 times."""
    path = tmp_path_factory.mktemp("zeros") / "zeros.img"
    with open(path, "wb") as f:
        f.write(bytes(510) + b"\x55\xaa")
        f.truncate(128 * MiB)
    return path


@pytest.mark.parametrize("kind", ["gz", "zst", "zip"])
def test_streaming_memory_stays_bounded(
    zero_image: Path, compressed_image: Compress, kind: str
) -> None:
    path = compressed_image(zero_image, kind)
    tracemalloc.start()
    try:
        total = 0
        with open_source(path).open_stream() as stream:
            while chunk := stream.read(4 * MiB):
                total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 128 * MiB
    assert peak < 24 * MiB


def test_unpack_reports_progress_up_to_the_raw_size(
    small_disk: Path, compressed_image: Compress, tmp_path: Path
) -> None:
    events: list[Event] = []
    open_source(compressed_image(small_disk, "xz")).unpack_to(
        tmp_path / "out.img", on_event=events.append
    )
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and all(e.phase is Phase.UNPACKING for e in progress)
    assert progress[-1].done_bytes == progress[-1].total_bytes == small_disk.stat().st_size


def test_cancelled_unpack_leaves_nothing_behind(
    small_disk: Path, compressed_image: Compress, tmp_path: Path
) -> None:
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        open_source(compressed_image(small_disk, "gz")).unpack_to(
            tmp_path / "out.img", cancel=cancel
        )
    assert os.listdir(tmp_path) == []


def test_failed_unpack_leaves_nothing_behind(
    small_disk: Path, compressed_image: Compress, tmp_path: Path
) -> None:
    bad = _flip_middle(compressed_image(small_disk, "zst"), tmp_path / "bad.zst")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ImageError):
        open_source(bad).unpack_to(out / "raw.img")
    assert os.listdir(out) == []


def test_stream_error_stays_raised_on_later_reads(
    small_disk: Path, compressed_image: Compress, tmp_path: Path
) -> None:
    data = bytearray(compressed_image(small_disk, "gz").read_bytes())
    data[-1] ^= 0xFF  # the size in the trailer: only the end of the stream can notice
    bad = tmp_path / "bad.gz"
    bad.write_bytes(bytes(data))
    with open_source(bad).open_stream() as stream:
        with pytest.raises(ImageError):
            while stream.read(MiB):
                pass
        with pytest.raises(ImageError):
            stream.read(MiB)


@pytest.mark.parametrize("method", ["read1", "readinto", "read-small"])
def test_every_read_method_gives_the_same_bytes(
    small_disk: Path, compressed_image: Compress, method: str
) -> None:
    parts: list[bytes] = []
    with open_source(compressed_image(small_disk, "gz")).open_stream() as stream:
        while True:
            if method == "read1":
                part = stream.read1(3 * MiB)
            elif method == "readinto":
                buffer = bytearray(1000_003)
                part = bytes(buffer[: stream.readinto(buffer)])
            else:
                part = stream.read(4096)
                assert len(part) in (0, 4096)  # full reads until the end
            if not part:
                break
            parts.append(part)
    assert b"".join(parts) == small_disk.read_bytes()
