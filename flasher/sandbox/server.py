"""The sandbox: a faithful local balena API on a threaded HTTP server, in-process.

`SandboxServer.start()` serves the bundled catalog on 127.0.0.1 (a free port by default) from a
daemon thread: pine resources under /v7 and /v6, /device-types/v1 (with each type's image list
and download sizes), /download (GET and POST, Range requests), /download-config, /config, /ping,
whoami and the delta server's /api/v3/delta. Anonymous callers get public data; any non-empty
bearer token (or `?apikey=`) authenticates as the sandbox's one user. Core code: never prints
(requests are logged at DEBUG) and never imports Qt.

POST /supervisor/<path> is the balena API's supervisor proxy to the sandbox's fake devices
(flasher.sandbox.proxy, flasher.sandbox.devices). Device registration, provisioning and device
keys and deleting devices are flasher.sandbox.registration's; registered devices join the fake
ones in pine's `device` resource.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

from flasher.sandbox import proxy
from flasher.sandbox.api import ApiProblem, SandboxApi
from flasher.sandbox.artifacts import CHUNK_BYTES, Artifact, ImageStore
from flasher.sandbox.catalog import Catalog, load_catalog
from flasher.sandbox.devices import SandboxDevices
from flasher.sandbox.images import ImageScale
from flasher.sandbox.odata import ODataError, parse_options
from flasher.sandbox.pine import PineStore, UnknownResource
from flasher.sandbox.registration import DeviceRegistrations

log = logging.getLogger(__name__)

_PINE_PATH = re.compile(r"^/(v6|v7)/([A-Za-z_]+)(?:\((@?[^)]*)\))?/?$")
_DOWNLOAD_SIZE = re.compile(r"^/device-types/v1/([^/]+)/images/([^/]+)/download-size/?$")
_IMAGES = re.compile(r"^/device-types/v1/([^/]+)/images/?$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_BODY_BYTES = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flasher-sandbox"
    # Headers and body go out in two writes; without this each small answer waits ~40 ms for
    # the client's delayed ACK (Nagle).
    disable_nagle_algorithm = True
    server: _Server
    _body_read = False

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry query strings, and /download queries may hold a Wi-Fi key.
        shown = [a.split("?", 1)[0] if isinstance(a, str) else a for a in args]
        log.debug("%s " + format, self.address_string(), *shown)

    # -- plumbing ----------------------------------------------------------------------------

    def _params(self) -> list[tuple[str, str]]:
        query = urlsplit(self.path).query
        pairs = []
        for part in query.split("&"):
            if part:
                name, _, value = part.partition("=")
                pairs.append((unquote_plus(name), unquote_plus(value)))
        return pairs

    def _authenticated(self, params: Mapping[str, str]) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return (scheme.lower() == "bearer" and bool(token.strip())) or bool(params.get("apikey"))

    def _read_body(self) -> bytes:
        if self._body_read:
            return b""
        self._body_read = True
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiProblem(413, "Request body too large")
        return self.rfile.read(length) if length else b""

    def _body(self) -> dict[str, Any]:
        raw = self._read_body()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiProblem(400, "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiProblem(400, "The request body must be a JSON object")
        return body

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode(), "application/json; charset=utf-8")

    def _text(self, status: int, message: str) -> None:
        self._send(status, message.encode(), "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self._body_read = False
        try:
            self._route()
        except ApiProblem as problem:
            if problem.status != 413:
                self._read_body()  # keep the connection usable for the next request
            self._text(problem.status, problem.message)
        except ODataError as err:
            self._text(400, str(err))
        except UnknownResource as err:
            self._text(404, f"Unknown resource: {err}")
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client went away during %s %s", self.command, self.path)
        except Exception:
            log.exception("sandbox failed on %s %s", self.command, self.path)
            self._text(500, "Internal sandbox error")

    # -- routes ------------------------------------------------------------------------------

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        params = self._params()
        query = dict(params)
        auth = self._authenticated(query)
        api = self.server.api
        method = self.command if self.command != "HEAD" else "GET"
        if self._registration(method, path, params, auth):
            return
        pine = _PINE_PATH.match(path)
        if pine:
            if method != "GET":
                raise ApiProblem(405, "The sandbox catalog is read-only")
            self._pine(pine.group(2), pine.group(3), params, query, auth)
        elif path in ("/download", "/download/"):
            if method not in ("GET", "POST"):
                raise ApiProblem(405, "Use GET or POST")
            merged = {**query, **(self._body() if method == "POST" else {})}
            self._artifact(api.download(merged, authenticated=auth))
        elif path in ("/download-config", "/download-config/"):
            if method not in ("GET", "POST"):
                raise ApiProblem(405, "Use GET or POST")
            merged = {**query, **(self._body() if method == "POST" else {})}
            if not auth:
                raise ApiProblem(401, "Unauthorized")
            self._json(api.download_config(merged))
        elif path.startswith("/supervisor/"):
            if method != "POST":
                raise ApiProblem(405, "Use POST")
            if not auth:
                raise ApiProblem(401, "Unauthorized")
            answer = proxy.handle(
                self.server.devices, path[len("/supervisor") :], self._read_body()
            )
            self._send(answer.status, answer.body, answer.content_type or "")
        elif method != "GET":
            raise ApiProblem(405, f"{self.command} is not supported on {path}")
        elif path in ("/api/v3/delta", "/api/v3/delta/"):
            self._delta_server(query, auth)
        elif path == "/ping":
            self._text(200, "OK")
        elif path == "/config":
            self._json(api.public_config())
        elif path in ("/actor/v1/whoami", "/user/v1/whoami"):
            if not auth:
                raise ApiProblem(401, "Unauthorized")
            self._json(api.whoami())
        elif path in ("/device-types/v1", "/device-types/v1/"):
            self._json(api.device_types_v1())
        elif match := _DOWNLOAD_SIZE.match(path):
            self._json(api.download_size(match.group(1), match.group(2)))
        elif match := _IMAGES.match(path):
            self._json(api.images(match.group(1)))
        elif path.startswith("/device-types/v1/") and path.count("/") == 3:
            self._json(api.device_type_v1(path.rsplit("/", 1)[1]))
        else:
            raise ApiProblem(404, f"Not found: {path}")

    def _registration(
        self, method: str, path: str, params: list[tuple[str, str]], auth: bool
    ) -> bool:
        """Device registration and deletion (flasher.sandbox.registration); False if not its
        path."""
        if method not in ("POST", "DELETE") or not path.startswith(("/device/", "/api-key/", "/v")):
            return False
        scheme, _, bearer = self.headers.get("Authorization", "").partition(" ")
        body = self._body() if method == "POST" else {}
        answer = self.server.registrations.handle(
            method, path, params, body, bearer.strip() if scheme.lower() == "bearer" else "", auth
        )
        if answer is None:
            return False
        self._json(answer[1], answer[0])
        return True

    def _pine(
        self,
        resource: str,
        key: str | None,
        params: list[tuple[str, str]],
        query: Mapping[str, str],
        auth: bool,
    ) -> None:
        entity_id = None
        if key is not None:
            raw = query.get(key, "") if key.startswith("@") else key
            field, eq, value = key.partition("=")
            if eq:  # an alternate key: device(uuid='…') or device(uuid=@u)
                value = query.get(value, "") if value.startswith("@") else value
                found = self.server.pine.id_by_key(resource, field, value.strip("'"))
                entity_id = -1 if found is None else found
            else:
                try:
                    entity_id = int(raw)
                except ValueError:
                    raise ODataError(f"Malformed id {raw!r}") from None
        options = parse_options((n, v) for n, v in params if not n.startswith("@"))
        self._json(
            self.server.pine.query(resource, options, entity_id=entity_id, authenticated=auth)
        )

    def _delta_server(self, query: Mapping[str, str], auth: bool) -> None:
        if not auth:
            raise ApiProblem(401, "Unauthorized")
        try:
            src, dest = int(query.get("src", "")), int(query.get("dest", ""))
        except ValueError:
            raise ApiProblem(400, "src and dest must be image IDs") from None
        status, body = self.server.pine.deltas.request(src, dest)
        if isinstance(body, str):
            self._text(status, body)
        else:
            self._json(body, status)

    def _artifact(self, artifact: Artifact) -> None:
        try:
            self._send_file(artifact)
        finally:
            artifact.discard()

    def _send_file(self, artifact: Artifact) -> None:
        size = artifact.size_bytes
        etag = f'"{artifact.sha256}"'
        start, end, status = 0, size - 1, 200
        requested = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if requested and (if_range is None or if_range == etag):
            match = _RANGE.match(requested.strip())
            if match and (match.group(1) or match.group(2)):
                first, last = match.group(1), match.group(2)
                if first:
                    start, end = int(first), min(int(last), size - 1) if last else size - 1
                else:
                    start, end = max(size - int(last), 0), size - 1
                if start >= size or start > end:
                    self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", artifact.content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Disposition", f'attachment; filename="{artifact.filename}"')
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with artifact.path.open("rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = f.read(min(CHUNK_BYTES, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: SandboxApi
    pine: PineStore
    registrations: DeviceRegistrations
    devices: SandboxDevices


class SandboxServer:
    """A running sandbox; use `start()`, then `.url`, and `close()` (or a `with` block)."""

    def __init__(
        self,
        server: _Server,
        thread: threading.Thread,
        own_cache: tempfile.TemporaryDirectory[str] | None,
    ) -> None:
        self._server = server
        self._thread = thread
        self._own_cache = own_cache
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api(self) -> SandboxApi:
        return self._server.api

    @property
    def registrations(self) -> DeviceRegistrations:
        return self._server.registrations

    @property
    def devices(self) -> SandboxDevices:
        return self._server.devices

    @classmethod
    def start(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        catalog: Catalog | None = None,
        image_scale: ImageScale | None = None,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        delta_build_s: float = 3.0,
    ) -> SandboxServer:
        """Serve in a daemon thread. Images are cached in `cache_dir` (default: a private
        temporary directory removed on close); `seed` fixes the provisioning-key sequence;
        an image delta takes `delta_build_s` seconds to build."""
        catalog = catalog or load_catalog()
        own_cache = None
        if cache_dir is None:
            own_cache = tempfile.TemporaryDirectory(prefix="flasher-sandbox-")
            cache_dir = own_cache.name
        store = ImageStore(cache_dir, image_scale or ImageScale())
        server = _Server((host, port), _Handler)
        server.api = SandboxApi(catalog, store, seed=seed)
        server.pine = PineStore(catalog, delta_build_s=delta_build_s)
        server.devices = SandboxDevices()
        type_ids = {dt.slug: dt.id for dt in catalog.device_types}
        server.pine.add_devices(server.devices.pine_rows(type_ids))
        server.registrations = DeviceRegistrations(server.api, server.pine)
        thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="flasher-sandbox", daemon=True
        )
        thread.start()
        log.debug("sandbox listening on %s:%s", *server.server_address[:2])
        return cls(server, thread, own_cache)

    def close(self) -> None:
        self._server.devices.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self._own_cache is not None:
            shutil.rmtree(self._own_cache.name, ignore_errors=True)
            self._own_cache.cleanup()
            self._own_cache = None

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
