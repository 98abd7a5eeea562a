"""A small threaded HTTP/1.1 server on 127.0.0.1 for download tests.

It serves byte strings with ETag/Last-Modified, honours `Range: bytes=N-` and `If-Range`, and
plays scripted faults on successive requests: an error status (with Retry-After), a connection
dropped part-way, a corrupted or short body, a range ignored. Every request is recorded.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-$")
_SEND_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one request (faults are used up in order, then all is well)."""

    status: int | None = None  # answer this status with an empty body
    retry_after: str | None = None
    drop_after_bytes: int | None = None  # announce the full body, send this much, hang up
    corrupt: bool = False  # flip one byte in the middle of the body
    short_bytes: int | None = None  # a body that is honestly announced but too short
    ignore_range: bool = False


@dataclass
class Served:
    content: bytes
    etag: str | None = '"v1"'
    last_modified: str | None = "Tue, 14 Nov 2023 22:13:20 GMT"
    ranges: bool = True
    faults: list[Fault] = field(default_factory=list)
    send_delay_s: float = 0.0  # pause between 64 KiB pieces, to keep a download in flight


@dataclass(frozen=True)
class Recorded:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    status: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet tests

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        owner = self.server.owner
        with owner.lock:
            served = owner.files.get(parts.path)
            fault = served.faults.pop(0) if served and served.faults else Fault()
        status, headers, body = self._plan(served, fault)
        owner.record(Recorded(parts.path, dict(parse_qsl(parts.query)), dict(self.headers), status))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        limit = fault.drop_after_bytes if fault.drop_after_bytes is not None else len(body)
        view = memoryview(body)[:limit]
        try:
            for start in range(0, len(view), _SEND_CHUNK_BYTES):
                self.wfile.write(view[start : start + _SEND_CHUNK_BYTES])
                if served is not None and served.send_delay_s:
                    time.sleep(served.send_delay_s)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if fault.drop_after_bytes is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _plan(self, served: Served | None, fault: Fault) -> tuple[int, dict[str, str], bytes]:
        if served is None:
            return 404, {"Content-Length": "0"}, b""
        if fault.status is not None:
            headers = {"Content-Length": "0"}
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            return fault.status, headers, b""
        body = served.content
        if fault.corrupt:
            flipped = bytearray(body)
            flipped[len(body) // 2] ^= 0xFF
            body = bytes(flipped)
        if fault.short_bytes is not None:
            body = body[: fault.short_bytes]
        headers = {"Content-Type": "application/octet-stream"}
        if served.etag:
            headers["ETag"] = served.etag
        if served.last_modified:
            headers["Last-Modified"] = served.last_modified
        status = 200
        wanted = _RANGE.match(self.headers.get("Range", ""))
        if served.ranges and not fault.ignore_range:
            headers["Accept-Ranges"] = "bytes"
            if_range = self.headers.get("If-Range")
            current = if_range in (served.etag, served.last_modified) if if_range else True
            if wanted and current:
                start = int(wanted.group(1))
                if start >= len(body):
                    headers.update({"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"})
                    return 416, headers, b""
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                body, status = body[start:], 206
        headers["Content-Length"] = str(len(body))
        return status, headers, body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HttpTestServer


class HttpTestServer:
    """`with HttpTestServer() as server: url = server.serve("/x.img", data, faults=[...])`."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve(
        self,
        path: str,
        content: bytes,
        *,
        etag: str | None = '"v1"',
        ranges: bool = True,
        faults: list[Fault] | None = None,
        send_delay_s: float = 0.0,
    ) -> str:
        """Serve `content` at `path` (replacing what was there); returns its URL."""
        served = Served(content, etag=etag, ranges=ranges, faults=list(faults or []))
        served.send_delay_s = send_delay_s
        with self.lock:
            self.files[path] = served
        return self.url + path

    def record(self, entry: Recorded) -> None:
        with self.lock:
            self.requests.append(entry)

    def requests_for(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HttpTestServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
