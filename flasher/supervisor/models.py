"""Typed answers of the Supervisor API: frozen dataclasses built from the supervisor's JSON.

Each `from_json` is lenient about missing fields (the supervisor adds fields over the years and
leaves some null until known) and strict about nothing else. Secrets (a proxy password, a new
API key) are `Secret`s. Imports only the standard library and flasher.models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flasher.models import Secret


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _words(value: Any) -> tuple[str, ...]:
    return tuple(str(value).split()) if value else ()


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class DeviceReply:
    """One device's part of a 207 fleet-wide proxy answer."""

    status: int
    body: Any


@dataclass(frozen=True)
class ActionResult:
    """What an action answered: the status, the supervisor's words, and whether the connection
    closed before any answer (expected of a reboot or shutdown). Sent to a whole fleet through
    the proxy (207), `replies` holds each online device's answer."""

    status: int | None
    message: str = ""
    container_id: str | None = None
    connection_dropped: bool = False
    replies: tuple[DeviceReply, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "message": self.message,
            "container_id": self.container_id,
            "connection_dropped": self.connection_dropped,
        }
        if self.status == 207:
            out["replies"] = [{"status": r.status, "body": r.body} for r in self.replies]
        return out


@dataclass(frozen=True)
class DeviceState:
    """GET /v1/device."""

    api_port: int | None
    ip_addresses: tuple[str, ...]
    mac_addresses: tuple[str, ...]
    commit: str | None
    status: str | None
    download_progress: float | None
    os_version: str | None
    supervisor_version: str | None
    update_pending: bool
    update_downloaded: bool
    update_failed: bool
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Any) -> DeviceState:
        data = _obj(body)
        return cls(
            api_port=_int(data.get("api_port")),
            ip_addresses=_words(data.get("ip_address")),
            mac_addresses=_words(data.get("mac_address")),
            commit=_str(data.get("commit")),
            status=_str(data.get("status")),
            download_progress=_float(data.get("download_progress")),
            os_version=_str(data.get("os_version")),
            supervisor_version=_str(data.get("supervisor_version")),
            update_pending=bool(data.get("update_pending")),
            update_downloaded=bool(data.get("update_downloaded")),
            update_failed=bool(data.get("update_failed")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class DeviceInfo:
    """GET /v2/local/device-info."""

    arch: str | None
    device_type: str | None

    @classmethod
    def from_json(cls, body: Any) -> DeviceInfo:
        info = _obj(_obj(body).get("info"))
        return cls(arch=_str(info.get("arch")), device_type=_str(info.get("deviceType")))


@dataclass(frozen=True)
class AppV1:
    """GET /v1/apps/:appId (single-container apps)."""

    app_id: int | None
    commit: str | None
    image_id: str | None
    container_id: str | None
    release_id: int | None
    env: Mapping[str, str] = field(compare=False)

    @classmethod
    def from_json(cls, body: Any) -> AppV1:
        data = _obj(body)
        env = {str(k): str(v) for k, v in _obj(data.get("env")).items()}
        return cls(
            app_id=_int(data.get("appId")),
            commit=_str(data.get("commit")),
            image_id=_str(data.get("imageId")),
            container_id=_str(data.get("containerId")),
            release_id=_int(data.get("releaseId")),
            env=env,
        )


@dataclass(frozen=True)
class ServiceState:
    name: str
    status: str | None
    release_id: int | None
    download_progress: float | None
    image: str | None


@dataclass(frozen=True)
class AppState:
    """One entry of GET /v2/applications/state (keyed by app name)."""

    name: str
    app_id: int | None
    app_uuid: str | None
    commit: str | None
    update_status: str | None
    services: tuple[ServiceState, ...]

    @classmethod
    def all_from_json(cls, body: Any) -> tuple[AppState, ...]:
        apps = []
        for name, value in _obj(body).items():
            app = _obj(value)
            services = tuple(
                ServiceState(
                    name=str(sname),
                    status=_str(s.get("status")),
                    release_id=_int(s.get("releaseId")),
                    download_progress=_float(s.get("downloadProgress")),
                    image=_str(s.get("image")),
                )
                for sname, s in ((n, _obj(v)) for n, v in _obj(app.get("services")).items())
            )
            apps.append(
                cls(
                    name=str(name),
                    app_id=_int(app.get("appId")),
                    app_uuid=_str(app.get("appUuid")),
                    commit=_str(app.get("commit")),
                    update_status=_str(app.get("updateStatus")),
                    services=services,
                )
            )
        return tuple(apps)


@dataclass(frozen=True)
class Container:
    service_name: str
    status: str | None
    app_id: int | None
    image_id: int | None
    service_id: int | None
    container_id: str | None
    created_at: str | None


@dataclass(frozen=True)
class ImageState:
    name: str
    service_name: str | None
    app_id: int | None
    image_id: int | None
    status: str | None
    download_progress: float | None


@dataclass(frozen=True)
class StateStatus:
    """GET /v2/state/status: `app_state` is "applying" or "applied"."""

    app_state: str | None
    overall_download_progress: float | None
    release: str | None
    containers: tuple[Container, ...]
    images: tuple[ImageState, ...]

    @classmethod
    def from_json(cls, body: Any) -> StateStatus:
        data = _obj(body)
        containers = tuple(
            Container(
                service_name=str(c.get("serviceName", "")),
                status=_str(c.get("status")),
                app_id=_int(c.get("appId")),
                image_id=_int(c.get("imageId")),
                service_id=_int(c.get("serviceId")),
                container_id=_str(c.get("containerId")),
                created_at=_str(c.get("createdAt")),
            )
            for c in map(_obj, data.get("containers") or ())
        )
        images = tuple(
            ImageState(
                name=str(i.get("name", "")),
                service_name=_str(i.get("serviceName")),
                app_id=_int(i.get("appId")),
                image_id=_int(i.get("imageId")),
                status=_str(i.get("status")),
                download_progress=_float(i.get("downloadProgress")),
            )
            for i in map(_obj, data.get("images") or ())
        )
        return cls(
            app_state=_str(data.get("appState")),
            overall_download_progress=_float(data.get("overallDownloadProgress")),
            release=_str(data.get("release")),
            containers=containers,
            images=images,
        )


PROXY_TYPES = ("socks4", "socks5", "http-connect", "http-relay")


@dataclass(frozen=True)
class ProxySettings:
    """The host's redsocks proxy; the password is a Secret."""

    type: str
    ip: str
    port: int | None
    login: str | None = None
    password: Secret | None = None
    no_proxy: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "ip": self.ip}
        if self.port is not None:
            out["port"] = self.port
        if self.login:
            out["login"] = self.login
        if self.password:
            out["password"] = self.password.reveal()
        if self.no_proxy:
            out["noProxy"] = list(self.no_proxy)
        return out


@dataclass(frozen=True)
class HostConfig:
    """GET /v1/device/host-config."""

    hostname: str | None
    proxy: ProxySettings | None

    @classmethod
    def from_json(cls, body: Any) -> HostConfig:
        network = _obj(_obj(body).get("network"))
        raw = _obj(network.get("proxy"))
        proxy = None
        if raw:
            password = raw.get("password")
            proxy = ProxySettings(
                type=str(raw.get("type", "")),
                ip=str(raw.get("ip", "")),
                port=_int(raw.get("port")),
                login=_str(raw.get("login")),
                password=Secret(str(password)) if password else None,
                no_proxy=tuple(str(x) for x in raw.get("noProxy") or ()),
            )
        return cls(hostname=_str(network.get("hostname")), proxy=proxy)

    def to_dict(self) -> dict[str, Any]:
        """For display: the proxy password is shown only as whether there is one."""
        proxy = None
        if self.proxy is not None:
            proxy = {
                "type": self.proxy.type,
                "ip": self.proxy.ip,
                "port": self.proxy.port,
                "login": self.proxy.login,
                "has_password": self.proxy.password is not None,
                "no_proxy": list(self.proxy.no_proxy),
            }
        return {"hostname": self.hostname, "proxy": proxy}


@dataclass(frozen=True)
class Tag:
    name: str
    value: str
    id: int | None = None


@dataclass(frozen=True)
class VpnStatus:
    enabled: bool
    connected: bool


@dataclass(frozen=True)
class LogLine:
    """One NDJSON line of /v2/local/logs."""

    message: str
    timestamp_ms: int | None
    service_name: str | None
    is_system: bool
    is_stderr: bool

    @classmethod
    def from_json(cls, body: Any) -> LogLine:
        data = _obj(body)
        return cls(
            message=str(data.get("message", "")),
            timestamp_ms=_int(data.get("timestamp")),
            service_name=_str(data.get("serviceName")),
            is_system=bool(data.get("isSystem")),
            is_stderr=bool(data.get("isStdErr")),
        )
