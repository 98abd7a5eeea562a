"""A followed image's targets are flushed while the decoder still runs, not only at the end."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from flasher.events import CancelToken, Event
from flasher.writer import engine, follow
from flasher.writer.blockdev import OpenTarget, TargetKind
from flasher.writer.growing import FollowSource, Growth

MiB = 1024 * 1024
EXTENT_BYTES = 8 * MiB


def _decode_into(path: Path, growth: Growth, size: int) -> None:
    """Stand in for the decoder: write non-zero 8 MiB extents into the file and publish them."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset in range(0, size, EXTENT_BYTES):
            os.pwrite(fd, bytes([offset // EXTENT_BYTES % 251 + 1]) * EXTENT_BYTES, offset)
            growth.add([(offset, EXTENT_BYTES)])
            time.sleep(0.01)  # a decoder takes a while per extent; the writer keeps up
    finally:
        os.close(fd)
    growth.complete([(0, size)])


@pytest.mark.parametrize("extents", [3, 20])
def test_targets_are_flushed_every_flush_bytes_while_following(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extents: int
) -> None:
    size = extents * EXTENT_BYTES
    image, card = tmp_path / "image.raw", tmp_path / "card.img"
    image.write_bytes(b"")
    os.truncate(image, size)
    card.write_bytes(b"")
    os.truncate(card, size)
    flushes: list[int] = []
    real_fsync = engine.TargetJob.fsync

    def counting_fsync(job: engine.TargetJob) -> None:
        flushes.append(1)
        real_fsync(job)

    monkeypatch.setattr(engine.TargetJob, "fsync", counting_fsync)
    growth = Growth(size)
    image_fd = os.open(image, os.O_RDONLY)
    card_fd = os.open(card, os.O_RDWR)
    events: list[Event] = []
    try:
        target = OpenTarget(str(card), str(card), card_fd, TargetKind.FILE, size, 512, False)
        decoder = threading.Thread(target=_decode_into, args=(image, growth, size))
        decoder.start()
        [outcome] = follow.follow_targets(
            FollowSource(image_fd, growth),
            [target],
            chunk_bytes=4 * MiB,
            on_event=events.append,
            cancel=CancelToken(),
        )
        decoder.join()
    finally:
        os.close(image_fd)
        os.close(card_fd)
    assert outcome.ok and outcome.verified, outcome.error
    assert card.read_bytes() == image.read_bytes()
    # two flushes at the end (before and after the first MiB), plus at most one per
    # FLUSH_BYTES written while following (a batch may cross more than one boundary)
    during = len(flushes) - 2
    written_while_following = size - EXTENT_BYTES  # the last extent arrives with completion
    assert during <= written_while_following // follow.FLUSH_BYTES
    assert (during >= 1) == (written_while_following >= follow.FLUSH_BYTES + EXTENT_BYTES)
