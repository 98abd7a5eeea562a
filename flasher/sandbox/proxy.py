"""The sandbox API's supervisor proxy: `POST /supervisor/<path>`, as open-balena-api answers it.

Body `{uuid?, deviceId?, appId?, method?, data?}`: a body of the wrong shape gets 400 with an
empty body; no filter 400 "At least one filter must be specified"; a non-integer id 400. The
filters are ANDed and only online (on the VPN), unfrozen devices are kept; none gives 404
"No online device(s) found". Each device gets `<method> <supervisor><path>?apikey=<its key>`
with `data` as the JSON body. One device: its status, with JSON passed on, short plain text
re-sent as text/plain, anything else 500 {"error":"Bad API response from supervisor"}, no
content type an empty body. Several devices: 207 `[{"statusCode", "body"}]`. A device that
cannot be reached: 502 with the error text. Query strings on the proxy URL are not forwarded.
Repeated slashes in the path are collapsed (the Python SDK asks for `/supervisor//ping`).

Standard library only (http.client), never requests.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from typing import Any

from flasher.sandbox.devices import SandboxDevice, SandboxDevices

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9\s:'.?!,/-]*$")
_INT = re.compile(r"^[0-9]+$")
TIMEOUT_S = 50.0
OFFLINE = "No online device(s) found"


class ProxyAnswer:
    def __init__(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type


def _json(status: int, value: Any) -> ProxyAnswer:
    return ProxyAnswer(status, json.dumps(value).encode(), "application/json; charset=utf-8")


def _plain(status: int, text: str) -> ProxyAnswer:
    return ProxyAnswer(status, text.encode(), "text/plain; charset=utf-8")


def _valid_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _as_int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.match(value):
        return int(value)
    return None


def handle(devices: SandboxDevices, path: str, raw_body: bytes) -> ProxyAnswer:
    """Answer `POST /supervisor<path>` for an authenticated caller."""
    path = re.sub(r"/{2,}", "/", path)
    try:
        body = json.loads(raw_body) if raw_body else {}
    except ValueError:
        return ProxyAnswer(400)
    if not isinstance(body, dict):
        return ProxyAnswer(400)
    uuid, device_id, app_id = body.get("uuid"), body.get("deviceId"), body.get("appId")
    method, data = body.get("method", "POST"), body.get("data")
    if (
        (uuid is not None and (not isinstance(uuid, str) or not uuid))
        or (device_id is not None and not _valid_id(device_id))
        or (app_id is not None and not _valid_id(app_id))
        or not isinstance(method, str)
        or method.upper() not in _METHODS
        or (data is not None and not isinstance(data, dict))
    ):
        return ProxyAnswer(400)
    if uuid is None and device_id is None and app_id is None:
        return _plain(400, "At least one filter must be specified")
    app_number = _as_int(app_id) if app_id is not None else None
    if app_id is not None and app_number is None:
        return _plain(400, "App ID must be a valid integer if specified")
    device_number = _as_int(device_id) if device_id is not None else None
    if device_id is not None and device_number is None:
        return _plain(400, "Device ID must be a valid integer if specified")
    targets = [
        d
        for d in devices.registered()
        if d.online
        and (uuid is None or d.spec.uuid == uuid)
        and (device_number is None or d.id == device_number)
        and (app_number is None or (d.fleet is not None and d.fleet[0] == app_number))
    ]
    if not targets:
        return _json(404, OFFLINE)
    method = method.upper()
    if len(targets) == 1:
        return _single(devices, targets[0], method, path, data)
    replies = []
    for i, device in enumerate(targets):
        if i:
            time.sleep(0.05)
        try:
            status, content_type, raw = _forward(devices, device, method, path, data)
        except OSError as err:
            replies.append({"statusCode": 502, "body": str(err)})
            continue
        replies.append({"statusCode": status, "body": _decoded(content_type, raw)})
    return _json(207, replies)


def _decoded(content_type: str | None, raw: bytes) -> Any:
    if content_type and "json" in content_type:
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _single(
    devices: SandboxDevices, device: SandboxDevice, method: str, path: str, data: Any
) -> ProxyAnswer:
    try:
        status, content_type, raw = _forward(devices, device, method, path, data)
    except OSError as err:
        return _plain(502, f"Error: {err}")
    bad = _json(500, {"error": "Bad API response from supervisor"})
    if not content_type:
        return ProxyAnswer(status)
    if "application/json" in content_type:
        try:
            json.loads(raw) if raw else None
        except ValueError:
            return bad
        return ProxyAnswer(status, raw, "application/json; charset=utf-8")
    if content_type.startswith(("text/plain", "text/html")):
        text = raw.decode("utf-8", "replace")
        return _plain(status, text) if _SAFE_TEXT.match(text) else bad
    return bad


def _forward(
    devices: SandboxDevices, device: SandboxDevice, method: str, path: str, data: Any
) -> tuple[int, str | None, bytes]:
    fake = devices.supervisor(device.spec.name)
    if not fake.up.is_set():
        raise ConnectionRefusedError(f"connect ECONNREFUSED {device.spec.uuid}.balena:48484")
    key = fake.state.api_key or ""
    connection = http.client.HTTPConnection(fake.host, fake.port, timeout=TIMEOUT_S)
    try:
        payload = json.dumps(data).encode() if data is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, f"{path}?apikey={key}", body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()
