"""The first MiB goes on a target last, after the rest is flushed, from a file or a stream."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from flasher.events import CancelToken, Event
from flasher.writer import engine
from flasher.writer.blockdev import OpenTarget, TargetKind
from flasher.writer.imagesource import Overlay, RandomAccessSource, StreamSource
from flasher.writer.plan import HEAD_BYTES, WritePlan
from flasher.writer.targets import write_targets

MiB = 1024 * 1024
SIZE = 6 * MiB + 512  # a tail that is not a whole 4 KiB block


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_head_is_written_after_the_flush_of_everything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    raw = random.Random(7).randbytes(SIZE)
    image = tmp_path / "image.raw"
    image.write_bytes(raw)
    # the configured bytes: one range in the first MiB, one past it
    overlay = Overlay([(4096, b"\xaa" * 700), (3 * MiB + 10, b"\x55" * 300)])
    expected = bytearray(raw)
    for offset, data in ((4096, b"\xaa" * 700), (3 * MiB + 10, b"\x55" * 300)):
        expected[offset : offset + len(data)] = data
    cards = [tmp_path / f"card{i}.img" for i in range(3)]
    for card in cards:
        card.write_bytes(b"\x11" * SIZE)  # what the card held before

    snapshots: list[tuple[bytes, bytes]] = []  # (first MiB, the rest) of card 0 at each flush
    real_fsync = engine.TargetJob._fsync

    def watching_fsync(job: engine.TargetJob) -> None:
        real_fsync(job)
        if job.target.path == str(cards[0]):
            data = cards[0].read_bytes()
            snapshots.append((data[:HEAD_BYTES], data[HEAD_BYTES:]))

    monkeypatch.setattr(engine.TargetJob, "_fsync", watching_fsync)
    image_fd = os.open(image, os.O_RDONLY)
    fds = [os.open(card, os.O_RDWR) for card in cards]
    events: list[Event] = []
    try:
        source = (
            RandomAccessSource(image_fd, SIZE, overlay)
            if kind == "file"
            else StreamSource(io.BytesIO(raw).readinto, SIZE, overlay)
        )
        targets = [
            OpenTarget(str(card), str(card), fd, TargetKind.FILE, SIZE, 512, False)
            for card, fd in zip(cards, fds, strict=True)
        ]
        outcomes = write_targets(
            source,
            WritePlan.build(SIZE, None, chunk_bytes=4 * MiB),
            targets,
            on_event=events.append,
            cancel=CancelToken(),
        )
    finally:
        os.close(image_fd)
        for fd in fds:
            os.close(fd)
    assert all(o.ok and o.verified for o in outcomes), [o.error for o in outcomes]
    for card in cards:
        assert card.read_bytes() == bytes(expected)
    # erased, then the body durable with the first MiB still zero, then the first MiB
    assert len(snapshots) == 3
    (head0, _), (head1, body1), (head2, body2) = snapshots
    assert head0 == head1 == bytes(HEAD_BYTES)
    assert body1 == body2 == bytes(expected[HEAD_BYTES:])
    assert head2 == bytes(expected[:HEAD_BYTES])
