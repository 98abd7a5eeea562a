"""One writer helper serving many jobs (a bench station's cards): jobs at once, each verified;
one cancelled or refused while the others carry on; the helper killed mid-job; the session's
protocol kept strict."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flasher.drives.discovery import find_drive
from flasher.error_codes import ProblemCode
from flasher.errors import Cancelled, DriveRejected, WriterError
from flasher.events import CancelToken
from flasher.models import Drive
from flasher.writer.client import ImageFeed, TargetResult, write_image
from flasher.writer.launchers import DirectLauncher, PkexecLauncher, WriterHandle, start_helper
from flasher.writer.shared import SharedHelper
from tests.support.helper_driver import (
    HelperProcess,
    running_helpers,
    target_entry,
    write_request,
)
from tests.support.loopdev import LoopDevice, LoopDevices
from tests.support.streams import HeldStream, wait_until_written

MiB = 1024 * 1024
IMAGE_BYTES = 20 * MiB + 512
FILL = b"\x5a"
SESSION = b'{"v":2,"op":"session"}\n'


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("session") / "image.img"
    path.write_bytes(random.Random(23).randbytes(IMAGE_BYTES))
    return path, path.read_bytes()


def _drive(loop: LoopDevice) -> Drive:
    drive = find_drive(loop.path)
    assert drive is not None
    return drive


def _held_feed(raw: bytes, release: threading.Event) -> ImageFeed:
    return ImageFeed.from_stream(
        lambda: io.BufferedReader(HeldStream(raw, 12 * MiB, release)), len(raw)
    )


def _when_written(loop: LoopDevice, raw: bytes, then: Callable[[], None]) -> threading.Thread:
    """A thread that runs `then` once part of the body is on `loop`."""

    def watch() -> None:
        wait_until_written(loop, raw, 30)
        then()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def _jobs_at_once(jobs: list[Callable[[], TargetResult]]) -> list[TargetResult]:
    results: list[TargetResult | None] = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _one(feed: ImageFeed, loop: LoopDevice, shared: SharedHelper, **kw: Any) -> TargetResult:
    (result,) = write_image(feed, [_drive(loop)], launcher=shared, **kw)
    return result


@pytest.mark.root
def test_several_jobs_at_once_share_one_helper_and_each_is_verified(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, raw = image
    cards = [loops.create(24 * MiB, fill=FILL) for _ in range(3)]
    shared = SharedHelper(DirectLauncher())
    try:
        feed = ImageFeed.from_file(path)
        results = _jobs_at_once([lambda c=c: _one(feed, c, shared) for c in cards])
    finally:
        shared.close()
    assert shared.started == 1
    for result, card in zip(results, cards, strict=True):
        assert result.ok and result.verified, result.error
        assert card.read(0, IMAGE_BYTES) == raw
    assert len({r.sha256 for r in results}) == 1


@pytest.mark.root
def test_cancelling_one_job_leaves_the_other_to_finish_verified(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, raw = image
    slow, other = loops.create(24 * MiB, fill=FILL), loops.create(24 * MiB, fill=FILL)
    release, cancel = threading.Event(), CancelToken()
    shared = SharedHelper(DirectLauncher())

    def cancel_slow() -> None:
        cancel.cancel()
        release.set()

    watcher = _when_written(slow, raw, cancel_slow)
    try:
        cancelled, finished = _jobs_at_once(
            [
                lambda: _one(_held_feed(raw, release), slow, shared, cancel=cancel),
                lambda: _one(ImageFeed.from_file(path), other, shared),
            ]
        )
    finally:
        watcher.join()
        shared.close()
    assert isinstance(cancelled.error, Cancelled), cancelled.error
    assert slow.read(0, MiB) == bytes(MiB)  # left unbootable
    assert finished.ok and finished.verified, finished.error
    assert other.read(0, IMAGE_BYTES) == raw
    assert shared.started == 1


@pytest.mark.root
def test_a_refused_target_does_not_disturb_the_other_jobs(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, raw = image
    locked = loops.create(24 * MiB, fill=FILL, read_only=True)
    good = [loops.create(24 * MiB, fill=FILL) for _ in range(2)]
    shared = SharedHelper(DirectLauncher())
    feed = ImageFeed.from_file(path)
    try:
        refused, *written = _jobs_at_once(
            [lambda c=c: _one(feed, c, shared) for c in [locked, *good]]
        )
    finally:
        shared.close()
    assert isinstance(refused.error, DriveRejected), refused.error
    assert refused.error.problem == ProblemCode.READ_ONLY
    assert locked.read(0, MiB) == FILL * MiB
    for result, card in zip(written, good, strict=True):
        assert result.ok and result.verified, result.error
        assert card.read(0, IMAGE_BYTES) == raw


@pytest.mark.root
def test_a_killed_helper_fails_its_cards_and_the_next_card_gets_a_new_one(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, raw = image
    first, second, later = (loops.create(24 * MiB, fill=FILL) for _ in range(3))
    release = threading.Event()
    shared = SharedHelper(DirectLauncher())

    def kill_helper() -> None:
        (helper,) = running_helpers()
        helper.send_signal(signal.SIGKILL)
        release.set()

    watcher = _when_written(first, raw, kill_helper)
    try:
        lost = _jobs_at_once(
            [
                lambda: _one(_held_feed(raw, release), first, shared),
                lambda: _one(_held_feed(raw, release), second, shared),
            ]
        )
        watcher.join()
        after = _one(ImageFeed.from_file(path), later, shared)
    finally:
        shared.close()
    for result in lost:
        assert isinstance(result.error, WriterError), result.error
        assert result.error.code == "writer"
        assert f"exit code {-signal.SIGKILL}" in result.error.message
    assert after.ok and after.verified, after.error
    assert later.read(0, IMAGE_BYTES) == raw
    assert shared.started == 2
    assert running_helpers() == []  # closing the station's helper ends it


@pytest.mark.root
def test_a_helper_started_soon_serves_the_first_job(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, raw = image
    card = loops.create(24 * MiB, fill=FILL)
    shared = SharedHelper(DirectLauncher())
    shared.start_soon()
    try:
        assert _wait_for(lambda: len(running_helpers()) == 1)  # before any job asked
        result = _one(ImageFeed.from_file(path), card, shared)
    finally:
        shared.close()
    assert result.ok and result.verified, result.error
    assert card.read(0, IMAGE_BYTES) == raw
    assert shared.started == 1 and running_helpers() == []


@pytest.mark.root
def test_a_helper_that_cannot_start_soon_leaves_the_error_to_the_job(
    loops: LoopDevices, image: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _raw = image
    card = loops.create(24 * MiB, fill=FILL)
    shared = SharedHelper(PkexecLauncher(helper_path=str(tmp_path / "no-helper")))
    shared.start_soon()  # does not raise
    try:
        with pytest.raises(WriterError, match="not installed"):
            _one(ImageFeed.from_file(path), card, shared)
    finally:
        shared.close()
    assert card.read(0, 4096) == FILL * 4096


def _wait_for(condition: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.root
def test_closing_the_session_stops_the_helper(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, _raw = image
    card = loops.create(24 * MiB, fill=FILL)
    shared = SharedHelper(DirectLauncher())
    assert _one(ImageFeed.from_file(path), card, shared).ok
    (helper,) = running_helpers()
    shared.close()
    assert not helper.is_running()
    with pytest.raises(WriterError, match="stopped"):
        _one(ImageFeed.from_file(path), card, shared)


# -- the session's protocol, against the real helper --------------------------------------


def _session() -> HelperProcess:
    helper = HelperProcess()
    helper.send(SESSION)
    return helper


def _attach(helper: HelperProcess, conn: int) -> socket.socket:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    helper.send(f'{{"op":"attach","conn":{conn}}}\n'.encode(), [theirs.fileno()])
    theirs.close()
    return ours


def _events(sock: socket.socket) -> list[dict[str, Any]]:
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def _session_error(helper: HelperProcess) -> str:
    """The message of the `end` that closed the session (skipping job exits)."""
    while (event := helper.event()) is not None:
        if event["event"] == "end":
            assert event["ok"] is False
            message: str = event["error"]["message"]
            # Then only the exits of jobs it stopped, and the helper closes the session.
            while (rest := helper.event()) is not None:
                assert rest["event"] == "job_exit", rest
            return message
    raise AssertionError("the session ended without an error")


@pytest.mark.root
def test_jobs_on_one_session_run_on_their_own_connections(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, raw = image
    cards = [loops.create(24 * MiB, fill=FILL) for _ in range(2)]
    helper = _session()
    socks = [_attach(helper, conn) for conn in (1, 2)]
    for sock, card in zip(socks, cards, strict=True):
        assert json.loads(sock.recv(1024)) == {"event": "hello", "v": 2}
        fd = os.open(path, os.O_RDONLY)
        line = json.dumps(
            write_request([target_entry(card.path, card.dev, card.size_bytes)], IMAGE_BYTES)
        )
        socket.send_fds(sock, [(line + "\n").encode()], [fd])
        os.close(fd)
    for sock, card in zip(socks, cards, strict=True):
        events = _events(sock)
        assert events[-1] == {"event": "end", "ok": True}
        assert [e["event"] for e in events].count("target_done") == 1
        assert card.read(0, IMAGE_BYTES) == raw
    exits = sorted((helper.event() or {}).get("conn", 0) for _ in range(2))
    assert exits == [1, 2]
    assert helper.finish()[0] == 0


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([(b'{"op":"attach","conn":2}\n', 1), (b'{"op":"attach","conn":2}\n', 1)], "already"),
        ([(b'{"op":"attach","conn":3}\n', 1), (b'{"op":"attach","conn":1}\n', 1)], "already"),
        ([(b'{"op":"attach","conn":0}\n', 1)], ">= 1"),
        ([(b'{"op":"attach","conn":1,"job":1}\n', 1)], "unknown field"),
        ([(b'{"op":"cancel","conn":1}\n', 1)], "unknown session op"),
        ([(b'{"op":"attach","conn":1}\n', 0)], "exactly one socket"),
        ([(b'{"op":"attach","conn":1}\n', 2)], "exactly one socket"),
        ([(b'{"op":"attach","conn":"1"}\n', 1)], "integer"),
    ],
    ids=["repeated", "decreasing", "zero", "extra-field", "unknown-op", "no-fd", "two-fds", "text"],
)
def test_the_session_ends_on_a_bad_control_line(
    lines: list[tuple[bytes, int]], message: str
) -> None:
    helper = _session()
    kept: list[socket.socket] = []
    for line, fd_count in lines:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(fd_count)]
        helper.send(line, [theirs.fileno() for _ours, theirs in pairs])
        for ours, theirs in pairs:
            theirs.close()
            kept.append(ours)
    assert message in _session_error(helper)
    assert helper.finish()[0] != 0
    for sock in kept:
        sock.close()


def test_an_attached_descriptor_must_be_a_unix_stream_socket() -> None:
    helper = _session()
    read_end, write_end = os.pipe()
    helper.send(b'{"op":"attach","conn":1}\n', [read_end])
    os.close(read_end)
    os.close(write_end)
    assert "must be a socket" in _session_error(helper)
    helper.finish()


def test_a_session_cannot_be_opened_on_a_job_connection() -> None:
    helper = _session()
    sock = _attach(helper, 1)
    assert json.loads(sock.recv(1024))["event"] == "hello"
    sock.sendall(SESSION)
    (end,) = _events(sock)
    assert end["event"] == "end" and "unknown op 'session'" in end["error"]["message"]
    assert helper.event() == {"event": "job_exit", "conn": 1, "code": 2}
    helper.finish()


class _FakeHelper:
    """A helper stand-in that answers an attach with an exit for a connection never opened."""

    def launch(self, sock: socket.socket) -> WriterHandle:
        def serve() -> None:
            with sock:
                sock.sendall(b'{"event":"hello","v":2}\n')
                data = b""
                while data.count(b"\n") < 2:
                    data += sock.recv(1024)
                sock.sendall(b'{"event":"job_exit","conn":7,"code":0}\n')
                sock.recv(1024)

        thread = threading.Thread(target=serve)
        thread.start()
        return _ThreadHandle(thread)


class _ThreadHandle:
    def __init__(self, thread: threading.Thread) -> None:
        self._thread = thread

    def wait(self) -> int:
        self._thread.join()
        return 0

    def diagnostics(self) -> str:
        return ""


def test_the_client_rejects_an_exit_for_a_connection_it_never_opened() -> None:
    shared = SharedHelper(_FakeHelper())
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    handle = shared.launch(theirs)
    handle.wait()
    assert "job connection 7, which is not open" in handle.diagnostics()
    ours.close()
    shared.close()


class _CountingLauncher:
    """A DirectLauncher that counts the helpers it starts."""

    def __init__(self) -> None:
        self.launched = 0

    def launch(self, sock: socket.socket) -> WriterHandle:
        self.launched += 1
        return DirectLauncher().launch(sock)


@pytest.mark.root
def test_a_helper_started_ahead_serves_the_first_job_and_no_other_starts(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    """`flash` as root starts its helper before the rest of it loads (start_helper) and hands
    it over: the job runs on that process, greeted then, with no second helper."""
    path, raw = image
    card = loops.create(24 * MiB, fill=FILL)
    launcher = _CountingLauncher()
    started = start_helper(launcher)
    (ahead,) = running_helpers()
    shared = SharedHelper(launcher, running=started)
    try:
        result = _one(ImageFeed.from_file(path), card, shared)
        assert [p.pid for p in running_helpers()] == [ahead.pid]
    finally:
        shared.close()
    assert result.ok and result.verified, result.error
    assert card.read(0, IMAGE_BYTES) == raw
    assert launcher.launched == 1 and shared.started == 1
    assert running_helpers() == []


@pytest.mark.root
def test_a_helper_started_ahead_and_never_used_ends_when_the_station_closes() -> None:
    shared = SharedHelper(DirectLauncher(), running=start_helper(DirectLauncher()))
    assert len(running_helpers()) == 1
    shared.close()
    assert running_helpers() == []
    assert shared.started == 0
