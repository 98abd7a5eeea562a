"""The fake supervisor's routes: the real supervisor's answers, endpoint by endpoint.

HTTP-free: `route(fake, request)` returns a Reply (status, content type, body) or a Stream.
Statuses, bodies and messages are those of balena-supervisor v19 (device-api/v1.ts, v2.ts,
middleware): text bodies where it uses res.send/sendStatus, JSON where it uses res.json.
Standard library only.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

from flasher.sandbox.supervisor_http import (
    APP_NOT_FOUND,
    JSON_TYPE,
    SERVICE_NOT_FOUND,
    SINGLE_CONTAINER_ONLY,
    V2_SERVICE_ENDPOINT_ERROR,
    Denied,
    Reply,
    Request,
    Scope,
    Stream,
    check_int,
    failed,
    js,
    status_text,
    text,
    truthy,
)
from flasher.sandbox.supervisor_views import (
    stream_journal,
    stream_logs,
    view_app_state,
    view_apps_state,
    view_container_id,
    view_local_target,
    view_state_status,
    view_tags,
    view_v1_device,
)

if TYPE_CHECKING:
    from flasher.sandbox.supervisor_fake import FakeApp, FakeService, FakeState, FakeSupervisor


def _scope(fake: FakeSupervisor, request: Request) -> Scope:
    state = fake.state
    if fake.spec.local_mode or fake.spec.unmanaged:
        return Scope(True)
    key, _via = request.key()
    if key and key == state.api_key:
        return Scope(True)
    if key and key in state.app_keys:
        return Scope(False, state.app_keys[key])
    raise Denied(status_text(401, "Unauthorized"))


def _lock_message(state: FakeState, app_ids: list[int]) -> str | None:
    for app_id in app_ids:
        if app_id in state.locked_apps:
            app = state.apps.get(app_id)
            service = app.services[0].name if app and app.services else "main"
            return f"Lockfile exists for {{ appId: {app_id}, service: {service} }}"
    return None


def route(fake: FakeSupervisor, request: Request) -> Reply | Stream:
    state = fake.state
    path, method = request.path, request.method
    if method == "GET" and path == "/v1/healthy":
        return status_text(200, "OK") if fake.spec.healthy else text(500, "Unhealthy")
    if method == "GET" and path == "/ping":
        return text(200, "OK")
    try:
        scope = _scope(fake, request)
        if method == "POST" and path == "/v1/blink":
            with state.lock:
                state.blinks += 1
            return status_text(200, "OK")
        if method == "POST" and path == "/v1/regenerate-api-key":
            return _regenerate(fake, request, scope)
        try:
            body = request.body()
        except ValueError as err:
            return failed(503, f"Unexpected token in JSON at position 0 ({err.__class__.__name__})")
        with state.lock:
            return _routes(fake, request, scope, body)
    except Denied as denied:
        return denied.reply


def _regenerate(fake: FakeSupervisor, request: Request, scope: Scope) -> Reply:
    state = fake.state
    key, _via = request.key()
    new_key = secrets.token_hex(32)
    with state.lock:
        if key and key == state.api_key:
            state.api_key = new_key
        elif key and key in state.app_keys:
            state.app_keys[new_key] = state.app_keys.pop(key)
        else:
            return failed(503, "Could not find an API key to regenerate")
    return text(200, new_key)


def _app_or_none(state: FakeState, app_id: int) -> FakeApp | None:
    return state.apps.get(app_id)


_V1_APP = re.compile(r"^/v1/apps/([^/]+)(/stop|/start)?$")
_V2_SERVICE = re.compile(r"^/v2/applications/([^/]+)/(restart|stop|start)-service$")
_V2_APP = re.compile(r"^/v2/applications/([^/]+)/(restart|purge)$")
_V2_APP_STATE = re.compile(r"^/v2/applications/([^/]+)/state$")


def _routes(
    fake: FakeSupervisor, request: Request, scope: Scope, body: dict[str, Any]
) -> Reply | Stream:
    state = fake.state
    path, method = request.path, request.method
    force = truthy(body.get("force"))
    if method == "POST" and path == "/v1/update":
        state.updates.append(force)
        if force or fake.spec.instant_updates:
            return status_text(204, "")
        return status_text(202, "Accepted")
    if method == "POST" and path in ("/v1/reboot", "/v1/shutdown"):
        return _power(fake, path.rsplit("/", 1)[1], force)
    if method == "POST" and path in ("/v1/purge", "/v1/restart"):
        return _v1_app_action(fake, path.rsplit("/", 1)[1], body, scope, force)
    if method == "GET" and path == "/v1/device":
        return js(200, view_v1_device(fake))
    if match := _V1_APP.match(path):
        return _v1_app(fake, method, match.group(1), match.group(2), scope, force)
    if path == "/v1/device/host-config" and method in ("GET", "PATCH"):
        return _host_config(fake, method, body, force)
    if method == "POST" and (match := _V2_SERVICE.match(path)):
        return _v2_service(fake, match.group(1), match.group(2), body, scope, force)
    if method == "POST" and (match := _V2_APP.match(path)):
        return _v2_app(fake, match.group(1), match.group(2), scope, force)
    if method == "GET" and path == "/v2/applications/state":
        return js(200, view_apps_state(state, scope))
    if method == "GET" and (match := _V2_APP_STATE.match(path)):
        return view_app_state(state, match.group(1), scope)
    if method == "GET" and path == "/v2/state/status":
        return js(200, view_state_status(state))
    if method == "GET" and path == "/v2/version":
        return js(200, {"status": "success", "version": fake.spec.supervisor_version})
    if method == "GET" and path == "/v2/containerId":
        return view_container_id(state, request)
    if path == "/v2/local/target-state" and method in ("GET", "POST"):
        return view_local_target(fake, method, body)
    if method == "GET" and path == "/v2/local/device-info":
        info = {"arch": fake.spec.arch, "deviceType": fake.spec.device_type}
        return js(200, {"status": "success", "info": info})
    if method == "GET" and path == "/v2/local/logs":
        return Stream(stream_logs(fake), JSON_TYPE)
    if method == "GET" and path == "/v2/device/name":
        return js(200, {"status": "success", "deviceName": fake.spec.name})
    if path == "/v2/device/tags" and method in ("GET", "PATCH"):
        return view_tags(state, method, body)
    if method == "GET" and path == "/v2/device/vpn":
        vpn = {"enabled": True, "connected": fake.spec.vpn_connected}
        return js(200, {"status": "success", "vpn": vpn})
    if method == "GET" and path == "/v2/cleanup-volumes":
        state.cleanups += 1
        return js(200, {"status": "success"})
    if method == "POST" and path == "/v2/journal-logs":
        return Stream(stream_journal(fake, body), None)
    return text(404, f"Cannot {method} {path}")


def _power(fake: FakeSupervisor, action: str, force: bool) -> Reply:
    state = fake.state
    lock = None if force else _lock_message(state, list(state.apps))
    if lock:
        return js(423, {"Data": "", "Error": lock})
    state.last_power_action = action

    def after() -> None:
        fake.power_off(come_back=action == "reboot")

    if fake.spec.drop_on_reboot:
        return Reply(0, drop=True, after=after)
    return Reply(*_json_parts(202, {"Data": "OK", "Error": None}), after=after)


def _json_parts(status: int, value: Any) -> tuple[int, bytes, str]:
    reply = js(status, value)
    return reply.status, reply.body, JSON_TYPE


def _v1_app_action(
    fake: FakeSupervisor, action: str, body: dict[str, Any], scope: Scope, force: bool
) -> Reply:
    state = fake.state
    app_id = check_int(body.get("appId"))
    if app_id is None:
        return text(400, "Invalid or missing appId" if action == "purge" else "Missing app id")
    if not scope.allows(app_id):
        return failed(401, "Unauthorized")
    if app_id not in state.apps:
        return failed(503, f"Application with ID {app_id} is not in the current state")
    lock = None if force else _lock_message(state, [app_id])
    if lock:
        return failed(423, lock)
    if action == "purge":
        state.purges.append(app_id)
        return js(200, {"Data": "OK", "Error": ""})
    state.restarts.append(app_id)
    for service in state.apps[app_id].services:
        service.status = "Running"
    return status_text(200, "OK")


def _v1_app(
    fake: FakeSupervisor, method: str, raw_id: str, action: str | None, scope: Scope, force: bool
) -> Reply:
    state = fake.state
    app_id = check_int(raw_id)
    if action is None and method == "GET":
        if app_id is None:
            return text(400, "Missing app id")
        if not scope.allows(app_id):
            return failed(401, "Application is not available")
        app = _app_or_none(state, app_id)
        if app is None or not app.services:
            return text(400, "App not found")
        if len(app.services) > 1:
            return text(400, SINGLE_CONTAINER_ONLY)
        service = app.services[0]
        return js(
            200,
            {
                "appId": app.app_id,
                "commit": app.commit,
                "containerId": service.container_id,
                "env": app.env,
                "imageId": service.image,
                "releaseId": service.release_id,
            },
        )
    if method != "POST" or action is None:
        return text(404, f"Cannot {method} /v1/apps/{raw_id}{action or ''}")
    if app_id is None:
        return text(400, "Invalid app id")
    if not scope.allows(app_id):
        return status_text(401, "Unauthorized")
    app = _app_or_none(state, app_id)
    if app is None or not app.services:
        return text(400, APP_NOT_FOUND)
    if len(app.services) > 1:
        return text(400, V2_SERVICE_ENDPOINT_ERROR)
    service = app.services[0]
    if action == "/stop":
        lock = None if force else _lock_message(state, [app_id])
        if lock:
            return failed(423, lock)
        service.status = "exited"
    else:
        service.status = "Running"
    return js(200, {"containerId": service.container_id})


def _host_config(fake: FakeSupervisor, method: str, body: dict[str, Any], force: bool) -> Reply:
    state = fake.state
    if method == "GET":
        network: dict[str, Any] = {"hostname": state.hostname}
        if state.proxy:
            network["proxy"] = state.proxy
        return js(200, {"network": network})
    net = body.get("network")
    if not isinstance(net, dict):
        return text(
            400,
            "Could not parse host config input to a valid format: "
            f"Invalid value {json.dumps(body)} supplied to : HostConfiguration",
        )
    lock = None if force else _lock_message(state, list(state.apps))
    if lock and ("hostname" in net or "proxy" in net):
        return text(423, lock)
    if "hostname" in net:
        state.hostname = str(net["hostname"] or "") or fake.spec.uuid[:7]
    if "proxy" in net:
        proxy = net["proxy"]
        state.proxy = dict(proxy) if isinstance(proxy, dict) else {}
    return text(200, "OK")


def _service_by(app: FakeApp, body: dict[str, Any]) -> FakeService | None:
    name = body.get("serviceName")
    image_id = check_int(body.get("imageId"))
    for service in app.services:
        if (name is not None and service.name == name) or (
            name is None and image_id is not None and service.image_id == image_id
        ):
            return service
    return None


def _v2_service(
    fake: FakeSupervisor,
    raw_id: str,
    action: str,
    body: dict[str, Any],
    scope: Scope,
    force: bool,
) -> Reply:
    state = fake.state
    app_id = check_int(raw_id)
    if not app_id:
        return failed(400, "Invalid app id")
    if not scope.allows(app_id):
        return failed(401, "Unauthorized")
    if body.get("serviceName") is None and check_int(body.get("imageId")) is None:
        return text(400, V2_SERVICE_ENDPOINT_ERROR)
    app = _app_or_none(state, app_id)
    if app is None:
        return text(404, APP_NOT_FOUND)
    service = _service_by(app, body)
    if service is None:
        return text(404, SERVICE_NOT_FOUND)
    if action != "start":
        lock = None if force else _lock_message(state, [app_id])
        if lock:
            return failed(423, lock)
    service.status = "exited" if action == "stop" else "Running"
    return status_text(200, "OK")


def _v2_app(fake: FakeSupervisor, raw_id: str, action: str, scope: Scope, force: bool) -> Reply:
    state = fake.state
    app_id = check_int(raw_id)
    if not app_id:
        return failed(400, "Missing app id")
    if not scope.allows(app_id):
        return failed(401, "Unauthorized")
    if app_id not in state.apps:
        return failed(503, f"Application with ID {app_id} is not in the current state")
    lock = None if force else _lock_message(state, [app_id])
    if lock:
        return failed(423, lock)
    if action == "purge":
        state.purges.append(app_id)
    else:
        state.restarts.append(app_id)
        for service in state.apps[app_id].services:
            service.status = "Running"
    return status_text(200, "OK")
