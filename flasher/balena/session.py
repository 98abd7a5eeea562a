"""The balena API over HTTP: authentication, timeouts, bounded retries and error mapping.

Every call to the balena API (or the sandbox, which speaks the same protocol) goes through a
`BalenaSession`. It sends `Authorization: Bearer <token>` only to the API's own origin (and
over plain http only to 127.0.0.1/::1: a token for another http URL is refused), retries
connection failures, 408, 429 and 5xx answers with exponential backoff and jitter (honouring
`Retry-After`) inside a bounded time budget (flasher.http: urllib3's Retry on the requests
session), and turns failures into FlasherErrors: 401/403 → AuthError, 404 → CatalogError
(status 404), other answers → ApiError. The token never appears in a log line, a repr or an
error message; server messages that echo it are redacted.

`from_environment` finds the login as the balena CLI does, and sends the saved login (and
BALENA_API_KEY / BALENA_TOKEN) only to the API host it belongs to (flasher.balena.balenarc):
pointed at another API, the session goes without it unless a token is given explicitly.

Imports requests, flasher.http, flasher.balena.pine and flasher.balena.balenarc; never Qt or the
faces.
"""

from __future__ import annotations

import itertools
import json as jsonlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests

from flasher import __version__
from flasher.balena import pine
from flasher.balena.balenarc import may_carry_token, origin, saved_login_api_url
from flasher.error_codes import Action
from flasher.errors import ApiError, AuthError, CatalogError, ConfigError
from flasher.http import (
    RETRY_STATUSES,
    RetryPolicy,
    attempts_of,
    failure_reason,
    retry_after_s,
    retrying_session,
)
from flasher.models import Secret

log = logging.getLogger(__name__)


class _HideQueryStrings(logging.Filter):
    """Cuts query strings out of urllib3's request lines: /download carries the Wi-Fi key there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] + "?…" if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_HideQueryStrings())

DEFAULT_API_URL = "https://api.balena-cloud.com"
PINE_PREFIX = "v7"

NETWORK_HINT = "Check the network connection."

_MAX_MESSAGE_CHARS = 300


def saved_login_token_path() -> Path:
    """Where `balena login` keeps its token: $BALENARC_DATA_DIRECTORY/token or ~/.balena/token."""
    data_dir = os.environ.get("BALENARC_DATA_DIRECTORY")
    return Path(data_dir) if data_dir else Path.home() / ".balena"


def _read_saved_token() -> str | None:
    path = saved_login_token_path() / "token"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


class BalenaSession:
    """An HTTP session on one balena API base URL, with an optional token.

    `max_retries` counts repeats after the first attempt; the waits between them grow from
    `backoff_s` (doubling, with jitter, capped at `max_backoff_s`) and their sum never exceeds
    `max_wait_total_s`. `sleep` is how the session waits (tests pass a recorder).
    """

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        token: Secret | None = None,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_wait_total_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token if token else None
        if self._token is not None and not may_carry_token(self.api_url):
            raise ConfigError(
                "api_url",
                f"{self.api_url} is plain http; a token is only sent over https "
                "(or over http to 127.0.0.1 or ::1)",
                hint="Use the API's https:// address.",
            )
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        policy = RetryPolicy(
            max_retries,
            backoff_factor=backoff_s,
            backoff_max=max_backoff_s,
            max_wait_total_s=max_wait_total_s,
            sleep=sleep,
        )
        self._http = retrying_session(policy)
        self._once = requests.Session()  # for calls that must not be repeated
        for http in (self._http, self._once):
            http.headers["User-Agent"] = f"flasher/{__version__}"

    @classmethod
    def from_environment(
        cls, api_url: str | None = None, token: str | Secret | None = None, **options: Any
    ) -> BalenaSession:
        """A session configured like the balena CLI.

        API URL: `api_url`, else $FLASHER_API_URL, else the API of the balena CLI's settings
        (balenaCloud's by default). Token: `token` (explicit: sent to that URL), else
        $BALENA_API_KEY, else $BALENA_TOKEN, else the token `balena login` saved; those three
        belong to the balena CLI's API and are used only when the URL is that API.
        """
        url = api_url or os.environ.get("FLASHER_API_URL") or saved_login_api_url()
        if isinstance(token, str):
            token = Secret(token)
        if not token:
            found = (
                os.environ.get("BALENA_API_KEY")
                or os.environ.get("BALENA_TOKEN")
                or _read_saved_token()
            )
            token = None
            if found:
                login_url = saved_login_api_url()
                if origin(url) == origin(login_url) and may_carry_token(url):
                    token = Secret(found)
                else:
                    log.warning(
                        "The saved balena login is for %s; it is not sent to %s.",
                        login_url,
                        url.rstrip("/"),
                    )
        return cls(url, token, **options)

    @property
    def authenticated(self) -> bool:
        return self._token is not None

    def authorization_header(self) -> dict[str, str]:
        """The bearer header for balena's own services that share the API's login (the delta
        server); empty without a token. Callers send it to those services only."""
        if self._token is None:
            return {}
        return {"Authorization": f"Bearer {self._token.reveal()}"}

    def __repr__(self) -> str:
        return f"BalenaSession(api_url={self.api_url!r}, authenticated={self.authenticated})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._once.close()

    def url_for(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.api_url}/{path_or_url.lstrip('/')}"

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        allow_retry: bool = True,
        check_status: bool = True,
    ) -> requests.Response:
        """Send a request and return the successful (< 400) response.

        With `stream=True` the body is left unread; the caller closes the response. With
        `check_status=False` every answer is returned as it came (no retry on its status): for
        callers that give the API's statuses their own meaning (the supervisor proxy).
        """
        method = method.upper()
        url = self.url_for(path_or_url)
        send_headers = dict(headers or {})
        # The token belongs to the API; never hand it to another host (CDNs, redirects).
        if self._token is not None and origin(url) == origin(self.api_url):
            send_headers["Authorization"] = f"Bearer {self._token.reveal()}"
        where = urlsplit(url).path or "/"
        # The proxy's statuses are the caller's to read: never retried on them.
        http = self._http if allow_retry and check_status else self._once
        try:
            response = http.request(
                method,
                url,
                params=params,
                json=json,
                headers=send_headers,
                stream=stream,
                timeout=(self.connect_timeout_s, self.read_timeout_s),
            )
        except requests.RequestException as err:
            raise ApiError(
                f"Cannot reach the balena API at {self.api_url} ({failure_reason(err)}).",
                hint=NETWORK_HINT,
                action=Action.USE_SANDBOX,
                url=self.api_url,
                attempts=attempts_of(err),
            ) from None
        log.debug("%s %s -> %d", method, where, response.status_code)
        if response.status_code < 400 or not check_status:
            return response
        raise self._error_for(method, where, response, attempts_of(response))

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = self.request("GET", path, params=params)
        return self._json_body(response, path)

    def post_json(self, path: str, body: Any, *, allow_retry: bool = True) -> Any:
        response = self.request("POST", path, json=body, allow_retry=allow_retry)
        return self._json_body(response, path)

    def pine_get(
        self,
        resource: str,
        options: Mapping[str, Any] | None = None,
        *,
        entity_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """The `d` rows of a pine (OData) GET on `resource`, or on one entity by `entity_id`."""
        path = f"/{PINE_PREFIX}/{pine.resource_path(resource, entity_id)}"
        query = pine.compile_query(options or {})
        body = self.get_json(f"{path}?{query}" if query else path)
        rows = body.get("d") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise ApiError(
                f"The balena API answered {resource} with an unexpected shape.",
                resource=resource,
                action=Action.CHECK_API_URL,
            )
        return [row for row in rows if isinstance(row, dict)]

    def _json_body(self, response: requests.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"The balena API answered {path} with something that is not JSON.",
                path=path,
                action=Action.CHECK_API_URL,
            ) from None

    def _error_for(
        self, method: str, where: str, response: requests.Response, attempts: int
    ) -> CatalogError:
        status = response.status_code
        message = _server_message(response, self._token)
        response.close()
        detail = f": {message}" if message else ""
        if status in (401, 403):
            if self._token is None:
                text = f"The balena API needs a login for {where} (HTTP {status}){detail}"
            else:
                text = f"The balena API refused the credentials for {where} (HTTP {status}){detail}"
            return AuthError(
                text,
                hint="Log in to balena with an account that may do this.",
                action=Action.LOG_IN,
                status=status,
                path=where,
                server_message=message,
            )
        if status == 404:
            return CatalogError(
                f"Not found: {method} {where}{detail}",
                status=status,
                path=where,
                server_message=message,
            )
        if status == 429:
            return ApiError(
                f"The balena API is limiting the request rate for {where} (HTTP 429){detail}",
                hint="Wait a minute and try again.",
                status=status,
                path=where,
                server_message=message,
                retry_after_s=retry_after_s(response),
            )
        if status in RETRY_STATUSES:
            return ApiError(
                f"The balena API failed (HTTP {status}) for {where} after {attempts} "
                f"attempt(s){detail}",
                hint="The service may be busy or down; try again later.",
                status=status,
                path=where,
                server_message=message,
            )
        return ApiError(
            f"The balena API rejected {method} {where} (HTTP {status}){detail}",
            status=status,
            path=where,
            server_message=message,
        )


def is_not_found(err: CatalogError) -> bool:
    """Whether `err` is the session's answer to an HTTP 404."""
    return type(err) is CatalogError and err.status == 404


def _server_message(response: requests.Response, token: Secret | None) -> str:
    """The server's own words about a failure on one line, with any echo of the token removed."""
    try:
        raw = b"".join(itertools.islice(response.iter_content(16 * 1024), 4))
    except (requests.RequestException, RuntimeError):
        return ""
    text = raw.decode("utf-8", errors="replace").strip()
    if token is not None and token.reveal():
        text = text.replace(token.reveal(), "***")
    try:
        body = jsonlib.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, str):
        text = body
    elif isinstance(body, dict):
        for key in ("message", "error", "detail", "msg"):
            value = body.get(key)
            if isinstance(value, str) and value:
                text = value
                break
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text
