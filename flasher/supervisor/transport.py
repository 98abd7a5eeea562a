"""The two ways to reach a device's Supervisor API: directly, or through the balena API's proxy.

`DirectTransport` speaks HTTP to the supervisor itself (`BALENA_SUPERVISOR_ADDRESS`, default port
48484), sending the API key as the documented `apikey` query parameter (what every supervisor
version reads first; request lines are logged without their query strings, and transport errors
are reported without the URL) and no key at all for local-mode and unmanaged devices.
`ProxyTransport` sends `POST <api>/supervisor<path>` with a `uuid`/`deviceId`/`appId` filter,
the `method` and the JSON `data`, over the user's balena login (flasher.balena.session). Both
return the supervisor's answer as an `Answer`; only failures of the transport itself become
errors here (unreachable, offline, not logged in).

Imports requests and flasher.balena.session; never Qt or the faces.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from flasher.balena.session import BalenaSession
from flasher.error_codes import Action
from flasher.errors import AuthError
from flasher.http import failure_reason, never_sent
from flasher.models import Secret
from flasher.supervisor.errors import DeviceError, DeviceOffline, DeviceUnreachable

log = logging.getLogger(__name__)

DEFAULT_PORT = 48484
OFFLINE_MESSAGE = "No online device(s) found"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the supervisor (through the proxy: as the proxy passed it on)."""

    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class ConnectionDropped(Exception):
    """The request was sent but the connection closed before an answer (a reboot does this)."""


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    read_s: float | None
    attempts: int = 1


class Transport(Protocol):
    @property
    def where(self) -> str:
        """The device, short: an address, or the proxy filter."""

    @property
    def subject(self) -> str:
        """The device's supervisor, for a sentence ("the supervisor at …")."""

    @property
    def has_key(self) -> bool: ...

    @property
    def forwards_query(self) -> bool: ...

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        timeouts: Timeouts,
    ) -> Answer: ...

    def open_stream(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        connect_timeout_s: float,
        read_timeout_s: float | None = None,
    ) -> requests.Response: ...

    def close(self) -> None: ...


def normalize_address(address: str) -> str:
    """`host`, `host:port` or `http://host:port` as a base URL (default port 48484)."""
    text = address.strip().rstrip("/")
    if not text:
        raise ValueError("empty address")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http address: {address}")
    if parts.path or parts.query:
        raise ValueError(f"an address has no path or query: {address}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{parts.port or DEFAULT_PORT}"


class DirectTransport:
    """HTTP straight to one supervisor. The key is a Secret; it goes only to `address`."""

    def __init__(
        self,
        address: str,
        api_key: Secret | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.address = normalize_address(address)
        self._key = api_key if api_key else None
        self._sleep = sleep
        self._http = requests.Session()
        self._http.trust_env = False  # a device on the LAN is never reached through a proxy

    @classmethod
    def from_environment(
        cls, address: str | None = None, api_key: str | Secret | None = None
    ) -> DirectTransport:
        """As a service container has it: $BALENA_SUPERVISOR_ADDRESS and $BALENA_SUPERVISOR_API_KEY
        unless given (the RESIN_ names of older supervisors too)."""
        found = (
            address
            or os.environ.get("BALENA_SUPERVISOR_ADDRESS")
            or os.environ.get("RESIN_SUPERVISOR_ADDRESS")
        )
        if not found:
            raise ValueError("no supervisor address")
        if isinstance(api_key, str):
            api_key = Secret(api_key)
        if api_key is None:
            env_key = os.environ.get("BALENA_SUPERVISOR_API_KEY") or os.environ.get(
                "RESIN_SUPERVISOR_API_KEY"
            )
            api_key = Secret(env_key) if env_key else None
        return cls(found, api_key)

    @property
    def where(self) -> str:
        return self.address

    @property
    def subject(self) -> str:
        return f"the supervisor at {self.address}"

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def forwards_query(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"DirectTransport(address={self.address!r}, has_key={self.has_key})"

    def _auth(self, query: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
        headers: dict[str, str] = {}
        params = dict(query or {})
        if self._key is not None:
            params["apikey"] = self._key.reveal()
        return headers, params

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        timeouts: Timeouts,
    ) -> Answer:
        headers, params = self._auth(query)
        url = self.address + path
        tried: list[str] = []
        for attempt in range(1, max(1, timeouts.attempts) + 1):
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params or None,
                    json=body,
                    headers=headers,
                    timeout=(timeouts.connect_s, timeouts.read_s),
                    allow_redirects=False,
                )
            except requests.RequestException as err:
                dropped = not never_sent(err) and not isinstance(err, requests.ReadTimeout)
                if dropped and method != "GET":
                    raise ConnectionDropped(failure_reason(err)) from None
                tried.append(f"{method} {self.address}{path}: {failure_reason(err)}")
                # Only a request that never left is repeated; an action is never sent twice.
                if attempt < timeouts.attempts and (method == "GET" or never_sent(err)):
                    log.info("%s %s: %s; retrying", method, path, failure_reason(err))
                    self._sleep(min(0.5 * attempt, 2.0))
                    continue
                raise DeviceUnreachable(
                    f"Cannot reach the supervisor at {self.address}: {method} {path} failed "
                    f"{attempt} time(s) ({failure_reason(err)}).",
                    where=self.address,
                    tried=tuple(tried),
                    hint="Check that the device is on, on this network, and that its supervisor "
                    "API is reachable from here (it is from the LAN only in local mode).",
                ) from None
            with response:
                return Answer(
                    response.status_code, response.headers.get("Content-Type", ""), response.content
                )
        raise AssertionError("unreachable")

    def open_stream(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        connect_timeout_s: float,
        read_timeout_s: float | None = None,
    ) -> requests.Response:
        headers, params = self._auth(None)
        try:
            return self._http.request(
                method,
                self.address + path,
                params=params or None,
                json=body,
                headers=headers,
                stream=True,
                timeout=(connect_timeout_s, read_timeout_s),
            )
        except requests.RequestException as err:
            raise DeviceUnreachable(
                f"Cannot reach the supervisor at {self.address} ({failure_reason(err)}).",
                where=self.address,
                tried=(f"{method} {self.address}{path}: {failure_reason(err)}",),
            ) from None

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True)
class ProxyTarget:
    """Which devices the proxy forwards to; the API ANDs the filters it is given."""

    uuid: str | None = None
    device_id: int | None = None
    app_id: int | None = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.uuid:
            out["uuid"] = self.uuid
        if self.device_id is not None:
            out["deviceId"] = self.device_id
        if self.app_id is not None:
            out["appId"] = self.app_id
        return out

    def describe(self) -> str:
        if self.uuid:
            return f"device {self.uuid[:7]}"
        parts = [f"{k} {v}" for k, v in self.fields().items()]
        return "devices with " + ", ".join(parts) if parts else "no device"


class ProxyTransport:
    """The balena API's `/supervisor` proxy, with the session's login (same token rules)."""

    def __init__(self, session: BalenaSession, target: ProxyTarget) -> None:
        if not target.fields():
            raise ValueError("the proxy needs a uuid, a device id or an app id")
        self.session = session
        self.target = target

    @property
    def where(self) -> str:
        return self.target.describe()

    @property
    def subject(self) -> str:
        return (
            f"the supervisor of {self.target.describe()} (through the balena API at "
            f"{self.session.api_url})"
        )

    @property
    def has_key(self) -> bool:
        return True

    @property
    def forwards_query(self) -> bool:
        return False  # the API forwards the path only

    def _payload(self, method: str, body: Any) -> dict[str, Any]:
        payload = {**self.target.fields(), "method": method}
        if body is not None:
            payload["data"] = body
        return payload

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        timeouts: Timeouts,
    ) -> Answer:
        response = self.session.request(
            "POST",
            f"/supervisor{path}",
            json=self._payload(method, body),
            allow_retry=method == "GET",
            check_status=False,
        )
        with response:
            answer = Answer(
                response.status_code, response.headers.get("Content-Type", ""), response.content
            )
        self._check(answer, path)
        return answer

    def _check(self, answer: Answer, path: str) -> None:
        api = self.session.api_url
        if answer.status in (401, 403):
            raise AuthError(
                f"The balena API refused the supervisor proxy request for {path} "
                f"(HTTP {answer.status}).",
                hint="Log in to balena with an account that can reach this device.",
                action=Action.LOG_IN,
                status=answer.status,
                path=path,
            )
        message = answer.json()
        text = message if isinstance(message, str) else answer.text.strip()
        if answer.status == 404 and OFFLINE_MESSAGE.lower() in answer.text.lower():
            raise DeviceOffline(
                f"The balena API at {api} found no online device for {self.target.describe()}.",
                where=self.where,
                status=404,
                server_message=text,
                hint="Check the uuid, that the device is online (connected to the VPN) and "
                "that this login can see it.",
            )
        if answer.status == 502:
            raise DeviceUnreachable(
                f"The balena API at {api} could not reach {self.target.describe()} "
                f"(HTTP 502: {text or 'no details'}).",
                where=self.where,
                status=502,
                server_message=text,
                tried=(f"POST {api}/supervisor{path}",),
                hint="The device may have just gone offline or be rebooting; try again later.",
            )

    def open_stream(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        connect_timeout_s: float,
        read_timeout_s: float | None = None,
    ) -> requests.Response:
        raise DeviceError(
            f"{path} streams without end, and the balena API's proxy only passes complete answers.",
            where=self.where,
            hint="Reach the device directly by its address to stream from it.",
        )

    def close(self) -> None:
        """The session belongs to the caller."""


def iter_lines(response: requests.Response) -> Iterator[bytes]:
    """A streamed answer's lines; closing the iterator closes the connection."""
    try:
        yield from response.iter_lines(chunk_size=1)
    except requests.RequestException:
        return
    finally:
        response.close()
