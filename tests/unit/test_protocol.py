"""The writer protocol: request and event codecs, strict decoding, error mapping, framing."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest

from flasher.error_codes import Action, DriveProblem, ProblemCode, Severity
from flasher.errors import (
    Cancelled,
    ConfigError,
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
from flasher.writer.framing import LineReader, send_request
from flasher.writer.protocol import (
    MAX_EVENT_BYTES,
    PROTOCOL_VERSION,
    Hello,
    ImageSpec,
    JobEnd,
    LogEvent,
    Op,
    PhaseEvent,
    ProgressEvent,
    SourceKind,
    TargetDone,
    TargetError,
    TargetSpec,
    WireEvent,
    WriteOptions,
    WriteRequest,
    decode_event,
    decode_request,
    encode_event,
    encode_request,
)

MiB = 1024 * 1024
SHA = "ab" * 32
SDB = TargetSpec("/dev/sdb", "8:16", 32 * 10**9, "0123")
SDC = TargetSpec("/dev/sdc", "8:32", 16 * 10**9, "")


def _request(**changes: Any) -> WriteRequest:
    base: dict[str, Any] = {
        "targets": (SDB,),
        "image": ImageSpec(64 * MiB, SourceKind.FD, None),
        "ranges": ((0, 4 * MiB), (8 * MiB, MiB)),
        "overlay": ((5 * MiB, 4096),),
        "options": WriteOptions(verify=True, write_all=False, chunk_bytes=4 * MiB),
    }
    base.update(changes)
    return WriteRequest(**base)


def _raw(**changes: Any) -> bytes:
    data = json.loads(encode_request(_request()))
    for key, value in changes.items():
        data[key] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "request_value",
    [
        _request(),
        _request(targets=(SDB, SDC), ranges=None, overlay=()),
        _request(image=ImageSpec(64 * MiB, SourceKind.STREAM, SHA), ranges=None),
        _request(op=Op.VERIFY, options=WriteOptions(verify=True, chunk_bytes=8 * MiB)),
    ],
    ids=["fd-with-overlay", "two-targets-whole-image", "stream-with-sha", "verify-op"],
)
def test_request_survives_a_round_trip(request_value: WriteRequest) -> None:
    assert decode_request(encode_request(request_value).rstrip(b"\n")) == request_value


def test_encoded_request_is_one_line_ending_in_newline() -> None:
    line = encode_request(_request())
    assert line.endswith(b"\n") and line.count(b"\n") == 1


BAD_REQUESTS = {
    "not-json": b"{nope",
    "not-utf8": b"\xff\xfe",
    "not-an-object": b"[1, 2]",
    "nan": _raw(ranges="NaN").replace(b'"NaN"', b"NaN"),
    "old-version": _raw(v=0),
    "unknown-op": _raw(op="format"),
    "unknown-field": _raw(extra=1),
    "no-targets": _raw(targets=[]),
    "relative-path": _raw(targets=[{"path": "sdb", "dev": "8:16", "size": 1, "serial": ""}]),
    "bad-dev": _raw(targets=[{"path": "/dev/sdb", "dev": "sdb", "size": 1, "serial": ""}]),
    "bool-as-size": _raw(targets=[{"path": "/dev/sdb", "dev": "8:16", "size": True, "serial": ""}]),
    "target-extra-field": _raw(
        targets=[{"path": "/dev/sdb", "dev": "8:16", "size": 1, "serial": "", "force": True}]
    ),
    "duplicate-target": _raw(
        targets=[
            {"path": "/dev/sdb", "dev": "8:16", "size": 1, "serial": ""},
            {"path": "/dev/sdb", "dev": "8:16", "size": 1, "serial": ""},
        ]
    ),
    "ranges-unsorted": _raw(ranges=[[8 * MiB, 10], [0, 10]]),
    "ranges-overlap": _raw(ranges=[[0, 100], [50, 100]]),
    "range-past-end": _raw(ranges=[[63 * MiB, 2 * MiB]]),
    "range-empty": _raw(ranges=[[0, 0]]),
    "range-not-pair": _raw(ranges=[[0, 1, 2]]),
    "overlay-missing": _raw(overlay=None),
    "chunk-not-mib": _raw(options={"verify": True, "write_all": False, "chunk_bytes": 4096}),
    "chunk-too-big": _raw(options={"verify": True, "write_all": False, "chunk_bytes": 128 * MiB}),
    "verify-not-bool": _raw(options={"verify": 1, "write_all": False, "chunk_bytes": MiB}),
    "bad-sha": _raw(image={"size": 64 * MiB, "source": "fd", "sha256": "xyz"}),
    "unknown-source": _raw(image={"size": 64 * MiB, "source": "path", "sha256": None}),
    "verify-from-stream": _raw(
        op="verify", image={"size": 64 * MiB, "source": "stream", "sha256": None}
    ),
}


@pytest.mark.parametrize("line", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_decode_request_rejects_bad_input(line: bytes) -> None:
    with pytest.raises(WriterProtocolError):
        decode_request(line)


def test_decode_request_rejects_an_oversized_line() -> None:
    with pytest.raises(WriterProtocolError, match="limit"):
        decode_request(b" " * (17 * MiB))


EVENTS: list[WireEvent] = [
    Hello(),
    PhaseEvent("/dev/sdb", Phase.WRITING),
    ProgressEvent("/dev/sdb", Phase.VERIFYING, 10, 20),
    LogEvent("info", "unmounted /media/x", "/dev/sdb"),
    LogEvent("warning", "job-wide note"),
    TargetDone("/dev/sdb", 123, SHA, True, 1.5),
    TargetDone("/dev/sdb", 123, None, False, 0.25),
    JobEnd(True),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_survives_a_round_trip(event: WireEvent) -> None:
    assert decode_event(encode_event(event).rstrip(b"\n")) == event


@pytest.mark.parametrize(
    "error",
    [
        VerificationFailed("differs at 4097", target="/dev/sdb", offset=4097, range_start=0),
        WriteFailed("I/O error", hint="try another card", offset=8192, errno=5),
        DriveGone("gone", target="/dev/sdb"),
        DriveRejected("system disk", target="/dev/sdb", problem=ProblemCode.SYSTEM),
        Cancelled(),
        ImageError("<stream>", "ended early", problem=ProblemCode.TRUNCATED),
        DriveRejected(
            "needs confirmation",
            problems=(
                DriveProblem("/dev/sdb", ProblemCode.LARGE, Severity.WARNING, "large", "check"),
            ),
            action=Action.CONFIRM_DRIVE_WARNINGS,
        ),
    ],
    ids=lambda e: type(e).__name__,
)
def test_target_error_rebuilds_the_same_error_class_and_fields(error: FlasherError) -> None:
    decoded = decode_event(encode_event(TargetError("/dev/sdb", error)).rstrip(b"\n"))
    assert isinstance(decoded, TargetError)
    assert type(decoded.error) is type(error)
    assert decoded.error.message == error.message
    assert decoded.error.hint == error.hint
    assert decoded.error.details() == error.details()
    assert decoded.error.action == error.action


def test_image_error_keeps_its_path_and_problem_across_the_wire() -> None:
    err = ImageError("<stream>", "ended early", problem=ProblemCode.TRUNCATED)
    decoded = decode_event(encode_event(TargetError("/dev/sdb", err)).rstrip(b"\n"))
    assert isinstance(decoded, TargetError) and isinstance(decoded.error, ImageError)
    assert (decoded.error.path, decoded.error.problem) == ("<stream>", "truncated")


def test_errors_outside_the_closed_set_travel_as_writer_errors() -> None:
    line = encode_event(JobEnd(False, ConfigError("targets", "must not be empty")))
    decoded = decode_event(line.rstrip(b"\n"))
    assert isinstance(decoded, JobEnd) and type(decoded.error) is WriterError


BAD_EVENTS = {
    "unknown-event": {"event": "reboot"},
    "extra-field": {"event": "hello", "v": 1, "x": 2},
    "unknown-phase": {"event": "phase", "target": "/dev/sdb", "phase": "flashing"},
    "negative-progress": {
        "event": "progress",
        "target": "/dev/sdb",
        "phase": "writing",
        "done": -1,
        "total": 5,
    },
    "bad-sha": {
        "event": "target_done",
        "target": "/dev/sdb",
        "bytes_written": 1,
        "sha256": "00",
        "verified": True,
        "seconds": 1.0,
    },
    "unknown-code": {"event": "target_error", "target": "/dev/sdb", "code": "oops", "message": ""},
    "unknown-problem": {
        "event": "target_error",
        "target": "/dev/sdb",
        "code": "drive_rejected",
        "message": "no",
        "details": {"problem": "outside"},
    },
    "undeclared-detail": {
        "event": "target_error",
        "target": "/dev/sdb",
        "code": "write_failed",
        "message": "no",
        "details": {"problems": []},
    },
    "unknown-action": {
        "event": "target_error",
        "target": "/dev/sdb",
        "code": "drive_rejected",
        "message": "no",
        "action": "press_any_key",
    },
    "unknown-level": {"event": "log", "level": "shout", "message": "x"},
}


@pytest.mark.parametrize("data", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_decode_event_rejects_bad_events(data: dict[str, Any]) -> None:
    with pytest.raises(WriterProtocolError):
        decode_event(json.dumps(data).encode())


def test_decode_event_rejects_an_oversized_line() -> None:
    line = json.dumps({"event": "log", "level": "info", "message": "x" * MAX_EVENT_BYTES})
    with pytest.raises(WriterProtocolError, match="limit"):
        decode_event(line.encode())


def test_hello_carries_the_protocol_version() -> None:
    assert json.loads(encode_event(Hello())) == {"event": "hello", "v": PROTOCOL_VERSION}


def test_request_travels_with_its_file_descriptors(tmp_path: Any) -> None:
    image = tmp_path / "image"
    image.write_bytes(b"image bytes")
    ours, theirs = socket.socketpair()
    fd = os.open(image, os.O_RDONLY)
    memfd = os.memfd_create("overlay")
    try:
        send_request(ours, _request(), [fd, memfd])
        reader = LineReader(theirs, max_fds=2)
        line = reader.read_line(MiB)
        assert line is not None and decode_request(line) == _request()
        assert len(reader.fds) == 2
        assert os.pread(reader.fds[0], 5, 0) == b"image"
        for received in reader.fds:
            os.close(received)
    finally:
        os.close(fd)
        os.close(memfd)
        ours.close()
        theirs.close()


def test_send_request_refuses_a_wrong_number_of_fds() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.raises(ValueError):
        send_request(ours, _request(), [0])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(b"", None), (b"one\ntwo\n", b"one")],
    ids=["clean-eof", "first-of-two"],
)
def test_line_reader_returns_lines_and_none_at_eof(payload: bytes, expected: bytes | None) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(payload)
        ours.shutdown(socket.SHUT_WR)
        assert LineReader(theirs).read_line(100) == expected


@pytest.mark.parametrize(
    "payload", [b"partial line", b"x" * 200 + b"\n"], ids=["eof-mid-line", "too-long"]
)
def test_line_reader_rejects_truncated_or_oversized_lines(payload: bytes) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(payload)
        ours.shutdown(socket.SHUT_WR)
        with pytest.raises(WriterProtocolError):
            LineReader(theirs).read_line(100)
