"""Source integrity: which formats prove their own bytes, `--sha256` before anything is written,
the bench's refusal of unprovable sources, and cards whose verification fails left unbootable."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard

from flasher import provider as provider_module
from flasher.bench.image import BenchJob
from flasher.cache import ImageCache
from flasher.cli.main import main
from flasher.drives.discovery import find_drive
from flasher.errors import ImageError, VerificationFailed
from flasher.events import CancelToken, Event, Phase, PhaseChanged
from flasher.image import integrity as integrity_module
from flasher.image import sources
from flasher.image.bmap import write_bmap
from flasher.image.byteio import FileReader
from flasher.image.integrity import Integrity, source_integrity
from flasher.image.sources import open_source
from flasher.provider import ImageProvider, SourceSpec
from flasher.writer import engine, targets
from flasher.writer.blockdev import BlockDevicePolicy, OpenTarget, open_regular_file
from flasher.writer.client import ImageFeed, write_file_targets
from flasher.writer.imagesource import RandomAccessSource
from flasher.writer.plan import WritePlan
from flasher.writer.protocol import TargetSpec
from tests.conftest import ImageFactory
from tests.support.httpserver import HttpTestServer
from tests.support.loopdev import LoopDevices

MiB = 1024 * 1024


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def image(mbr_image: ImageFactory) -> Path:
    return mbr_image().path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _zstd(data: bytes, *, checksum: bool) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(data)


def _zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("balena.img", data)
    return buf.getvalue()


ENCODERS: dict[str, tuple[Callable[[bytes], bytes], Integrity]] = {
    "raw": (lambda d: d, Integrity.NONE),
    "gzip": (gzip.compress, Integrity.CRC32),
    "zip": (_zip, Integrity.CRC32),
    "bzip2": (bz2.compress, Integrity.CRC32),
    "xz-default": (lambda d: lzma.compress(d), Integrity.CRC64),
    "xz-crc32": (lambda d: lzma.compress(d, check=lzma.CHECK_CRC32), Integrity.CRC32),
    "xz-sha256": (lambda d: lzma.compress(d, check=lzma.CHECK_SHA256), Integrity.SHA256),
    "xz-none": (lambda d: lzma.compress(d, check=lzma.CHECK_NONE), Integrity.NONE),
    "zstd-checksum": (lambda d: _zstd(d, checksum=True), Integrity.XXHASH64),
    "zstd-no-checksum": (lambda d: _zstd(d, checksum=False), Integrity.NONE),
    "zstd-mixed-frames": (
        lambda d: _zstd(d[: len(d) // 2], checksum=True) + _zstd(d[len(d) // 2 :], checksum=False),
        Integrity.NONE,
    ),
}


@pytest.mark.parametrize("kind", list(ENCODERS))
def test_source_integrity_names_the_formats_own_check(
    tmp_path: Path, image: Path, kind: str
) -> None:
    encode, expected = ENCODERS[kind]
    path = tmp_path / f"image.{kind}"
    path.write_bytes(encode(image.read_bytes()))
    assert source_integrity(open_source(path)) is expected


@pytest.fixture
def corrupt_zstd(tmp_path: Path, image: Path) -> Path:
    """A zstd file without checksums whose one flipped byte still decodes (silently wrong)."""
    data = image.read_bytes()
    packed = bytearray(_zstd(data, checksum=False))
    for pos in range(len(packed) // 2, len(packed) - 16, 97):
        trial = bytearray(packed)
        trial[pos] ^= 0x01
        try:
            out = zstandard.ZstdDecompressor().decompress(bytes(trial), max_output_size=len(data))
        except zstandard.ZstdError:
            continue
        if len(out) == len(data) and out != data and out[:65536] == data[:65536]:
            path = tmp_path / "corrupt.img.zst"
            path.write_bytes(trial)
            return path
    pytest.fail("no silently decoding flip found")


def _events(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_corrupt_unchecksummed_zstd_is_refused_before_writing_with_sha256(
    tmp_path: Path, image: Path, corrupt_zstd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    digest = _sha256(image).upper()  # any case is accepted
    code = main(["--json", "flash", str(corrupt_zstd), "--target", str(card), "--sha256", digest])
    events = _events(capsys.readouterr().out)
    assert code != 0
    assert not [e for e in events if e.get("event") == "target_result" and e.get("ok")]
    error = events[-1]
    assert error["event"] == "error" and error["details"]["problem"] == "checksum"  # type: ignore[index]
    assert not card.exists()


def test_corrupt_unchecksummed_zstd_without_sha256_says_integrity_none(
    tmp_path: Path, corrupt_zstd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    assert main(["flash", str(corrupt_zstd), "--target", str(card)]) == 0
    assert "source integrity none" in capsys.readouterr().out
    assert main(["--json", "flash", str(corrupt_zstd), "--target", str(card)]) == 0
    summary = _events(capsys.readouterr().out)[-1]
    assert summary["event"] == "summary" and summary["source_integrity"] == "none"
    assert summary["sha256_matched"] is None


@pytest.mark.parametrize(
    ("encode", "digest_of", "matched", "integrity"),
    [
        (gzip.compress, "image", "image", "crc32"),
        (gzip.compress, "source", "source", "crc32"),
        (lambda d: _zstd(d, checksum=False), "image", "image", "none"),
    ],
    ids=["gzip-image-digest", "gzip-file-digest", "zstd-image-digest"],
)
def test_matching_sha256_is_reported(
    tmp_path: Path,
    image: Path,
    encode: Callable[[bytes], bytes],
    digest_of: str,
    matched: str,
    integrity: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "source.img.packed"
    source.write_bytes(encode(image.read_bytes()))
    digest = _sha256(image if digest_of == "image" else source)
    card = tmp_path / "card.img"
    code = main(["--json", "flash", str(source), "--target", str(card), "--sha256", digest])
    summary = _events(capsys.readouterr().out)[-1]
    assert code == 0, summary
    assert (summary["sha256_matched"], summary["source_integrity"]) == (matched, integrity)


@pytest.mark.parametrize("digest_of", ["image", "source"])
def test_a_downloaded_image_is_matched_by_its_file_or_its_decoded_image(
    tmp_path: Path, image: Path, digest_of: str, capsys: pytest.CaptureFixture[str]
) -> None:
    served = gzip.compress(image.read_bytes())
    digest = _sha256(image) if digest_of == "image" else hashlib.sha256(served).hexdigest()
    card = tmp_path / "card.img"
    with HttpTestServer() as server:
        url = server.serve("/images/balena.img.gz", served)
        code = main(["--json", "flash", url, "--target", str(card), "--sha256", digest])
    summary = _events(capsys.readouterr().out)[-1]
    assert code == 0, summary
    assert (summary["sha256_matched"], summary["source_integrity"]) == (digest_of, "crc32")


def test_a_downloaded_image_with_another_sha256_is_refused_before_writing(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    with HttpTestServer() as server:
        url = server.serve("/images/balena.img.gz", gzip.compress(image.read_bytes()))
        code = main(["--json", "flash", url, "--target", str(card), "--sha256", "0" * 64])
    error = _events(capsys.readouterr().out)[-1]
    assert code != 0
    assert error["event"] == "error" and error["details"]["problem"] == "checksum"  # type: ignore[index]
    assert not card.exists()


@pytest.mark.parametrize("value", ["abc", "g" * 64, "0" * 63])
def test_malformed_sha256_is_a_usage_error(
    tmp_path: Path, image: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["flash", str(image), "--target", str(tmp_path / "c.img"), "--sha256", value])
    assert info.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize("matches", [True, False], ids=["matching", "wrong"])
def test_os_configure_checks_sha256_before_configuring(
    tmp_path: Path, image: Path, matches: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.img"
    copy.write_bytes(image.read_bytes())
    digest = _sha256(image) if matches else "0" * 64
    code = main(["os", "configure", str(copy), "--hostname", "h2", "--sha256", digest])
    capsys.readouterr()
    assert (code == 0) is matches
    assert (copy.read_bytes() == image.read_bytes()) is not matches


def _bench_job(source: Path, sha256: str | None) -> BenchJob:
    return BenchJob(SourceSpec(path=str(source)), expected_sha256=sha256)


def test_bench_refuses_a_source_without_integrity(tmp_path: Path, corrupt_zstd: Path) -> None:
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    with pytest.raises(ImageError) as info:
        _bench_job(corrupt_zstd, None).prepare(provider)
    assert info.value.problem == "no_integrity"


def test_bench_refuses_a_raw_image_without_sha256(tmp_path: Path, image: Path) -> None:
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    with pytest.raises(ImageError) as info:
        _bench_job(image, None).prepare(provider)
    assert info.value.problem == "no_integrity"


def test_bench_takes_a_raw_image_with_its_sha256(tmp_path: Path, image: Path) -> None:
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    bench = _bench_job(image, _sha256(image)).prepare(provider)
    try:
        assert bench.summary()["sha256_matched"] == "image"
    finally:
        bench.close()


def test_bench_takes_a_checksummed_source_as_it_is(tmp_path: Path, image: Path) -> None:
    source = tmp_path / "image.img.gz"
    source.write_bytes(gzip.compress(image.read_bytes()))
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    bench = _bench_job(source, None).prepare(provider)
    try:
        assert bench.summary()["source_integrity"] == "crc32"
    finally:
        bench.close()


def _bmap(tmp_path: Path, image: Path, *, checksums: bool) -> Path:
    size = image.stat().st_size
    with FileReader(image) as reader:
        return write_bmap(
            tmp_path / "image.bmap", [(0, size)], size, image=reader if checksums else None
        )


def test_bench_takes_a_raw_image_with_a_checksummed_bmap(tmp_path: Path, image: Path) -> None:
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    job = BenchJob(
        SourceSpec(path=str(image)), bmap_path=str(_bmap(tmp_path, image, checksums=True))
    )
    bench = job.prepare(provider)
    try:
        assert (bench.summary()["source_integrity"], bench.summary()["bmap_checked"]) == (
            "none",
            True,
        )
    finally:
        bench.close()


def test_bench_refuses_a_bmap_whose_ranges_carry_no_checksums(tmp_path: Path, image: Path) -> None:
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    bmap = _bmap(tmp_path, image, checksums=False)  # names a checksum type, lists none
    with pytest.raises(ImageError) as info:
        BenchJob(SourceSpec(path=str(image)), bmap_path=str(bmap)).prepare(provider)
    assert info.value.problem == "no_integrity"


def test_bench_refuses_a_raw_image_its_checksummed_bmap_does_not_match(
    tmp_path: Path, image: Path
) -> None:
    bmap = _bmap(tmp_path, image, checksums=True)
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    corrupt = tmp_path / "corrupt.img"
    corrupt.write_bytes(data)
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    with pytest.raises(ImageError) as info:
        BenchJob(SourceSpec(path=str(corrupt)), bmap_path=str(bmap)).prepare(provider)
    assert info.value.problem == "bmap_mismatch"


# -- a card that fails verification is left unbootable ----------------------------------------


IMAGE_BYTES = 6 * MiB


@pytest.fixture
def random_image(tmp_path: Path) -> Path:
    path = tmp_path / "random.img"
    path.write_bytes(os.urandom(IMAGE_BYTES))
    return path


def _corrupt_on_verify(poke: Callable[[], None]) -> Callable[[Event], None]:
    """An event callback that damages the medium just before it is read back."""

    def on_event(event: Event) -> None:
        if isinstance(event, PhaseChanged) and event.phase is Phase.VERIFYING:
            poke()

    return on_event


def _write(
    random_image: Path, target: OpenTarget, on_event: Callable[[Event], None]
) -> engine.TargetOutcome:
    with open(random_image, "rb") as f:
        source = RandomAccessSource(f.fileno(), IMAGE_BYTES)
        try:
            (outcome,) = targets.write_targets(
                source,
                WritePlan.build(IMAGE_BYTES, None),
                [target],
                on_event=on_event,
                cancel=CancelToken(),
            )
        finally:
            target.close()
    return outcome


def test_file_card_failing_verification_has_its_first_mib_zeroed(
    tmp_path: Path, random_image: Path
) -> None:
    card = tmp_path / "card.img"
    target = open_regular_file(str(card), size_bytes=IMAGE_BYTES, create=True)

    def poke() -> None:
        with open(card, "r+b") as f:
            f.seek(4 * MiB)
            f.write(b"\x00\xff\x00\xff")

    outcome = _write(random_image, target, _corrupt_on_verify(poke))
    assert isinstance(outcome.error, VerificationFailed)
    assert card.read_bytes()[:MiB] == bytes(MiB)


def test_block_card_failing_verification_has_its_first_mib_zeroed(
    loops: LoopDevices, random_image: Path
) -> None:
    loop = loops.create(8 * MiB, fill=b"\xa5")
    drive = find_drive(loop.path)
    assert drive is not None
    spec = TargetSpec(drive.path, drive.dev, drive.size_bytes, drive.serial)
    target = BlockDevicePolicy().open_target(spec, lambda _m: None)
    outcome = _write(
        random_image, target, _corrupt_on_verify(lambda: loop.poke(3 * MiB, b"\x00\xff" * 8))
    )
    assert isinstance(outcome.error, VerificationFailed)
    assert loop.read(0, MiB) == bytes(MiB)


def test_streamed_card_with_a_wrong_sha256_is_not_reported_good_and_cannot_boot(
    tmp_path: Path, random_image: Path
) -> None:
    card = tmp_path / "card.img"

    def open_stream() -> BinaryIO:
        return open(random_image, "rb")

    feed = ImageFeed.from_stream(open_stream, IMAGE_BYTES, sha256="0" * 64)
    (result,) = write_file_targets(feed, [str(card)])
    assert not result.ok and isinstance(result.error, ImageError)
    assert result.error.problem == "checksum"
    assert card.read_bytes()[:MiB] == bytes(MiB)


@pytest.mark.parametrize("kind", ["raw", "gzip", "xz-default", "zstd-checksum"])
def test_a_flash_sniffs_its_source_file_once(
    tmp_path: Path,
    image: Path,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The provider's look at the file serves the integrity check too: a compressed file's
    head is decoded once, not once more to name its check."""
    encode, expected = ENCODERS[kind]
    source = tmp_path / f"image.{kind}"
    source.write_bytes(encode(image.read_bytes()))
    opened: list[Path] = []
    real = sources.open_source

    def counting(path: str | os.PathLike[str]) -> sources.ImageSource:
        opened.append(Path(path).resolve())
        return real(path)

    for module in (sources, provider_module, integrity_module):
        monkeypatch.setattr(module, "open_source", counting)
    card = tmp_path / "card.img"
    code = main(["--json", "flash", str(source), "--target", str(card)])
    summary = _events(capsys.readouterr().out)[-1]
    assert code == 0, summary
    assert summary["source_integrity"] == expected.value
    assert opened.count(source.resolve()) == 1
