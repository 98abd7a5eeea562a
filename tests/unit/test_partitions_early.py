"""Reading an image's identity from the start of the disk only, as while it is still decoded:
`read_partition_table(early=True)` and the boot partition probed in order never read past the
boot partition (real balenaOS-layout images, MBR with logical partitions and GPT)."""

from __future__ import annotations

import pytest

from flasher.image.byteio import FileReader
from flasher.image.inspection import read_identity_at, read_image_identity
from flasher.image.partitions import read_partition_table
from tests.conftest import ImageFactory


class DecodedSoFar:
    """A reader of the image's first `limit` bytes; reading further fails the test (a decoding
    image would wait there, for the rest of the stream)."""

    def __init__(self, io: FileReader, limit: int) -> None:
        self._io = io
        self._limit = limit

    @property
    def size(self) -> int:
        return self._io.size

    def pread(self, length: int, offset: int) -> bytes:
        assert offset + length <= self._limit, f"read at {offset}+{length} past {self._limit}"
        return self._io.pread(length, offset)


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_the_identity_comes_from_the_start_of_the_disk(
    image_factory: ImageFactory, scheme: str
) -> None:
    image = image_factory(scheme=scheme)
    boot_end = image.boot_offset + image.boot_size
    with FileReader(image.path) as io:
        early_io = DecodedSoFar(io, boot_end)
        table = read_partition_table(early_io, name="image", early=True)
        identity = read_identity_at(early_io, name="image", table=table)
    assert identity == read_image_identity(image.path)


def test_an_early_mbr_table_holds_the_primary_entries_only(image_factory: ImageFactory) -> None:
    image = image_factory(scheme="mbr")
    with FileReader(image.path) as io:
        full = read_partition_table(io, name="image")
        early = read_partition_table(io, name="image", early=True)
    assert any(p.number > 4 for p in full.partitions)  # the image has logical partitions
    assert early.partitions == tuple(p for p in full.partitions if p.number <= 4)
