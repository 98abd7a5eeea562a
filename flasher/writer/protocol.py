"""The writer protocol (version 2): one JSON-lines request per job, JSON-lines events back.

Standard library plus flasher.errors, flasher.error_codes and flasher.events only (the root
helper imports it).

Transport: a SOCK_STREAM unix socketpair; the helper gets its end as stdin (fd 0).

1. The helper sends `{"event":"hello","v":2}` as soon as it starts.
2. The client sends ONE request line. The file descriptors travel with its first bytes
   (SCM_RIGHTS), in this order:
   - fd 0: the image. `image.source == "fd"`: a read-only regular file (or memfd) holding the
     base image, read at any offset; `"stream"`: the read end of a pipe carrying exactly
     `image.size` bytes in order (a decompressed source); `"follow"`: a read-only regular file
     a decoder is still filling (flasher.writer.growing), `ranges` null.
   - fd 1, only when `overlay` is non-empty: a memfd holding the overlay bytes, the ranges'
     bytes concatenated in order. Overlay ranges replace base (or stream) bytes.
   - last, only for `"follow"`: the read end of a pipe saying which extents of the file hold
     data so far and, once the stream has ended intact, the allocation map.
   ```
   {"v":2,"op":"write"|"verify",
    "targets":[{"path":"/dev/sdb","dev":"8:16","size":31914983424,"serial":"…",
                "allow_internal":false}],           # true only for a separately confirmed disk
    "image":{"size":1073741824,"source":"fd"|"stream"|"follow","sha256":null},
    "ranges":[[0,4194304],…] | null,        # allocation map; null = the whole image
    "scrub":[[331354112,16773120],…],       # journal bodies to scan, not write (see below)
    "overlay":[[4194304,16384],…],          # replaced byte ranges, bytes in the memfd
    "options":{"verify":true,"write_all":false,"chunk_bytes":4194304}}
   ```
3. Events, one JSON object per line: `phase`, `progress` (per target: done/total bytes), `log`,
   then exactly one terminal event per target, `target_done` or `target_error`, then `end`.
   A job-level failure (bad request) is `end` with an `error`.
4. Cancel: the client shuts down its sending side (or just goes away). The helper treats EOF on
   the socket as cancel, zeroes the first MiB of each unfinished target, and still reports.

`scrub` (optional, default empty) lists byte ranges whose content nothing reads before writing it
and the map leaves out (the bodies of clean ext3/4 journals): whole 4 KiB blocks, sorted, disjoint
from each other and from `ranges`, and only with a map (`ranges` not null, not `write_all`, op
`write`). Each target's scrub ranges are read back before its first MiB is written, and any 4 KiB
block holding the jbd2 magic is zeroed (flasher.writer.scrub); `target_done` reports `scanned_bytes`
and `zeroed_blocks`, and its `bytes_written` counts the zeroed blocks. A followed image's scrub
ranges come with its `ranges` on the growth pipe.

Version 2 adds the session (flasher.writer.sessionwire): instead of a request, the first line
may ask the helper to serve many such jobs, each on a connection of its own handed over the
first one, with one helper process for a whole bench station. The job requests and events
themselves are unchanged from version 1.

`target_done.sha256` is the sha256 of the concatenated per-chunk sha256 digests of the written
bytes, with chunks cut at multiples of `chunk_bytes` (and at the 1 MiB head boundary): the
same value for the source and for the verified read-back, computed with one hashing pass. It is
null when the job did not verify (nothing is hashed then, so writing runs at device speed).
Error `code`s are a closed set, one per FlasherError class the helper can raise; an error is
`{code, message, hint?, action?, details?}` with the class's typed details, and
`error_from_wire` rebuilds the typed error from it (the one place that decodes errors).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flasher.error_codes import Action
from flasher.errors import (
    Cancelled,
    DriveError,
    DriveGone,
    DriveRejected,
    FlasherError,
    ImageError,
    VerificationFailed,
    WriteFailed,
    WriterError,
    WriterProtocolError,
)
from flasher.events import Phase
from flasher.writer.scrub import check_scrub
from flasher.writer.strictjson import Fields, fail, loads, ranges_field

PROTOCOL_VERSION = 2
MiB = 1024 * 1024
MAX_REQUEST_BYTES = 16 * MiB  # an allocation map of ~500k ranges
MAX_EVENT_BYTES = 64 * 1024
MAX_OVERLAY_BYTES = 256 * MiB
MAX_TARGETS = 64
MAX_PATH_BYTES = 4095  # PATH_MAX less the terminating NUL
MAX_SERIAL_CHARS = 256
DEFAULT_CHUNK_BYTES = 4 * MiB
MIN_CHUNK_BYTES = 1 * MiB
MAX_CHUNK_BYTES = 64 * MiB

WIRE_ERRORS: dict[str, type[FlasherError]] = {
    cls.code.value: cls
    for cls in (
        DriveError,
        DriveRejected,
        DriveGone,
        WriterError,
        WriterProtocolError,
        WriteFailed,
        VerificationFailed,
        Cancelled,
        ImageError,
    )
}

_DEV_RE = re.compile(r"^[0-9]{1,10}:[0-9]{1,10}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class Op(enum.StrEnum):
    WRITE = "write"
    VERIFY = "verify"


class SourceKind(enum.StrEnum):
    FD = "fd"
    STREAM = "stream"
    FOLLOW = "follow"  # a file still being decoded, and a pipe saying what is in it


@dataclass(frozen=True)
class TargetSpec:
    """A target as the person confirmed it: the helper re-checks every field."""

    path: str
    dev: str
    size_bytes: int
    serial: str = ""
    allow_internal: bool = False  # a fixed internal disk the person confirmed on its own


@dataclass(frozen=True)
class ImageSpec:
    size_bytes: int
    source: SourceKind = SourceKind.FD
    sha256: str | None = None


@dataclass(frozen=True)
class WriteOptions:
    verify: bool = True
    write_all: bool = False
    chunk_bytes: int = DEFAULT_CHUNK_BYTES


Range = tuple[int, int]


@dataclass(frozen=True)
class WriteRequest:
    targets: tuple[TargetSpec, ...]
    image: ImageSpec
    ranges: tuple[Range, ...] | None = None
    overlay: tuple[Range, ...] = ()
    options: WriteOptions = WriteOptions()
    op: Op = Op.WRITE
    scrub: tuple[Range, ...] = ()

    @property
    def fd_count(self) -> int:
        return (2 if self.overlay else 1) + (self.image.source is SourceKind.FOLLOW)

    @property
    def overlay_bytes(self) -> int:
        return sum(length for _off, length in self.overlay)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    v: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class PhaseEvent:
    target: str
    phase: Phase


@dataclass(frozen=True)
class ProgressEvent:
    target: str
    phase: Phase
    done_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class LogEvent:
    level: str
    message: str
    target: str | None = None


@dataclass(frozen=True)
class TargetDone:
    target: str
    bytes_written: int
    sha256: str | None
    verified: bool
    seconds: float
    scanned_bytes: int = 0
    zeroed_blocks: int = 0


@dataclass(frozen=True)
class TargetError:
    target: str
    error: FlasherError


@dataclass(frozen=True)
class JobEnd:
    ok: bool
    error: FlasherError | None = None


WireEvent = Hello | PhaseEvent | ProgressEvent | LogEvent | TargetDone | TargetError | JobEnd
LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})


# -- requests ---------------------------------------------------------------------------------


def encode_request(request: WriteRequest) -> bytes:
    data = {
        "v": PROTOCOL_VERSION,
        "op": request.op.value,
        "targets": [
            {
                "path": t.path,
                "dev": t.dev,
                "size": t.size_bytes,
                "serial": t.serial,
                "allow_internal": t.allow_internal,
            }
            for t in request.targets
        ],
        "image": {
            "size": request.image.size_bytes,
            "source": request.image.source.value,
            "sha256": request.image.sha256,
        },
        "ranges": None if request.ranges is None else [list(r) for r in request.ranges],
        "overlay": [list(r) for r in request.overlay],
        "scrub": [list(r) for r in request.scrub],
        "options": {
            "verify": request.options.verify,
            "write_all": request.options.write_all,
            "chunk_bytes": request.options.chunk_bytes,
        },
    }
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def decode_request(line: bytes) -> WriteRequest:
    """Parse and validate one request line; WriterProtocolError names the first problem."""
    top = Fields(loads(line, MAX_REQUEST_BYTES), "request")
    version = top.integer("v")
    if version != PROTOCOL_VERSION:
        fail(f"request version {version}, this helper speaks {PROTOCOL_VERSION}")
    op_name = top.text("op")
    if op_name not in {o.value for o in Op}:
        fail(f"unknown op {op_name!r}")
    image_f = Fields(top.value("image"), "request.image")
    size_bytes = image_f.integer("size", minimum=1)
    source = image_f.text("source")
    if source not in {s.value for s in SourceKind}:
        fail(f"request.image.source must be 'fd', 'stream' or 'follow', not {source!r}")
    sha = image_f.text("sha256", required=False, nullable=True)
    if sha is not None and not _SHA256_RE.match(sha):
        fail("request.image.sha256 must be 64 lowercase hex digits")
    image_f.done()
    targets_raw = top.value("targets")
    if not isinstance(targets_raw, list) or not 0 < len(targets_raw) <= MAX_TARGETS:
        fail(f"request.targets must list 1 to {MAX_TARGETS} targets")
    targets: list[TargetSpec] = []
    for i, raw in enumerate(targets_raw):
        f = Fields(raw, f"request.targets[{i}]")
        path = f.text("path") or ""
        dev = f.text("dev") or ""
        if not path.startswith("/") or "\0" in path:
            fail(f"request.targets[{i}].path must be an absolute path")
        if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
            fail(f"request.targets[{i}].path is longer than {MAX_PATH_BYTES} bytes")
        if dev and not _DEV_RE.match(dev):
            fail(f"request.targets[{i}].dev must look like 'major:minor'")
        serial = f.text("serial") or ""
        if len(serial) > MAX_SERIAL_CHARS:
            fail(f"request.targets[{i}].serial is longer than {MAX_SERIAL_CHARS} characters")
        spec = TargetSpec(
            path,
            dev,
            f.integer("size", minimum=1),
            serial,
            allow_internal=f.flag("allow_internal", default=False),
        )
        f.done()
        if any(t.path == spec.path or (spec.dev and t.dev == spec.dev) for t in targets):
            fail(f"target {spec.path} is listed twice")
        targets.append(spec)
    ranges_raw = top.value("ranges", required=False)
    ranges = None if ranges_raw is None else ranges_field(ranges_raw, "request.ranges", size_bytes)
    overlay = ranges_field(top.value("overlay"), "request.overlay", size_bytes)
    scrub = ranges_field(top.value("scrub", required=False) or [], "request.scrub", size_bytes)
    opts = Fields(top.value("options"), "request.options")
    chunk_bytes = opts.integer("chunk_bytes", minimum=MIN_CHUNK_BYTES)
    if chunk_bytes > MAX_CHUNK_BYTES or chunk_bytes % MIN_CHUNK_BYTES:
        fail("request.options.chunk_bytes must be a whole number of MiB, at most 64 MiB")
    options = WriteOptions(
        verify=opts.flag("verify", default=True),
        write_all=opts.flag("write_all", default=False),
        chunk_bytes=chunk_bytes,
    )
    opts.done()
    top.done()
    request = WriteRequest(
        targets=tuple(targets),
        image=ImageSpec(size_bytes, SourceKind(source), sha),
        ranges=ranges,
        overlay=overlay,
        options=options,
        op=Op(op_name),
        scrub=scrub,
    )
    check_scrub(scrub, ranges, "request.scrub", write_all=options.write_all)
    if scrub and request.op is not Op.WRITE:
        fail("request.scrub is only for writing")
    if request.overlay_bytes > MAX_OVERLAY_BYTES:
        fail(f"the overlay is larger than {MAX_OVERLAY_BYTES} bytes")
    if request.op is Op.VERIFY and request.image.source is not SourceKind.FD:
        fail("verify needs a random-access image (source 'fd')")
    if request.image.source is SourceKind.FOLLOW and (
        request.ranges is not None or request.options.write_all
    ):
        fail("a followed image gets its ranges when it is complete, not in the request")
    return request


# -- errors -----------------------------------------------------------------------------------


def error_to_wire(err: FlasherError) -> dict[str, Any]:
    out = err.to_dict()
    if err.action is not None:
        out["action"] = err.action.value
    if out["code"] not in WIRE_ERRORS:
        # Keep the set closed: anything else travels as the nearest writer error.
        out["code"] = WriterError.code.value
        details = {k: v for k, v in out.pop("details", {}).items() if k in WriterError.detail_names}
        if details:
            out["details"] = details
    return out


def error_from_wire(data: Any, where: str = "error") -> FlasherError:
    """The typed error a `to_dict()` (plus its action) described: the one decoder of errors."""
    f = Fields(data, where)
    code = f.text("code") or ""
    message = f.text("message") or ""
    hint = f.text("hint", required=False)
    action_name = f.text("action", required=False)
    details = f.value("details", required=False) or {}
    f.done()
    cls = WIRE_ERRORS.get(code)
    if cls is None:
        fail(f"unknown error code {code!r}")
    if not isinstance(details, dict):
        fail(f"{where}.details must be an object")
    try:
        action = None if action_name is None else Action(action_name)
        return cls.from_details(message, hint=hint, action=action, details=details)
    except (ValueError, KeyError, TypeError) as err:
        fail(f"{where}: {err}")


# -- events -----------------------------------------------------------------------------------


def encode_event(event: WireEvent) -> bytes:
    data: dict[str, Any]
    if isinstance(event, Hello):
        data = {"event": "hello", "v": event.v}
    elif isinstance(event, PhaseEvent):
        data = {"event": "phase", "target": event.target, "phase": event.phase.value}
    elif isinstance(event, ProgressEvent):
        data = {
            "event": "progress",
            "target": event.target,
            "phase": event.phase.value,
            "done": event.done_bytes,
            "total": event.total_bytes,
        }
    elif isinstance(event, LogEvent):
        data = {"event": "log", "level": event.level, "message": event.message}
        if event.target is not None:
            data["target"] = event.target
    elif isinstance(event, TargetDone):
        data = {
            "event": "target_done",
            "target": event.target,
            "bytes_written": event.bytes_written,
            "sha256": event.sha256,
            "verified": event.verified,
            "seconds": round(event.seconds, 3),
            "scanned_bytes": event.scanned_bytes,
            "zeroed_blocks": event.zeroed_blocks,
        }
    elif isinstance(event, TargetError):
        data = {"event": "target_error", "target": event.target, **error_to_wire(event.error)}
    else:
        data = {"event": "end", "ok": event.ok}
        if event.error is not None:
            data["error"] = error_to_wire(event.error)
    line = (json.dumps(data, separators=(",", ":"), default=str) + "\n").encode()
    if len(line) > MAX_EVENT_BYTES:
        raise ValueError(f"event of {len(line)} bytes exceeds the protocol limit")
    return line


def _phase(f: Fields) -> Phase:
    name = f.text("phase") or ""
    try:
        return Phase(name)
    except ValueError:
        fail(f"unknown phase {name!r}")


def _decode_hello(f: Fields) -> WireEvent:
    return Hello(f.integer("v"))


def _decode_phase(f: Fields) -> WireEvent:
    return PhaseEvent(f.text("target") or "", _phase(f))


def _decode_progress(f: Fields) -> WireEvent:
    return ProgressEvent(f.text("target") or "", _phase(f), f.integer("done"), f.integer("total"))


def _decode_log(f: Fields) -> WireEvent:
    level = f.text("level") or ""
    if level not in LOG_LEVELS:
        fail(f"unknown log level {level!r}")
    return LogEvent(level, f.text("message") or "", f.text("target", required=False))


def _decode_done(f: Fields) -> WireEvent:
    sha = f.text("sha256", nullable=True)
    if sha is not None and not _SHA256_RE.match(sha):
        fail("target_done.sha256 must be 64 lowercase hex digits or null")
    return TargetDone(
        f.text("target") or "",
        f.integer("bytes_written"),
        sha,
        f.flag("verified", default=False),
        f.number("seconds"),
        f.integer("scanned_bytes", required=False),
        f.integer("zeroed_blocks", required=False),
    )


def _decode_target_error(f: Fields) -> WireEvent:
    target = f.text("target") or ""
    rest = {k: v for k, v in f.data.items() if k not in ("event", "target")}
    f.used.update(f.data)
    return TargetError(target, error_from_wire(rest, "target_error"))


def _decode_end(f: Fields) -> WireEvent:
    ok = f.flag("ok", default=False)
    raw = f.value("error", required=False)
    return JobEnd(ok, None if raw is None else error_from_wire(raw, "end.error"))


_DECODERS: dict[str, Callable[[Fields], WireEvent]] = {
    "hello": _decode_hello,
    "phase": _decode_phase,
    "progress": _decode_progress,
    "log": _decode_log,
    "target_done": _decode_done,
    "target_error": _decode_target_error,
    "end": _decode_end,
}


def decode_event(line: bytes) -> WireEvent:
    """Parse one event line strictly: unknown kinds, fields or codes are protocol errors."""
    f = Fields(loads(line, MAX_EVENT_BYTES), "event")
    kind = f.text("event") or ""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        fail(f"unknown event {kind!r}")
    f.where = kind
    event = decoder(f)
    f.done()
    return event
