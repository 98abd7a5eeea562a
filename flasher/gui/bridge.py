"""The one place threads meet Qt: core callables run on worker threads, their events come back
to the GUI thread as queued signals, in order, followed by exactly one `done` or `failed`.

A worker never touches a widget. It appends events to its Task's buffer; the first event after
an empty buffer posts one queued wake-up, and the GUI thread drains the buffer on its next turn.
Progress events for the same (target, phase) coalesce in the buffer (the newest wins), so a fast
writer can never flood the event loop, however slow the GUI thread is. `Relay` carries values
from foreign threads (the hotplug monitor) the same way. The thread runner is injectable.
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


class Runner(Protocol):
    def start(self, work: Callable[[], None], name: str) -> None:
        """Run `work` soon, on some thread other than the GUI thread."""
        ...


class ThreadRunner:
    """One daemon thread per task: core calls block for minutes, so a pool buys nothing."""

    def start(self, work: Callable[[], None], name: str) -> None:
        threading.Thread(target=work, name=name, daemon=True).start()


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

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
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
    """Starts tasks on the runner and keeps them alive until they finish."""

    def __init__(self, runner: Runner | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner: Runner = runner or ThreadRunner()
        self._tasks: set[Task] = set()

    def run(self, name: str, work: Work) -> Task:
        """Start `work(on_event, cancel)` on a worker. Connect to the returned task's signals
        right away: nothing is delivered before control returns to the event loop."""
        task = Task(name, self)
        self._tasks.add(task)
        task.finished.connect(lambda: self._forget(task))

        def body() -> None:
            try:
                result = work(task.post, task.cancel_token)
            except BaseException as err:  # every failure reaches the GUI thread as a value
                task.post(_End(failure=Failure(err, traceback.format_exc())))
            else:
                task.post(_End(result=result))

        self._runner.start(body, f"flasher-{name}")
        return task

    def _forget(self, task: Task) -> None:
        self._tasks.discard(task)
        task.deleteLater()

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
