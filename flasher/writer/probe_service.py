"""The writer protocol's "probe" operation: request and result on the wire, and the helper's
side of it.

Standard library plus flasher.errors, flasher.events and flasher.writer modules only (the root
helper imports it).

After the helper's hello, the client sends one line (no file descriptors):
```
{"v":2,"op":"probe","targets":[{"path":"/dev/sdb","dev":"8:16","size":…,"serial":"…"}],
 "options":{"positions":64,"restore":true}}
```
Each target is opened through the same policy, with the same checks, as a write (whole-disk
block device whose identity still matches, unmounted, opened exclusively with O_DIRECT). The
helper answers with `progress` events (phase "checking"), then per target exactly one
`probe_result` or `target_error`, then `end`. The nonce is the helper's own.
`probe_result`: `{"event":"probe_result","target","advertised_bytes","real_bytes","positions",
"bad_positions","wrapped","restored","seconds"}`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flasher.errors import Cancelled, FlasherError
from flasher.events import CancelToken, Phase
from flasher.writer.blockdev import TargetPolicy
from flasher.writer.framing import LineReader
from flasher.writer.probe import (
    DEFAULT_POSITIONS,
    MAX_POSITIONS,
    MIN_POSITIONS,
    CapacityReport,
    FdSectorIO,
    SectorIO,
    probe_capacity,
)
from flasher.writer.protocol import (
    MAX_EVENT_BYTES,
    PROTOCOL_VERSION,
    JobEnd,
    LogEvent,
    ProgressEvent,
    TargetError,
    TargetSpec,
    WireEvent,
    decode_event,
    encode_event,
)
from flasher.writer.strictjson import Fields, fail, loads

PROBE_OP = "probe"
MAX_PROBE_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class ProbeRequest:
    targets: tuple[TargetSpec, ...]
    positions: int = DEFAULT_POSITIONS
    restore: bool = True


@dataclass(frozen=True)
class ProbeResult:
    target: str
    report: CapacityReport


def encode_probe_request(request: ProbeRequest) -> bytes:
    data = {
        "v": PROTOCOL_VERSION,
        "op": PROBE_OP,
        "targets": [
            {"path": t.path, "dev": t.dev, "size": t.size_bytes, "serial": t.serial}
            for t in request.targets
        ],
        "options": {"positions": request.positions, "restore": request.restore},
    }
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def is_probe_request(line: bytes) -> bool:
    """Whether a request line asks for the probe (anything else is left to decode_request)."""
    try:
        return json.loads(line.decode("utf-8")).get("op") == PROBE_OP  # type: ignore[no-any-return]
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return False


def decode_probe_request(line: bytes) -> ProbeRequest:
    top = Fields(loads(line, MAX_PROBE_REQUEST_BYTES), "request")
    if top.integer("v") != PROTOCOL_VERSION:
        fail(f"request version {top.data.get('v')}, this helper speaks {PROTOCOL_VERSION}")
    if top.text("op") != PROBE_OP:
        fail("not a probe request")
    raw = top.value("targets")
    if not isinstance(raw, list) or not 0 < len(raw) <= 64:
        fail("request.targets must list 1 to 64 targets")
    targets: list[TargetSpec] = []
    for i, item in enumerate(raw):
        f = Fields(item, f"request.targets[{i}]")
        spec = TargetSpec(
            f.text("path") or "",
            f.text("dev") or "",
            f.integer("size", minimum=1),
            f.text("serial") or "",
        )
        f.done()
        if not spec.path.startswith("/") or "\0" in spec.path:
            fail(f"request.targets[{i}].path must be an absolute path")
        if any(t.path == spec.path for t in targets):
            fail(f"target {spec.path} is listed twice")
        targets.append(spec)
    opts = Fields(top.value("options"), "request.options")
    positions = opts.integer("positions", minimum=MIN_POSITIONS)
    if positions > MAX_POSITIONS:
        fail(f"request.options.positions must be at most {MAX_POSITIONS}")
    restore = opts.flag("restore", default=True)
    opts.done()
    top.done()
    return ProbeRequest(tuple(targets), positions, restore)


def encode_probe_result(result: ProbeResult) -> bytes:
    r = result.report
    data = {
        "event": "probe_result",
        "target": result.target,
        "advertised_bytes": r.advertised_bytes,
        "real_bytes": r.real_bytes,
        "positions": r.positions,
        "bad_positions": r.bad_positions,
        "wrapped": r.wrapped,
        "restored": r.restored,
        "seconds": round(r.seconds, 3),
    }
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def decode_probe_event(line: bytes) -> WireEvent | ProbeResult:
    """A `probe_result`, or any other event of the protocol (strictly, as decode_event)."""
    data = loads(line, MAX_EVENT_BYTES)
    if data.get("event") != "probe_result":
        return decode_event(line)
    f = Fields(data, "probe_result")
    f.text("event")
    target = f.text("target") or ""
    report = CapacityReport(
        advertised_bytes=f.integer("advertised_bytes"),
        real_bytes=f.integer("real_bytes"),
        positions=f.integer("positions"),
        bad_positions=f.integer("bad_positions"),
        wrapped=f.flag("wrapped", default=False),
        restored=f.flag("restored", default=False),
        seconds=f.number("seconds"),
    )
    f.done()
    return ProbeResult(target, report)


SectorOpener = Callable[[TargetSpec, Callable[[str], None]], SectorIO]


def _sector_opener(policy: TargetPolicy) -> SectorOpener:
    """The target opened by the policy, with every check a write gets. A test policy may
    emulate a fake card's sectors (`open_sectors`); the production policy has no such hook."""
    custom: SectorOpener | None = getattr(policy, "open_sectors", None)
    if custom is not None:
        return custom
    return lambda spec, log: FdSectorIO(policy.open_target(spec, log))


class _Sender:
    def __init__(self, sock: socket.socket, cancel: CancelToken) -> None:
        self._sock = sock
        self._cancel = cancel
        self._lock = threading.Lock()

    def line(self, data: bytes) -> None:
        with self._lock:
            try:
                self._sock.sendall(data)
            except OSError:
                self._cancel.cancel()

    def event(self, event: WireEvent) -> None:
        self.line(encode_event(event))


def _probe_one(
    spec: TargetSpec,
    request: ProbeRequest,
    policy: TargetPolicy,
    send: _Sender,
    cancel: CancelToken,
) -> None:
    def log(message: str) -> None:
        send.event(LogEvent("info", message, spec.path))

    def progress(done: int, total: int) -> None:
        send.event(ProgressEvent(spec.path, Phase.CHECKING, done, total))

    io: SectorIO | None = None
    try:
        io = _sector_opener(policy)(spec, log)
        report = probe_capacity(
            io,
            positions=request.positions,
            restore=request.restore,
            on_progress=progress,
            cancel=cancel,
        )
        send.line(encode_probe_result(ProbeResult(spec.path, report)))
    except FlasherError as err:
        send.event(TargetError(spec.path, err))
    except OSError as err:
        send.event(
            TargetError(spec.path, FlasherError(f"{spec.path} cannot be probed: {err.strerror}."))
        )
    finally:
        if io is not None:
            io.close()


def serve_probe(
    sock: socket.socket, reader: LineReader, line: bytes, policy: TargetPolicy, cancel: CancelToken
) -> bool:
    """Serve a probe request (after hello); True when every target was probed."""
    send = _Sender(sock, cancel)
    request = decode_probe_request(line)

    def watch() -> None:
        with contextlib.suppress(OSError, FlasherError):
            reader.read_line(MAX_EVENT_BYTES)
        cancel.cancel()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ok = True
    for spec in request.targets:
        if cancel.cancelled:
            send.event(TargetError(spec.path, Cancelled()))
            ok = False
            continue
        _probe_one(spec, request, policy, send, cancel)
    ok = ok and not cancel.cancelled
    send.event(JobEnd(ok))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    watcher.join()
    return ok


def report_fields(report: CapacityReport) -> dict[str, Any]:
    """The JSON-ready form shown by `flasher drives check` and kept in bench reports."""
    return {
        "advertised_bytes": report.advertised_bytes,
        "real_bytes": report.real_bytes,
        "ok": report.ok,
        "positions": report.positions,
        "bad_positions": report.bad_positions,
        "wrapped": report.wrapped,
        "restored": report.restored,
        "seconds": round(report.seconds, 3),
    }
