"""One client for every endpoint of the Supervisor API, over either transport.

`SupervisorClient(transport)` has one method per endpoint (unauthenticated, v1, v2, local mode).
Reads are retried when the connection could not be made; actions are sent once. Ping answers
fast or fails fast. A reboot or shutdown whose connection closes before the answer is reported as
`connection_dropped`, not as a failure: the device is going down, as asked. Error answers become
the DeviceError subclasses of flasher.supervisor.errors. Streams (`logs`, `journal`) are
iterators; closing them (or leaving a `for` loop early) closes the connection.

Imports requests (through the transports) and flasher.supervisor; never Qt or the faces.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from typing import Any

from flasher.models import Secret
from flasher.supervisor.errors import (
    DeviceBadRequest,
    DeviceConflict,
    DeviceError,
    DeviceLocked,
    DeviceNotFound,
    DeviceUnauthorized,
    SupervisorFailed,
)
from flasher.supervisor.models import (
    ActionResult,
    AppState,
    AppV1,
    DeviceInfo,
    DeviceReply,
    DeviceState,
    HostConfig,
    LogLine,
    ProxySettings,
    StateStatus,
    Tag,
    VpnStatus,
)
from flasher.supervisor.transport import Answer, ConnectionDropped, Timeouts, Transport, iter_lines

PING = Timeouts(connect_s=2.0, read_s=3.0, attempts=1)
READ = Timeouts(connect_s=5.0, read_s=20.0, attempts=3)
ACTION = Timeouts(connect_s=5.0, read_s=60.0, attempts=1)
_MAX_MESSAGE_CHARS = 400


def _message(answer: Answer) -> str:
    """The supervisor's words: `message`, a v1 `Error`, a JSON string, or the text body."""
    body = answer.json()
    if isinstance(body, dict):
        for key in ("message", "Error", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:_MAX_MESSAGE_CHARS]
        return ""
    if isinstance(body, str):
        return body[:_MAX_MESSAGE_CHARS]
    return " ".join(answer.text.split())[:_MAX_MESSAGE_CHARS]


class SupervisorClient:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> SupervisorClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        timeouts: Timeouts = READ,
        app_id: int | None = None,
    ) -> Answer:
        answer = self.transport.call(method, path, query=query, body=body, timeouts=timeouts)
        if answer.status >= 400:
            raise self._error(method, path, answer, app_id)
        return answer

    def _who(self) -> str:
        subject = self.transport.subject
        return subject[:1].upper() + subject[1:]

    def _error(self, method: str, path: str, answer: Answer, app_id: int | None) -> DeviceError:
        where = self.transport.where
        status = answer.status
        text = _message(answer)
        said = f": {text}" if text else ""
        if status == 401:
            if not self.transport.has_key:
                expected = (
                    "the device's supervisor API key (BALENA_SUPERVISOR_API_KEY in a service "
                    "container); only local-mode and unmanaged devices answer without one"
                )
                what = "a request without an API key"
            elif app_id is not None:
                expected = (
                    f"the device's global supervisor API key, or a key scoped to app {app_id}"
                )
                what = "the API key"
            else:
                expected = "the device's supervisor API key"
                what = "the API key"
            return DeviceUnauthorized(
                f"{self._who()} refused {what} for {method} {path} (HTTP 401).",
                where=where,
                expected_key=expected,
                status=401,
                server_message=text,
            )
        if status == 423:
            return DeviceLocked(
                f"{self._who()} is locked against {method} {path}{said}",
                where=where,
                lock_message=text,
                status=423,
            )
        kinds: dict[int, type[DeviceError]] = {
            400: DeviceBadRequest,
            404: DeviceNotFound,
            409: DeviceConflict,
        }
        kind = kinds.get(status, SupervisorFailed)
        hint = None
        if kind is SupervisorFailed:
            hint = "The supervisor reported a failure; its logs (journal) may tell more."
        return kind(
            f"{self._who()} answered {method} {path} with HTTP {status}{said}",
            where=where,
            status=status,
            server_message=text,
            hint=hint,
        )

    def _json(self, answer: Answer, path: str) -> Any:
        body = answer.json()
        if body is None:
            raise SupervisorFailed(
                f"{self._who()} answered {path} with something that is not JSON.",
                where=self.transport.where,
                status=answer.status,
            )
        return body

    def _action(
        self,
        path: str,
        body: Any = None,
        *,
        app_id: int | None = None,
        method: str = "POST",
        drop_ok: bool = False,
    ) -> ActionResult:
        try:
            answer = self._call(method, path, body=body, timeouts=ACTION, app_id=app_id)
        except ConnectionDropped:
            if not drop_ok:
                raise SupervisorFailed(
                    f"{self._who()} closed the connection during "
                    f"{method} {path} without an answer.",
                    where=self.transport.where,
                    hint="Check whether the action happened before trying again.",
                ) from None
            return ActionResult(status=None, connection_dropped=True)
        if answer.status == 207:
            replies = fleet_replies(answer)
            return ActionResult(status=207, message=f"{len(replies)} device(s)", replies=replies)
        body_json = answer.json()
        container = body_json.get("containerId") if isinstance(body_json, dict) else None
        return ActionResult(status=answer.status, message=_message(answer), container_id=container)

    @staticmethod
    def _force(force: bool) -> dict[str, Any]:
        return {"force": True} if force else {}

    # -- unauthenticated ---------------------------------------------------------------------

    def ping(self) -> bool:
        """GET /ping: True when the supervisor answers OK."""
        answer = self._call("GET", "/ping", timeouts=PING)
        return answer.text.strip() == "OK" or answer.json() == "OK"

    def healthy(self) -> bool:
        """GET /v1/healthy: True on 200, False on the supervisor's 500 "Unhealthy"."""
        answer = self.transport.call("GET", "/v1/healthy", timeouts=READ)
        if answer.status == 500:
            return False
        if answer.status >= 400:
            raise self._error("GET", "/v1/healthy", answer, None)
        return True

    # -- v1 ----------------------------------------------------------------------------------

    def blink(self) -> ActionResult:
        return self._action("/v1/blink")

    def regenerate_api_key(self) -> Secret:
        """POST /v1/regenerate-api-key: the old key stops working at once."""
        answer = self._call("POST", "/v1/regenerate-api-key", timeouts=ACTION)
        return Secret(answer.text.strip())

    def update(self, *, force: bool = False) -> ActionResult:
        """POST /v1/update: 204 when applied at once, 202 when only noted."""
        return self._action("/v1/update", self._force(force))

    def reboot(self, *, force: bool = False) -> ActionResult:
        return self._action("/v1/reboot", self._force(force), drop_ok=True)

    def shutdown(self, *, force: bool = False) -> ActionResult:
        return self._action("/v1/shutdown", self._force(force), drop_ok=True)

    def purge(self, app_id: int, *, force: bool = False) -> ActionResult:
        """POST /v1/purge: clears the app's /data and volumes."""
        return self._action("/v1/purge", {"appId": app_id, **self._force(force)}, app_id=app_id)

    def restart(self, app_id: int, *, force: bool = False) -> ActionResult:
        """POST /v1/restart: recreates every service container of the app."""
        return self._action("/v1/restart", {"appId": app_id, **self._force(force)}, app_id=app_id)

    def device(self) -> DeviceState:
        return DeviceState.from_json(self._json(self._call("GET", "/v1/device"), "/v1/device"))

    def stop_app(self, app_id: int, *, force: bool = False) -> ActionResult:
        """POST /v1/apps/:appId/stop (single-container apps)."""
        return self._action(f"/v1/apps/{app_id}/stop", self._force(force), app_id=app_id)

    def start_app(self, app_id: int) -> ActionResult:
        """POST /v1/apps/:appId/start (single-container apps)."""
        return self._action(f"/v1/apps/{app_id}/start", app_id=app_id)

    def app(self, app_id: int) -> AppV1:
        path = f"/v1/apps/{app_id}"
        return AppV1.from_json(self._json(self._call("GET", path, app_id=app_id), path))

    def host_config(self) -> HostConfig:
        path = "/v1/device/host-config"
        return HostConfig.from_json(self._json(self._call("GET", path), path))

    def set_host_config(
        self,
        *,
        hostname: str | None = None,
        proxy: ProxySettings | None = None,
        clear_proxy: bool = False,
        force: bool = False,
    ) -> ActionResult:
        """PATCH /v1/device/host-config; an empty hostname resets it, `clear_proxy` removes
        the proxy. Unset fields are left as they are."""
        network: dict[str, Any] = {}
        if hostname is not None:
            network["hostname"] = hostname
        if clear_proxy:
            network["proxy"] = {}
        elif proxy is not None:
            network["proxy"] = proxy.to_json()
        return self._action(
            "/v1/device/host-config", {"network": network, **self._force(force)}, method="PATCH"
        )

    # -- v2 ----------------------------------------------------------------------------------

    def _service_action(
        self,
        app_id: int,
        action: str,
        service_name: str | None,
        image_id: int | None,
        force: bool,
    ) -> ActionResult:
        body: dict[str, Any] = self._force(force)
        if service_name is not None:
            body["serviceName"] = service_name
        if image_id is not None:
            body["imageId"] = image_id
        path = f"/v2/applications/{app_id}/{action}-service"
        return self._action(path, body, app_id=app_id)

    def restart_service(
        self,
        app_id: int,
        *,
        service_name: str | None = None,
        image_id: int | None = None,
        force: bool = False,
    ) -> ActionResult:
        return self._service_action(app_id, "restart", service_name, image_id, force)

    def stop_service(
        self,
        app_id: int,
        *,
        service_name: str | None = None,
        image_id: int | None = None,
        force: bool = False,
    ) -> ActionResult:
        return self._service_action(app_id, "stop", service_name, image_id, force)

    def start_service(
        self,
        app_id: int,
        *,
        service_name: str | None = None,
        image_id: int | None = None,
        force: bool = False,
    ) -> ActionResult:
        return self._service_action(app_id, "start", service_name, image_id, force)

    def restart_app(self, app_id: int, *, force: bool = False) -> ActionResult:
        """POST /v2/applications/:appId/restart."""
        path = f"/v2/applications/{app_id}/restart"
        return self._action(path, self._force(force), app_id=app_id)

    def purge_app(self, app_id: int, *, force: bool = False) -> ActionResult:
        """POST /v2/applications/:appId/purge."""
        return self._action(f"/v2/applications/{app_id}/purge", self._force(force), app_id=app_id)

    def apps(self) -> tuple[AppState, ...]:
        path = "/v2/applications/state"
        return AppState.all_from_json(self._json(self._call("GET", path), path))

    def app_state(self, app_id: int) -> Mapping[str, Any]:
        """GET /v2/applications/:appId/state, as the supervisor shapes it."""
        path = f"/v2/applications/{app_id}/state"
        body = self._json(self._call("GET", path, app_id=app_id), path)
        return body if isinstance(body, dict) else {}

    def state_status(self) -> StateStatus:
        path = "/v2/state/status"
        return StateStatus.from_json(self._json(self._call("GET", path), path))

    def version(self) -> str:
        body = self._json(self._call("GET", "/v2/version"), "/v2/version")
        return str(body.get("version", "")) if isinstance(body, dict) else ""

    def container_ids(self, service_name: str | None = None) -> Mapping[str, str]:
        """GET /v2/containerId: service name -> container id (one service when named).

        The proxy does not forward query strings, so through it the full map is filtered here.
        """
        path = "/v2/containerId"
        query = None
        if service_name and self.transport.forwards_query:
            query = {
                "service": service_name
            }  # the documented name (newer ones also take serviceName)
        body = self._json(self._call("GET", path, query=query), path)
        if isinstance(body, dict) and "containerId" in body and service_name:
            return {service_name: str(body["containerId"])}
        services = body.get("services") if isinstance(body, dict) else None
        found = {str(k): str(v) for k, v in (services or {}).items()}
        if service_name is None:
            return found
        if service_name not in found:
            raise SupervisorFailed(
                f"{self._who()} has no service named {service_name!r}.",
                where=self.transport.where,
                status=503,
                server_message="Could not find service with that name",
            )
        return {service_name: found[service_name]}

    def local_target_state(self) -> Mapping[str, Any]:
        path = "/v2/local/target-state"
        body = self._json(self._call("GET", path), path)
        state = body.get("state") if isinstance(body, dict) else None
        return state if isinstance(state, dict) else {}

    def set_local_target_state(self, state: Mapping[str, Any]) -> ActionResult:
        """POST /v2/local/target-state (local mode only)."""
        return self._action("/v2/local/target-state", dict(state))

    def device_info(self) -> DeviceInfo:
        path = "/v2/local/device-info"
        return DeviceInfo.from_json(self._json(self._call("GET", path), path))

    def device_name(self) -> str:
        body = self._json(self._call("GET", "/v2/device/name"), "/v2/device/name")
        return str(body.get("deviceName", "")) if isinstance(body, dict) else ""

    def tags(self) -> tuple[Tag, ...]:
        body = self._json(self._call("GET", "/v2/device/tags"), "/v2/device/tags")
        rows = body.get("tags") if isinstance(body, dict) else None
        return tuple(
            Tag(name=str(t.get("name", "")), value=str(t.get("value", "")), id=t.get("id"))
            for t in rows or ()
            if isinstance(t, dict)
        )

    def set_tags(self, tags: Mapping[str, str]) -> ActionResult:
        """PATCH /v2/device/tags (supervisor 17.8 and later)."""
        return self._action("/v2/device/tags", dict(tags), method="PATCH")

    def vpn(self) -> VpnStatus:
        body = self._json(self._call("GET", "/v2/device/vpn"), "/v2/device/vpn")
        vpn = body.get("vpn") if isinstance(body, dict) else None
        vpn = vpn if isinstance(vpn, dict) else {}
        return VpnStatus(enabled=bool(vpn.get("enabled")), connected=bool(vpn.get("connected")))

    def cleanup_volumes(self) -> ActionResult:
        """GET /v2/cleanup-volumes (a GET that acts; never retried)."""
        answer = self._call("GET", "/v2/cleanup-volumes", timeouts=ACTION)
        return ActionResult(status=answer.status, message=_message(answer))

    # -- streams -----------------------------------------------------------------------------

    def _open(
        self, method: str, path: str, body: Any = None, idle_timeout_s: float | None = None
    ) -> Any:
        response = self.transport.open_stream(
            method, path, body=body, connect_timeout_s=5.0, read_timeout_s=idle_timeout_s
        )
        if response.status_code >= 400:
            with response:
                answer = Answer(
                    response.status_code, response.headers.get("Content-Type", ""), response.content
                )
            raise self._error(method, path, answer, None)
        return response

    def logs(self, *, idle_timeout_s: float | None = None) -> Generator[LogLine, None, None]:
        """GET /v2/local/logs: the supervisor's and services' log lines as they come. The
        stream never ends by itself; with `idle_timeout_s` it ends after that long silent."""
        response = self._open("GET", "/v2/local/logs", idle_timeout_s=idle_timeout_s)
        for raw in iter_lines(response):
            if not raw.strip():
                continue
            try:
                yield LogLine.from_json(json.loads(raw))
            except ValueError:
                yield LogLine(raw.decode("utf-8", "replace"), None, None, False, False)

    def journal(
        self,
        *,
        count: int | None = None,
        unit: str | None = None,
        follow: bool = False,
        all_fields: bool = False,
        container_id: str | None = None,
        output_format: str | None = None,
        since: str | None = None,
        until: str | None = None,
        idle_timeout_s: float | None = None,
    ) -> Generator[str, None, None]:
        """POST /v2/journal-logs: journalctl's output, line by line."""
        body: dict[str, Any] = {}
        if follow:
            body["follow"] = True
        if all_fields:
            body["all"] = True
        if count is not None:
            body["count"] = count
        for key, value in (
            ("unit", unit),
            ("containerId", container_id),
            ("format", output_format),
            ("since", since),
            ("until", until),
        ):
            if value is not None:
                body[key] = value
        response = self._open("POST", "/v2/journal-logs", body, idle_timeout_s)
        for raw in iter_lines(response):
            yield raw.decode("utf-8", "replace")


def fleet_replies(answer: Answer) -> tuple[DeviceReply, ...]:
    """The per-device parts of a proxy's 207 answer to an app-wide request."""
    body = answer.json()
    return tuple(
        DeviceReply(status=int(item.get("statusCode", 0)), body=item.get("body"))
        for item in body or ()
        if isinstance(item, dict)
    )
