"""The early allocation map (flasher.image.earlymap): the same map `allocation_map` makes, and
only for the very file `prepare` opened, unchanged; anything else is left to `prepare`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.cache import ImageCache
from flasher.errors import ImageError
from flasher.image.bmap import write_bmap
from flasher.image.byteio import FileReader
from flasher.image.earlymap import EarlyMap
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from flasher.pipeline import prepare
from flasher.provider import ImageProvider, SourceSpec
from tests.conftest import ImageFactory


def _copy(image: Path, tmp_path: Path) -> Path:
    path = tmp_path / "balena.img"
    shutil.copyfile(image, path)
    return path


def test_an_early_map_is_the_map_prepare_would_make(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    path = _copy(mbr_image().path, tmp_path)
    early = EarlyMap(path)
    with FileReader(path) as io:
        got = early.take(path, io)
        want = allocation_map(io, read_partition_table(io, name=str(path)), name=str(path))
    assert got is not None
    assert got.ranges == want.ranges and got.scrub == want.scrub and got.ranges


def test_a_file_changed_since_is_mapped_again(mbr_image: ImageFactory, tmp_path: Path) -> None:
    path = _copy(mbr_image().path, tmp_path)
    early = EarlyMap(path)
    with FileReader(path) as io:
        assert early.take(path, io) is not None  # done, and right for the file as it was
    size = path.stat().st_size
    time.sleep(0.05)  # past the file clock's tick (a few ms) of the map's look at the file
    with open(path, "r+b") as f:
        f.seek(size - 1)
        last = f.read(1)
        f.seek(size - 1)
        f.write(last)  # the same byte again: only the file's times tell
    assert path.stat().st_size == size
    with FileReader(path) as io:
        assert early.take(path, io) is None


def test_another_file_gets_no_early_map(mbr_image: ImageFactory, tmp_path: Path) -> None:
    path = _copy(mbr_image().path, tmp_path)
    other = tmp_path / "other.img"
    shutil.copyfile(path, other)
    early = EarlyMap(path)
    with FileReader(other) as io:
        assert early.take(other, io) is None


def test_compressed_or_missing_files_are_left_to_prepare(
    mbr_image: ImageFactory,
    compressed_image: Callable[[Path, str], Path],
    tmp_path: Path,
) -> None:
    packed = compressed_image(mbr_image().path, "gz")
    with FileReader(packed) as io:
        assert EarlyMap(packed).take(packed, io) is None
    missing = tmp_path / "missing.img"
    early = EarlyMap(missing)  # no exception here: prepare reports the missing file
    with FileReader(packed) as io:
        assert early.take(missing, io) is None


def test_prepare_with_an_early_map_plans_the_same_card(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    path = _copy(mbr_image().path, tmp_path)
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    source = SourceSpec(path=str(path))
    with prepare(source, provider, one_flash=True) as plain:
        want = (plain.image.ranges, plain.image.scrub, plain.mapped_bytes)
    with prepare(source, provider, one_flash=True, early_map=EarlyMap(path)) as early:
        got = (early.image.ranges, early.image.scrub, early.mapped_bytes)
    assert got == want


def _with_bmap(mbr_image: ImageFactory, tmp_path: Path) -> tuple[Path, AllocationMap, Path]:
    """An image, its map, and a .bmap of that map with every range's checksum."""
    path = _copy(mbr_image().path, tmp_path)
    with FileReader(path) as io:
        mapped = allocation_map(io, read_partition_table(io, name=str(path)), name=str(path))
        bmap = write_bmap(tmp_path / "balena.img.bmap", mapped.ranges, io.size, image=io)
    return path, mapped, bmap


def test_a_bmap_map_is_taken_only_for_that_bmap_and_checked_when_asked(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    path, mapped, bmap = _with_bmap(mbr_image, tmp_path)
    plain = write_bmap(tmp_path / "plain.bmap", mapped.ranges, path.stat().st_size)  # no sums
    early = EarlyMap(path, bmap_path=bmap)
    with FileReader(path) as io:
        assert early.take(path, io) is None  # prepare maps from the filesystems, not a .bmap
        assert early.take(path, io, bmap_path=tmp_path / "other.bmap") is None
        got = early.take(path, io, bmap_path=bmap, verified=True)
        assert got is not None and got.source == "bmap"
    unchecked = EarlyMap(path, bmap_path=plain)
    with FileReader(path) as io:
        assert unchecked.take(path, io, bmap_path=plain) is not None
        assert unchecked.take(path, io, bmap_path=plain, verified=True) is None


def test_an_image_that_does_not_match_its_bmap_is_left_to_prepare(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    path, mapped, bmap = _with_bmap(mbr_image, tmp_path)
    offset, _length = mapped.ranges[-1]
    with open(path, "r+b") as f:
        f.seek(offset)
        first = f.read(1)
        f.seek(offset)
        f.write(bytes([first[0] ^ 0xFF]))
    early = EarlyMap(path, bmap_path=bmap)
    with FileReader(path) as io:
        assert early.take(path, io, bmap_path=bmap, verified=True) is None
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    with pytest.raises(ImageError) as info:
        prepare(
            SourceSpec(path=str(path)),
            provider,
            bmap_path=str(bmap),
            one_flash=True,
            early_map=EarlyMap(path, bmap_path=bmap),
        )
    assert info.value.problem == "bmap_mismatch"
