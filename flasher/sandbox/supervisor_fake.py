"""A faithful fake balena Supervisor: a real HTTP server on 127.0.0.1 answering the device API.

It follows the real supervisor's behaviour endpoint by endpoint: /ping and /v1/healthy without a
key; every other route behind the key check (`?apikey=` first, else `Authorization: Bearer|ApiKey
<key>`), skipped in local mode and on unmanaged devices; app-scoped keys refused on other apps
(401, or 409 on GET /v2/applications/:id/state); update locks answered with 423; the exact status
codes, content types and messages (flasher.sandbox.supervisor_routes). A reboot or shutdown
answers 202, then the server stops accepting connections; a reboot brings it back on the same
port after `reboot_delay_s` with its starting state. Log streams never end until the client goes.
Every request is recorded (method, path, the key it carried, body) for tests to check.

Standard library only (plus flasher.sandbox modules); never requests or Qt.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flasher.sandbox.supervisor_http import Reply, Request, Stream
from flasher.sandbox.supervisor_routes import route

log = logging.getLogger(__name__)


@dataclass
class FakeService:
    name: str
    image_id: int
    service_id: int
    container_id: str
    release_id: int
    image: str
    status: str = "Running"


@dataclass
class FakeApp:
    app_id: int
    name: str
    uuid: str
    commit: str
    services: list[FakeService]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeDeviceSpec:
    """A device's supervisor as configured; the running fake copies it at every (re)boot."""

    uuid: str
    name: str
    device_type: str
    arch: str
    os_version: str
    supervisor_version: str
    apps: list[FakeApp]
    api_key: str | None = None
    app_keys: dict[str, int] = field(default_factory=dict)
    local_mode: bool = False
    unmanaged: bool = False
    locked_apps: set[int] = field(default_factory=set)
    instant_updates: bool = True
    healthy: bool = True
    reboot_delay_s: float = 0.5
    drop_on_reboot: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    vpn_connected: bool = True
    ip_address: str = "192.168.1.23 10.114.102.1"
    mac_address: str = "DC:A6:32:00:11:22"
    log_interval_s: float = 0.05


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    key: str | None
    key_via: str | None  # "query", "bearer", "apikey" or None
    body: Any


class FakeState:
    """What the supervisor knows at run time; guarded by `lock`."""

    def __init__(self, spec: FakeDeviceSpec, *, boots: int = 1) -> None:
        self.lock = threading.RLock()
        self.spec = spec
        self.api_key = spec.api_key
        self.app_keys = dict(spec.app_keys)
        self.apps = {a.app_id: a for a in copy.deepcopy(spec.apps)}
        self.locked_apps = set(spec.locked_apps)
        self.hostname = spec.uuid[:7]
        self.proxy: dict[str, Any] = {}
        self.tags = dict(spec.tags)
        self.local_target: dict[str, Any] | None = None
        self.blinks = 0
        self.updates: list[bool] = []
        self.purges: list[int] = []
        self.restarts: list[int] = []
        self.cleanups = 0
        self.boots = boots
        self.last_power_action: str | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "balena-supervisor-fake"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        shown = [a.split("?", 1)[0] if isinstance(a, str) else a for a in args]
        log.debug("%s " + format, self.address_string(), *shown)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _body(self) -> tuple[bytes, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return raw, self.headers.get("Content-Type", "")

    def _handle(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        raw, content_type = self._body()
        request = Request(
            method=self.command,
            path=parts.path,
            query=query,
            authorization=self.headers.get("Authorization", ""),
            raw_body=raw,
            content_type=content_type,
        )
        reply = route(fake, request)
        fake.record(request)
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif isinstance(reply, Stream):
            self._stream(reply)
        else:
            self._send(reply)
        if reply.after is not None:
            reply.after()

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)
        self.wfile.flush()

    def _stream(self, reply: Stream) -> None:
        self.send_response(200)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        fake = self.server.fake
        fake.streams_open += 1
        try:
            for chunk in reply.chunks:
                if fake.stopping.is_set():
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            else:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            pass  # the client went away: that is how a stream ends
        finally:
            fake.streams_open -= 1
            fake.streams_closed += 1
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeSupervisor

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """What a device going down does to the connections it had open."""
        with self.connections_lock:
            open_now = list(self.connections)
        for connection in open_now:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class FakeSupervisor:
    """One fake device's supervisor. `start()` listens; `url` is its BALENA_SUPERVISOR_ADDRESS."""

    def __init__(self, spec: FakeDeviceSpec, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spec = spec
        self.host = host
        self.port = port
        self.state = FakeState(spec)
        self.requests: list[Recorded] = []
        self.streams_open = 0
        self.streams_closed = 0
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._power_lock = threading.Lock()
        self.up = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeSupervisor:
        server = _Server((self.host, self.port))
        server.fake = self
        self.port = int(server.server_address[1])
        self._server = server
        self.stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=f"fake-supervisor-{self.spec.name}"
        )
        self._thread.daemon = True
        self._thread.start()
        self.up.set()
        return self

    def stop(self) -> None:
        """Stop listening (the device is off). Open streams end."""
        self.stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()
        self.up.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def power_off(self, *, come_back: bool) -> None:
        """What happens after an accepted reboot (come_back) or shutdown, on its own thread."""

        def run() -> None:
            with self._power_lock:
                time.sleep(0.05)  # let the 202 reach the caller first
                self.stop()
                if not come_back:
                    return
                time.sleep(self.spec.reboot_delay_s)
                self.state = FakeState(self.spec, boots=self.state.boots + 1)
                self.start()

        threading.Thread(target=run, name="fake-supervisor-power", daemon=True).start()

    def record(self, request: Request) -> None:
        key, via = request.key()
        body: Any = request.raw_body.decode("utf-8", "replace") if request.raw_body else None
        with contextlib.suppress(ValueError):
            body = json.loads(request.raw_body) if request.raw_body else None
        query = {k: v for k, v in request.query.items() if k != "apikey"}
        with self.state.lock:
            self.requests.append(Recorded(request.method, request.path, query, key, via, body))

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> FakeSupervisor:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()
