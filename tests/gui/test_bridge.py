"""The bridge between worker threads and the GUI thread: order, exactly one ending, progress
coalescing, failures as values, and values relayed from foreign threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from PySide6.QtCore import QThread
from pytestqt.qtbot import QtBot

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.events import CancelToken, Event, EventCallback, Log, Phase, PhaseChanged, Progress
from flasher.gui.bridge import Bridge, Failure, Relay, Worker


class SynchronousRunner:
    """Runs the work at once on the calling thread, so everything is posted before the event
    loop gets a turn: the coalescing outcome is then exact, not a matter of timing."""

    def start(self, work: Callable[[], None], name: str) -> Worker:
        work()
        return threading.Thread()  # never started: not alive, join returns at once


def _collect(
    bridge: Bridge,
    qtbot: QtBot,
    work: Callable[[EventCallback, CancelToken], Any],
) -> tuple[list[Event], list[Any], list[Failure]]:
    events: list[Event] = []
    results: list[Any] = []
    failures: list[Failure] = []
    task = bridge.run("test", work)
    task.core_event.connect(events.append)
    task.done.connect(results.append)
    task.failed.connect(failures.append)
    with qtbot.waitSignal(task.finished, timeout=5000):
        pass
    return events, results, failures


def _progress(done: int, target: str | None = "/dev/a", phase: Phase = Phase.WRITING) -> Progress:
    return Progress(phase, done, 100, target=target)


def test_events_arrive_in_order_before_the_result(qtbot: QtBot) -> None:
    sent = [PhaseChanged(Phase.DOWNLOADING), Log("info", "one"), PhaseChanged(Phase.WRITING, "t")]

    def work(emit: EventCallback, _cancel: CancelToken) -> str:
        for event in sent:
            emit(event)
        return "report"

    events, results, failures = _collect(Bridge(), qtbot, work)
    assert (events, results, failures) == (sent, ["report"], [])


def test_a_flasher_error_arrives_as_an_expected_failure(qtbot: QtBot) -> None:
    def work(_emit: EventCallback, _cancel: CancelToken) -> None:
        raise ImageError("x.img", "is truncated", problem=ProblemCode.TRUNCATED)

    _events, results, failures = _collect(Bridge(), qtbot, work)
    assert results == []
    assert [(type(f.error), f.expected) for f in failures] == [(ImageError, True)]


def test_a_bug_arrives_as_an_unexpected_failure_with_its_traceback(qtbot: QtBot) -> None:
    def work(_emit: EventCallback, _cancel: CancelToken) -> None:
        raise KeyError("oops")

    _events, _results, failures = _collect(Bridge(), qtbot, work)
    assert not failures[0].expected
    assert "KeyError" in failures[0].traceback_text


def test_the_work_runs_off_the_gui_thread(qtbot: QtBot) -> None:
    gui = threading.get_ident()
    _events, results, _failures = _collect(Bridge(), qtbot, lambda _e, _c: threading.get_ident())
    assert results != [gui]


@pytest.mark.parametrize(
    ("sent", "delivered"),
    [
        ([_progress(1), _progress(2), _progress(3)], [_progress(3)]),
        (
            [_progress(1), _progress(2, "/dev/b"), _progress(3), _progress(4, "/dev/b")],
            [_progress(3), _progress(4, "/dev/b")],
        ),
        (
            [_progress(1), Log("info", "x"), _progress(2), _progress(3)],
            [_progress(1), Log("info", "x"), _progress(3)],
        ),
        (
            [_progress(1), _progress(2, phase=Phase.VERIFYING)],
            [_progress(1), _progress(2, phase=Phase.VERIFYING)],
        ),
    ],
    ids=["one_target", "two_targets", "not_across_a_log", "per_phase"],
)
def test_queued_progress_coalesces_to_the_newest(
    qtbot: QtBot, sent: list[Event], delivered: list[Event]
) -> None:
    def work(emit: EventCallback, _cancel: CancelToken) -> None:
        for event in sent:
            emit(event)

    events, _results, _failures = _collect(Bridge(SynchronousRunner()), qtbot, work)
    assert events == delivered


def test_cancel_reaches_the_work(qtbot: QtBot) -> None:
    bridge = Bridge()
    started = threading.Event()

    def work(_emit: EventCallback, cancel: CancelToken) -> bool:
        started.set()
        return cancel.wait(10)

    task = bridge.run("test", work)
    results: list[bool] = []
    task.done.connect(results.append)
    assert started.wait(5)
    with qtbot.waitSignal(task.finished, timeout=5000):
        task.cancel()
    assert results == [True]


def test_relay_delivers_on_the_gui_thread(qtbot: QtBot) -> None:
    relay = Relay()
    seen: list[tuple[object, bool]] = []
    relay.connect_to(lambda value: seen.append((value, QThread.currentThread() is relay.thread())))
    thread = threading.Thread(target=relay, args=("drive",))
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: bool(seen))
    assert seen == [("drive", True)]
