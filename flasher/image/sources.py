"""Image sources: what a file is (sniffed from its bytes, never its name) and its raw content.

`open_source(path)` recognises raw disk images, zip (the disk image member is found by its
content), gzip, xz, zstd and bzip2; rejects empty files, text (an HTML error page, say), other
archives and other disk formats with an ImageError naming the file and a `problem` word
(not_found, unreadable, empty, not_an_image, unsupported, no_image_in_archive, corrupt,
truncated). `ImageSource.open_stream()` gives the raw bytes sequentially with bounded memory;
`unpack_to()` decompresses once into a sparse raw file, atomically. Imports only the standard
library, isal, zstandard and flasher (errors, events, image.decoders, image.xzparallel,
image.byteio).
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.events import CancelToken, EventCallback, Phase, RateMeter, ignore_event
from flasher.image import decoders as dec
from flasher.image.byteio import atomic_file, start_writeback, write_data_runs

SECTOR_BYTES = 512
HEAD_BYTES = 64 * 1024  # enough for the MBR, the GPT header and the ISO 9660 descriptor
MIN_UNPARTITIONED_BYTES = 1024 * 1024  # smallest member taken as an image without a table
ZIP_MEMBERS_SCANNED = 32
# The unpacked file's pages start going to the disk every this many bytes decoded, while
# decoding keeps the CPU busy and the disk would otherwise idle: the fsync before the file is
# renamed into place then waits for the last few MiB only, not for all of it at once while the
# cards are being synced and read back.
WRITEBACK_BYTES = 32 * 1024 * 1024


class SourceKind(enum.StrEnum):
    RAW = "raw"
    ZIP = "zip"
    GZIP = "gz"
    XZ = "xz"
    ZSTD = "zst"
    BZIP2 = "bz2"


_CONVERT_HINT = "Convert it to a raw image first, e.g. `qemu-img convert -O raw IN OUT.img`."
_EXTRACT_HINT = "Extract the disk image (.img) from the archive and use that file."
# (offset, magic, what it is, hint) for formats that are not raw disk images
_FOREIGN: tuple[tuple[int, bytes, str, str], ...] = (
    (257, b"ustar", "a tar archive", _EXTRACT_HINT),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", _EXTRACT_HINT),
    (0, b"Rar!\x1a\x07", "a RAR archive", _EXTRACT_HINT),
    (0, b"xar!", "a XAR archive", _EXTRACT_HINT),
    (0, b"070701", "a cpio archive", _EXTRACT_HINT),
    (0, b"\x04\x22\x4d\x18", "LZ4-compressed", "Decompress it with `lz4 -d` first."),
    (0, b"LZIP", "lzip-compressed", "Decompress it with `lzip -d` first."),
    (0, b"\x1f\x9d", "compress(1)-compressed (.Z)", "Decompress it with `uncompress` first."),
    (0, b"\x1f\x8b", "gzip with an unknown method", "Recompress it with plain gzip."),
    (0, b"PK\x07\x08", "a split zip archive", "Join the parts into one zip first."),
    (0, b"QFI\xfb", "a QCOW disk image", _CONVERT_HINT),
    (0, b"KDMV", "a VMDK disk image", _CONVERT_HINT),
    (0, b"# Disk DescriptorFile", "a VMDK descriptor", _CONVERT_HINT),
    (0, b"vhdxfile", "a VHDX disk image", _CONVERT_HINT),
    (64, b"\x7f\x10\xda\xbe", "a VirtualBox VDI disk image", _CONVERT_HINT),
    (0, b"\x3a\xff\x26\xed", "an Android sparse image", "Convert it with `simg2img` first."),
)
_NESTED = (dec.GZIP_MAGIC, dec.XZ_MAGIC, dec.ZSTD_MAGIC, b"PK\x03\x04")


def _unsupported(name: str, what: str, hint: str) -> ImageError:
    return ImageError(
        name, f"this is {what}, not a disk image", problem=ProblemCode.UNSUPPORTED, hint=hint
    )


def _is_bzip2(head: bytes) -> bool:
    return (
        head[:3] == dec.BZIP2_MAGIC
        and head[3:4].isdigit()
        and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")
    )


def _is_zstd(head: bytes) -> bool:
    magic = int.from_bytes(head[:4], "little")
    return head[:4] == dec.ZSTD_MAGIC or magic & 0xFFFFFFF0 == 0x184D2A50


def check_payload(name: str, head: bytes, size_bytes: int | None) -> None:
    """Reject raw content that cannot be a disk image: empty, tiny, text, an archive or
    another disk format. `head` is the first bytes (up to HEAD_BYTES) of the raw content."""
    if not head:
        raise ImageError(
            name,
            "the image is empty (0 bytes)",
            problem=ProblemCode.EMPTY,
            hint="Download or copy the image again.",
        )
    if size_bytes is not None and size_bytes < SECTOR_BYTES:
        raise ImageError(
            name,
            f"only {size_bytes} bytes: too small to hold a partition table or a filesystem",
            problem=ProblemCode.NOT_AN_IMAGE,
        )
    if any(head.startswith(m) for m in _NESTED) or _is_bzip2(head) or _is_zstd(head):
        raise _unsupported(name, "compressed twice", "Decompress the outer layer first.")
    for offset, magic, what, hint in _FOREIGN:
        if head[offset : offset + len(magic)] == magic:
            raise _unsupported(name, what, hint)
    sample = head[:SECTOR_BYTES]
    if b"\0" not in sample:
        try:
            text = sample.decode("utf-8")
        except UnicodeDecodeError:
            return
        looks = "an HTML page" if "<html" in text.lower() or "<!doctype" in text.lower() else "text"
        raise ImageError(
            name,
            f"this looks like {looks}, not a disk image",
            problem=ProblemCode.NOT_AN_IMAGE,
            hint="Check the download: a server error page may have been saved instead.",
        )


def _has_table(head: bytes) -> bool:
    return head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART"


class UnpackWatcher(Protocol):
    """Follows `ImageSource.unpack_to` (called on its thread)."""

    def opened(self, fd: int) -> None:
        """The temporary file's fd, before anything is written to it."""

    def decoded(self, end: int, written: list[tuple[int, int]]) -> None:
        """`end` raw bytes are decoded; `written` are the (offset, length) extents that this
        step wrote (its non-zero blocks). May raise (Cancelled) to stop the unpacking."""

    def finished(self, size_bytes: int) -> None:
        """The stream ended and passed its own check; the file has its full size (before it
        is synced and renamed into place)."""


@dataclass(frozen=True)
class ZipMember:
    name: str
    method: int  # 0 stored, 8 deflate
    data_offset: int
    compressed_size: int
    file_size: int
    crc32: int


@dataclass(frozen=True)
class ImageSource:
    """A sniffed image file. `compressed_size` counts the bytes the decoder reads (the file, or
    the zip member's data); `uncompressed_size` is the raw size when the format records it."""

    path: Path
    kind: SourceKind
    compressed_size: int
    uncompressed_size: int | None
    member: ZipMember | None = None
    zstd_layout: dec.ZstdLayout | None = None  # the frame walk from sniffing, reused to decode

    @property
    def name(self) -> str:
        """How errors name the source: the file, plus the zip member."""
        return f"{self.path}:{self.member.name}" if self.member else str(self.path)

    @contextmanager
    def _input(self) -> Iterator[tuple[dec.Input, int]]:
        """The compressed bytes from their start, and the file's fd."""
        try:
            file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except OSError as err:
            raise _open_error(self.path, err) from None
        with file:
            start, limit = (
                (self.member.data_offset, self.compressed_size) if self.member else (0, None)
            )
            file.seek(start)
            yield dec.Input(file, limit), file.fileno()

    @contextmanager
    def _chunks(self) -> Iterator[tuple[dec.Chunks, dec.Input]]:
        with self._input() as (src, fd):
            chunks = self._decoder(src, fd)
            try:
                yield chunks, src
            finally:
                chunks.close()

    def _decoder(self, src: dec.Input, fd: int) -> dec.Chunks:
        name = self.name
        if self.kind is SourceKind.RAW:
            return dec.raw_chunks(src)
        if self.kind is SourceKind.GZIP:
            return dec.gzip_chunks(src, name)
        if self.kind is SourceKind.XZ:
            from flasher.image import xzparallel  # loaded for .xz files only

            return xzparallel.xz_chunks(src, name, dec.file_pread(fd), os.fstat(fd).st_size)
        if self.kind is SourceKind.BZIP2:
            return dec.bzip2_chunks(src, name)
        if self.kind is SourceKind.ZSTD:
            assert self.zstd_layout is not None
            return dec.zstd_chunks(src, name, self.zstd_layout)
        assert self.member is not None
        m = self.member
        return dec.zip_member_chunks(
            src, name, method=m.method, file_size=m.file_size, crc32=m.crc32
        )

    def open_stream(self) -> BinaryIO:
        """The raw image bytes, sequentially; corrupt or truncated data raises ImageError when
        the reader reaches it (the end is verified when the last byte is read). `read1(n)`
        hands decoded chunks over without copying them, the fastest way through."""
        manager = self._chunks()
        chunks, _src = manager.__enter__()
        return dec.ChunkReader(chunks, lambda: manager.__exit__(None, None, None))

    def unpack_to(
        self,
        dest_path: str | os.PathLike[str],
        *,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
        watch: UnpackWatcher | None = None,
    ) -> int:
        """Write the raw image to `dest_path` (zero blocks become holes) through a temporary
        file renamed into place once complete and synced; returns the raw size in bytes.
        Progress counts raw bytes when the size is known, else compressed bytes read. `watch`
        learns the temporary file and what is written to it as it goes."""
        dest = Path(dest_path)
        by_output = self.uncompressed_size is not None
        meter = RateMeter(
            Phase.UNPACKING, self.uncompressed_size if by_output else self.compressed_size
        )
        flushed = 0
        with atomic_file(dest, mode=0o644, wrap_error=lambda err: _write_error(dest, err)) as fd:
            if watch is not None:
                watch.opened(fd)
            with self._input() as (src, source_fd):

                def write(piece: bytes, offset: int) -> list[tuple[int, int]]:
                    return _write_sparse(fd, piece, offset, dest)

                def step(end: int, runs: list[tuple[int, int]]) -> None:
                    nonlocal flushed
                    if cancel is not None:
                        cancel.check()
                    if end - flushed >= WRITEBACK_BYTES:
                        start_writeback(fd, flushed, end - flushed)
                        flushed = end
                    if watch is not None:
                        watch.decoded(end, runs)
                    event = meter.update(end if by_output else src.consumed_bytes)
                    if event is not None:
                        on_event(event)

                done = self._decode_into(src, source_fd, write, step, cancel)
            try:
                os.ftruncate(fd, done)
            except OSError as err:
                raise _write_error(dest, err) from None
            if watch is not None:
                watch.finished(done)
        on_event(meter.snapshot(done if by_output else self.compressed_size))
        return done

    def _decode_into(
        self,
        src: dec.Input,
        fd: int,
        write: Callable[[bytes, int], list[tuple[int, int]]],
        step: Callable[[int, list[tuple[int, int]]], None],
        cancel: CancelToken | None,
    ) -> int:
        """Decode the whole source through `write` (a piece, its raw offset), with `step` after
        each piece, in file order (raw bytes done, extents written; it checks `cancel`); the
        raw size."""
        if self.kind is SourceKind.XZ:
            from flasher.image import xzparallel, xzunpack  # loaded for .xz files only

            pread = dec.file_pread(fd)
            parallel = xzparallel.parallel_plan(pread, os.fstat(fd).st_size)
            if parallel is not None:
                stopped = (lambda: cancel.cancelled) if cancel is not None else (lambda: False)
                return xzunpack.unpack_blocks(
                    src,
                    self.name,
                    *parallel,
                    pread=pread,
                    write=write,
                    step=step,
                    cancelled=stopped,
                )
        done = 0
        chunks = self._decoder(src, fd)
        try:
            for chunk in chunks:
                runs = write(chunk, done)
                done += len(chunk)
                step(done, runs)
        finally:
            chunks.close()
        return done


def _write_error(dest: Path, err: OSError) -> ImageError:
    hint = "Free some disk space and try again." if err.errno == errno.ENOSPC else None
    return ImageError(
        str(dest),
        f"cannot write the unpacked image: {err.strerror}",
        problem=ProblemCode.UNWRITABLE,
        hint=hint,
    )


def _write_sparse(fd: int, chunk: bytes, offset: int, dest: Path) -> list[tuple[int, int]]:
    try:
        return write_data_runs(fd, chunk, offset)
    except OSError as err:
        raise _write_error(dest, err) from None


def _open_error(path: Path, err: OSError) -> ImageError:
    if err.errno == errno.ENOENT:
        return ImageError(
            str(path),
            "no such file",
            problem=ProblemCode.NOT_FOUND,
            hint="Check the path, or download the image first.",
        )
    if err.errno == errno.EISDIR:
        return ImageError(
            str(path), "this is a folder, not an image file", problem=ProblemCode.NOT_A_FILE
        )
    return ImageError(
        str(path), f"cannot read the file: {err.strerror}", problem=ProblemCode.UNREADABLE
    )


def _head(source: ImageSource) -> bytes:
    with source._chunks() as (chunks, _src):
        head = b""
        for chunk in chunks:
            head += chunk[: HEAD_BYTES - len(head)]
            if len(head) >= HEAD_BYTES:
                break
        return head


def _zip_member(path: Path, fd: int) -> ZipMember:
    import zipfile  # for .zip sources only

    name = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir() and i.file_size > 0]
    except zipfile.BadZipFile as err:
        if "not a zip file" in str(err):
            raise dec.truncated(name, "the zip archive has no central directory") from None
        raise dec.corrupt(name, f"zip: {err}") from None
    except OSError as err:
        raise _open_error(path, err) from None
    infos.sort(key=lambda i: i.file_size, reverse=True)
    with_table: list[ZipMember] = []
    plausible: list[ZipMember] = []
    skipped: list[str] = []
    for info in infos[:ZIP_MEMBERS_SCANNED]:
        if info.flag_bits & 0x1:
            skipped.append(f"{info.filename} is encrypted")
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            skipped.append(f"{info.filename} uses compression method {info.compress_type}")
            continue
        local = os.pread(fd, 30, info.header_offset)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise dec.corrupt(name, f"zip: no local header for {info.filename}")
        data_offset = info.header_offset + 30 + int.from_bytes(local[26:28], "little")
        data_offset += int.from_bytes(local[28:30], "little")
        member = ZipMember(
            info.filename,
            info.compress_type,
            data_offset,
            info.compress_size,
            info.file_size,
            info.CRC,
        )
        raw = os.pread(fd, min(info.compress_size, 4 * HEAD_BYTES), data_offset)
        try:
            head = raw if member.method == 0 else dec.inflater().decompress(raw, HEAD_BYTES)
        except dec.inflate_errors() as err:
            raise dec.corrupt(f"{name}:{info.filename}", f"deflate: {err}") from None
        if _has_table(head):
            with_table.append(member)
        elif info.file_size >= MIN_UNPARTITIONED_BYTES:
            try:
                check_payload(name, head, info.file_size)
            except ImageError:
                continue
            plausible.append(member)
    if with_table or plausible:
        return (with_table or plausible)[0]
    if skipped:
        raise ImageError(
            name,
            f"the zip archive's image cannot be read: {skipped[0]}",
            problem=ProblemCode.UNSUPPORTED,
            hint="Repack the image as a plain zip, gz or xz.",
        )
    listed = ", ".join(i.filename for i in infos[:5]) or "nothing"
    raise ImageError(
        name,
        f"no disk image inside the zip archive (it holds {listed})",
        problem=ProblemCode.NO_IMAGE_IN_ARCHIVE,
        hint="Use the .img file itself, or an archive that contains one.",
    )


def packed_kind(head: bytes) -> SourceKind | None:
    """The compressed format or archive a file starting with `head` is in, by its magic alone
    (`open_source` checks the rest); None for anything else."""
    if head.startswith(dec.GZIP_MAGIC):
        return SourceKind.GZIP
    if head.startswith(dec.XZ_MAGIC):
        return SourceKind.XZ
    if _is_zstd(head):
        return SourceKind.ZSTD
    if _is_bzip2(head):
        return SourceKind.BZIP2
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return SourceKind.ZIP
    return None


def _sniff(path: Path, fd: int, size: int) -> ImageSource:
    head = os.pread(fd, HEAD_BYTES, 0)
    pread = dec.file_pread(fd)
    name = str(path)
    kind = packed_kind(head)
    if kind is SourceKind.GZIP:
        return ImageSource(path, kind, size, dec.gzip_uncompressed_size(pread, size))
    if kind is SourceKind.XZ:
        return ImageSource(path, kind, size, dec.xz_uncompressed_size(pread, size))
    if kind is SourceKind.ZSTD:
        layout = dec.zstd_layout(pread, size)
        return ImageSource(path, kind, size, layout.content_size, zstd_layout=layout)
    if kind is SourceKind.BZIP2:
        return ImageSource(path, kind, size, None)
    if kind is SourceKind.ZIP:
        if head.startswith(b"PK\x05\x06"):
            raise ImageError(
                name, "the zip archive is empty", problem=ProblemCode.NO_IMAGE_IN_ARCHIVE
            )
        member = _zip_member(path, fd)
        return ImageSource(path, kind, member.compressed_size, member.file_size, member)
    if size >= SECTOR_BYTES and os.pread(fd, 4, size - SECTOR_BYTES) == b"koly":
        raise _unsupported(name, "an Apple disk image (.dmg)", _CONVERT_HINT)
    check_payload(name, head, size)
    return ImageSource(path, SourceKind.RAW, size, size)


def open_source(path: str | os.PathLike[str]) -> ImageSource:
    """Sniff `path` and return its ImageSource; compressed payloads are checked to start like a
    disk image. Raises ImageError (not_found, unsupported, corrupt, ...) naming the file."""
    source_path = Path(path)
    try:
        fd = os.open(source_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise _open_error(source_path, err) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _open_error(source_path, OSError(errno.EISDIR, "Is a directory"))
        # a block device reports no st_size; its end is where a seek lands
        size = info.st_size if stat.S_ISREG(info.st_mode) else os.lseek(fd, 0, os.SEEK_END)
        if size == 0:
            check_payload(str(source_path), b"", 0)
        source = _sniff(source_path, fd, size)
    except OSError as err:
        raise _open_error(source_path, err) from None
    finally:
        os.close(fd)
    if source.kind is not SourceKind.RAW:
        check_payload(source.name, _head(source), source.uncompressed_size)
    return source
