"""The job's image hasher: chunk digests taken from a random-access image beside the writes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from flasher.errors import Cancelled, ImageError
from flasher.events import CancelToken, Event, Phase, PhaseChanged
from flasher.writer import chunkfeed, targets
from flasher.writer import plan as plan_module
from flasher.writer.blockdev import open_regular_file
from flasher.writer.chunkfeed import ImageHasher
from flasher.writer.imagesource import RandomAccessSource
from flasher.writer.plan import Chunk, ChunkDigests, PieceHasher, WritePlan

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
    chunks = plan.chunks[::-1] if last_first else plan.chunks
    step = chunkfeed.HASHER_READ_BYTES  # a chunk at a time, in small reads: one small buffer
    assert source.hashed == [off for c in chunks for off in range(c.offset, c.end, step)]
    assert [digests.get(i) for i in range(len(plan.chunks))] == _expected(image, plan)


def test_chunks_with_a_digest_already_are_not_read_again(image: Path) -> None:
    plan = WritePlan.build(IMAGE_BYTES, None)
    digests = ChunkDigests(plan)
    digests.record(1, b"\x01" * 32)
    with open(image, "rb") as f:
        source = _Recorded(f.fileno(), IMAGE_BYTES)
        _run_to_end(ImageHasher(source, plan, digests))
    assert not [off for off in source.hashed if plan.chunks[1].offset <= off < plan.chunks[1].end]
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
    assert [off < plan.chunks[0].end for off in source.hashed] == [True] * len(source.hashed)
    assert source.hashed[0] == 0  # the chunk it was held in, and no other
    assert not digests.complete()


def test_a_short_image_stops_the_hasher_after_the_chunks_it_could_read_and_wait_says_why(
    tmp_path: Path,
) -> None:
    short = tmp_path / "short.img"
    short.write_bytes(os.urandom(IMAGE_BYTES))
    plan = WritePlan.build(IMAGE_BYTES, None)
    digests = ChunkDigests(plan)
    with open(short, "rb") as f:
        source = RandomAccessSource(f.fileno(), IMAGE_BYTES)
        os.truncate(short, 6 * MiB)  # the file shrinks under the flash
        hasher = ImageHasher(source, plan, digests)
        with pytest.raises(ImageError, match="ended at byte"):
            hasher.wait(CancelToken())
    whole = [c.end <= 6 * MiB for c in plan.chunks]
    assert whole == [True, True, False, False]
    assert [digests.get(i) is not None for i in range(len(plan.chunks))] == whole


def test_waiting_for_the_hasher_ends_on_cancel(image: Path) -> None:
    plan = WritePlan.build(IMAGE_BYTES, None)
    cancel = CancelToken()
    with open(image, "rb") as f:
        source = _Recorded(f.fileno(), IMAGE_BYTES)
        source.hasher_may_read.clear()
        hasher = ImageHasher(source, plan, ChunkDigests(plan))
        cancel.cancel()
        with pytest.raises(Cancelled):
            hasher.wait(cancel)
        source.hasher_may_read.set()
        hasher.stop()


def test_with_many_targets_each_chunk_is_hashed_once_and_verifying_hashes_nothing(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = WritePlan.build(IMAGE_BYTES, None)
    verify_hashed: list[int] = []
    original_add = PieceHasher.add

    def add(self: PieceHasher, piece: int, data: memoryview | bytes) -> bytes | None:
        verify_hashed.append(piece)
        return original_add(self, piece, data)

    monkeypatch.setattr(PieceHasher, "add", add)
    cards = [tmp_path / f"card{n}.img" for n in range(4)]
    opened = [open_regular_file(str(c), size_bytes=IMAGE_BYTES, create=True) for c in cards]
    verifying: list[str] = []
    with open(image, "rb") as f:
        source = _Recorded(f.fileno(), IMAGE_BYTES)
        source.hasher_may_read.clear()  # until every target reads back

        def on_event(event: Event) -> None:
            if isinstance(event, PhaseChanged) and event.phase is Phase.VERIFYING:
                verifying.append(event.target or "")
                if len(verifying) == len(opened):
                    source.hasher_may_read.set()

        try:
            outcomes = targets.write_targets(
                source, plan, opened, on_event=on_event, cancel=CancelToken()
            )
        finally:
            source.hasher_may_read.set()
            for target in opened:
                target.close()
    assert len(verifying) == 4
    assert verify_hashed == []
    assert sorted(source.hashed) == list(range(0, IMAGE_BYTES, chunkfeed.HASHER_READ_BYTES))
    expected = hashlib.sha256(b"".join(_expected(image, plan))).hexdigest()
    assert [(o.ok, o.verified, o.sha256) for o in outcomes] == [(True, True, expected)] * 4


class _HeldHashlib:
    """hashlib for the writer's modules whose sha256 waits, on the hasher's thread, for `go`."""

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
    """With hashing held on the hasher's thread, the card is still written, synced and read
    back: no write waits for a digest. The target then waits for the hasher, and the job's
    sha256 is the image's."""
    size = 40 * MiB  # more pieces than a target's buffers
    image = tmp_path / "image.img"
    image.write_bytes(os.urandom(size))
    plan = WritePlan.build(size, None)
    card = tmp_path / "card.img"
    target = open_regular_file(str(card), size_bytes=size, create=True)
    held = _HeldHashlib()
    monkeypatch.setattr(chunkfeed, "hashlib", held)  # the hasher's
    monkeypatch.setattr(plan_module, "hashlib", held)  # the digests' and the read-back's
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


def test_the_hasher_runs_lower_until_a_target_has_written_everything(image: Path) -> None:
    plan = WritePlan.build(IMAGE_BYTES, None)
    with open(image, "rb") as f:
        source = _Recorded(f.fileno(), IMAGE_BYTES)
        source.hasher_may_read.clear()
        hasher = ImageHasher(source, plan, ChunkDigests(plan))
        try:
            assert source.hasher_reading.wait(10)
            before = os.getpriority(os.PRIO_PROCESS, hasher._tid)
            hasher.hurry()
            after = os.getpriority(os.PRIO_PROCESS, hasher._tid)
        finally:
            source.hasher_may_read.set()
            hasher.stop()
    assert before == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
    if os.geteuid() == 0:  # only root may lower a nice value again
        assert after == os.getpriority(os.PRIO_PROCESS, 0)
