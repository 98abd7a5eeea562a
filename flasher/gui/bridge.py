"""The one place threads meet Qt: core callables run on worker threads, their events come back
to the GUI thread as queued signals, in order, followed by exactly one `done` or `failed`.

A worker never touches a widget. It appends events to its Task's buffer; the first event after
an empty buffer posts one queued wake-up, and the GUI thread drains the buffer on its next turn.
Consecutive progress events for the same (target, phase) coalesce in the buffer (the newest wins),
so a fast writer can never flood the event loop, however slow the GUI thread is; every other
event is delivered, in order. `Relay` carries values from foreign threads (the hotplug monitor)
the same way. The thread runner is injectable.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from PySide6.QtCore import QObject, Qt, Signal

from flasher.errors import FlasherError
from flasher.events import CancelToken, Event, EventCallback, Progress

Work = Callable[[EventCallback, CancelToken], Any]


class Worker(Protocol):
    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


class Runner(Protocol):
    def start(self, work: Callable[[], None], name: str) -> Worker:
        """Run `work` soon, on some thread other than the GUI thread."""
        ...


class ThreadRunner:
    """One daemon thread per task: core calls block for minutes, so a pool buys nothing."""

    def start(self, work: Callable[[], None], name: str) -> Worker:
        thread = threading.Thread(target=work, name=name, daemon=True)
        thread.start()
        return thread


@dataclass(frozen=True)
class Failure:
    """Why a task ended without a result. `expected` is False for bugs (not a FlasherError)."""

    error: BaseException
    traceback_text: str = ""

    @property
    def expected(self) -> bool:
        return isinstance(self.error, FlasherError)


@dataclass(frozen=True)
class _End:
    result: Any = None
    failure: Failure | None = None


class Task(QObject):
    """One core call on a worker. Signals arrive on the GUI thread: `core_event` for each event,
    then `done(result)` or `failed(Failure)`, then `finished`."""

    core_event = Signal(object)
    done = Signal(object)
    failed = Signal(object)
    finished = Signal()
    _wake = Signal()

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.worker: Worker | None = None
        self.cancel_token = CancelToken()
        self._lock = threading.Lock()
        self._buffer: list[Event | _End] = []
        self._progress_slot: dict[tuple[str | None, str], int] = {}
        self.running = True
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)

    def cancel(self) -> None:
        self.cancel_token.cancel()

    def post(self, item: Event | _End) -> None:
        """Queue an event from any thread (the worker's `on_event`)."""
        with self._lock:
            wake = not self._buffer
            if isinstance(item, Progress):
                key = (item.target, item.phase.value)
                slot = self._progress_slot.get(key)
                if slot is not None:
                    self._buffer[slot] = item
                    return
                self._progress_slot[key] = len(self._buffer)
            else:
                # Progress after this event must come after it: no replacing across it.
                self._progress_slot.clear()
            self._buffer.append(item)
        if wake:
            self._wake.emit()

    def _drain(self) -> None:
        with self._lock:
            items, self._buffer = self._buffer, []
            self._progress_slot.clear()
        for item in items:
            if isinstance(item, _End):
                self.running = False
                if item.failure is not None:
                    self.failed.emit(item.failure)
                else:
                    self.done.emit(item.result)
                self.finished.emit()
            else:
                self.core_event.emit(item)


class Bridge(QObject):
    """Starts tasks on the runner and keeps each Task alive until its worker is done with it:
    a Task (and its signals) must never be deleted while a worker may still post to it."""

    def __init__(self, runner: Runner | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner: Runner = runner or ThreadRunner()
        self._tasks: set[Task] = set()
        self._stuck: list[Task] = []

    def run(self, name: str, work: Work) -> Task:
        """Start `work(on_event, cancel)` on a worker. Connect to the returned task's signals
        right away: nothing is delivered before control returns to the event loop."""
        task = Task(name)
        self._tasks.add(task)
        task.finished.connect(lambda: self._forget(task))

        def body() -> None:
            try:
                result = work(task.post, task.cancel_token)
            except BaseException as err:  # every failure reaches the GUI thread as a value
                task.post(_End(failure=Failure(err, traceback.format_exc())))
            else:
                task.post(_End(result=result))

        task.worker = self._runner.start(body, f"flasher-{name}")
        return task

    def _forget(self, task: Task) -> None:
        self._tasks.discard(task)
        task.deleteLater()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel every task and wait for the workers; a worker that does not stop in time
        keeps its Task for the rest of the process rather than posting to a deleted one."""
        self.cancel_all()
        for task in list(self._tasks):
            if task.worker is not None:
                task.worker.join(timeout_s)
            if task.worker is not None and task.worker.is_alive():
                self._stuck.append(task)
            self._tasks.discard(task)

    @property
    def busy(self) -> bool:
        return any(t.running for t in self._tasks)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class Relay(QObject):
    """A callable for foreign threads: each call becomes a queued `delivered` signal."""

    delivered = Signal(object)

    def __call__(self, value: object) -> None:
        self.delivered.emit(value)

    def connect_to(self, slot: Callable[[Any], None]) -> None:
        self.delivered.connect(slot, Qt.ConnectionType.QueuedConnection)
