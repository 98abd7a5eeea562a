"""The job's image hasher: chunk digests taken from a random-access image beside the writes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from flasher.events import CancelToken, Event, Phase, PhaseChanged
from flasher.writer import plan as plan_module
from flasher.writer import targets
from flasher.writer.blockdev import open_regular_file
from flasher.writer.chunkfeed import ImageHasher
from flasher.writer.imagesource import RandomAccessSource
from flasher.writer.plan import Chunk, ChunkDigests, WritePlan

MiB = 1024 * 1024
IMAGE_BYTES = 10 * MiB  # chunks 0-1 (the head), 1-4, 4-8 and 8-10 MiB


class _Recorded(RandomAccessSource):
    """A file source that records which chunks it was asked for, and on which thread; reads on
    the hasher's thread wait for `hasher_may_read`."""

    def __init__(self, fd: int, size_bytes: int) -> None:
        super().__init__(fd, size_bytes)
        self.hashed: list[int] = []
        self.hasher_may_read = threading.Event()
        self.hasher_may_read.set()
        self.hasher_reading = threading.Event()

    def read_into(self, buf: memoryview, chunk: Chunk) -> None:
        if threading.current_thread().name == "flasher-hash":
            self.hasher_reading.set()
            assert self.hasher_may_read.wait(10)
            self.hashed.append(chunk.offset)
        super().read_into(buf, chunk)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "image.img"
    path.write_bytes(os.urandom(IMAGE_BYTES))
    return path


def _run_to_end(hasher: ImageHasher) -> None:
    hasher._thread.join(10)
    assert not hasher._thread.is_alive()


def _expected(image: Path, plan: WritePlan) -> list[bytes]:
    data = image.read_bytes()
    return [hashlib.sha256(data[c.offset : c.end]).digest() for c in plan.chunks]


@pytest.mark.parametrize("last_first", [False, True], ids=["first-to-last", "last-to-first"])
def test_every_chunk_is_hashed_once_in_the_order_asked(image: Path, last_first: bool) -> None:
    plan = WritePlan.build(IMAGE_BYTES, None)
    digests = ChunkDigests(plan)
    with open(image, "rb") as f:
        source = _Recorded(f.fileno(), IMAGE_BYTES)
        _run_to_end(ImageHasher(source, plan, digests, last_first=last_first))
    offsets = [c.offset for c in plan.chunks]
    assert source.hashed == (offsets[::-1] if last_first else offsets)
    assert [digests.get(i) for i in range(len(plan.chunks))] == _expected(image, plan)


def test_chunks_with_a_digest_already_are_not_read_again(image: Path) -> None:
    plan = WritePlan.build(IMAGE_BYTES, None)
    digests = ChunkDigests(plan)
    digests.record(1, b"\x01" * 32)
    with open(image, "rb") as f:
        source = _Recorded(f.fileno(), IMAGE_BYTES)
        _run_to_end(ImageHasher(source, plan, digests))
    assert plan.chunks[1].offset not in source.hashed
    assert digests.get(1) == b"\x01" * 32
    assert digests.complete()


def test_stop_ends_the_thread_after_the_chunk_in_hand(image: Path) -> None:
    plan = WritePlan.build(IMAGE_BYTES, None)
    digests = ChunkDigests(plan)
    with open(image, "rb") as f:
        source = _Recorded(f.fileno(), IMAGE_BYTES)
        source.hasher_may_read.clear()
        hasher = ImageHasher(source, plan, digests)
        assert source.hasher_reading.wait(10)  # held inside its first read
        stopper = threading.Thread(target=hasher.stop)
        stopper.start()
        while not hasher._stop.is_set():
            stopper.join(0.01)
        source.hasher_may_read.set()
        stopper.join(10)
        assert not stopper.is_alive()
    assert source.hashed == [0]
    assert not digests.complete()


def test_a_short_image_ends_the_hasher_quietly_after_the_chunks_it_could_read(
    tmp_path: Path,
) -> None:
    short = tmp_path / "short.img"
    short.write_bytes(os.urandom(IMAGE_BYTES))
    plan = WritePlan.build(IMAGE_BYTES, None)
    digests = ChunkDigests(plan)
    with open(short, "rb") as f:
        source = RandomAccessSource(f.fileno(), IMAGE_BYTES)
        os.truncate(short, 6 * MiB)  # the file shrinks under the flash
        _run_to_end(ImageHasher(source, plan, digests))
    whole = [c.end <= 6 * MiB for c in plan.chunks]
    assert whole == [True, True, False, False]
    assert [digests.get(i) is not None for i in range(len(plan.chunks))] == whole


class _HeldHashlib:
    """hashlib for flasher.writer.plan whose sha256 waits, on the hasher's thread, for `go`."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.held = False

    def sha256(self, *data: bytes | memoryview) -> hashlib._Hash:
        if threading.current_thread().name == "flasher-hash":
            self.held = True
            self.go.wait(30)
        return hashlib.sha256(*data)


def test_writing_never_waits_for_the_hasher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With hashing held on the hasher's thread, the card is still written and synced: the
    writes never wait for a digest. Verifying hashes what the hasher has not, and the job's
    sha256 is the image's."""
    size = 40 * MiB  # more pieces than a target's buffers
    image = tmp_path / "image.img"
    image.write_bytes(os.urandom(size))
    plan = WritePlan.build(size, None)
    card = tmp_path / "card.img"
    target = open_regular_file(str(card), size_bytes=size, create=True)
    held = _HeldHashlib()
    monkeypatch.setattr(plan_module, "hashlib", held)
    reached: list[bool] = []

    def on_event(event: Event) -> None:
        if isinstance(event, PhaseChanged) and event.phase is Phase.VERIFYING:
            reached.append(not held.go.is_set())
            held.go.set()

    give_up = threading.Timer(10, held.go.set)  # a stalled writer ends the test, failing it
    give_up.start()
    try:
        with open(image, "rb") as f:
            (outcome,) = targets.write_targets(
                RandomAccessSource(f.fileno(), size),
                plan,
                [target],
                on_event=on_event,
                cancel=CancelToken(),
            )
    finally:
        give_up.cancel()
        held.go.set()
        target.close()
    assert held.held  # the hasher did start, and was held
    assert reached == [True]  # verifying began while the hasher was still held
    assert outcome.ok and outcome.verified, outcome.error
    assert outcome.sha256 == hashlib.sha256(b"".join(_expected(image, plan))).hexdigest()
    assert card.read_bytes() == image.read_bytes()
