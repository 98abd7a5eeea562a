"""The balena API over HTTP: authentication, timeouts, bounded retries and error mapping.

Every call to the balena API (or the sandbox, which speaks the same protocol) goes through a
`BalenaSession`. It sends `Authorization: Bearer <token>` only to the API's own origin, retries
connection failures, 429 and 5xx answers with exponential backoff and jitter (honouring
`Retry-After`) inside a bounded time budget, and turns failures into FlasherErrors: 401/403 →
AuthError, 404 → CatalogError (status 404), other answers → ApiError. The token never appears in
a log line, a repr or an error message; server messages that echo it are redacted.

Imports requests and flasher.balena.pine; never Qt or the faces.
"""

from __future__ import annotations

import email.utils
import itertools
import json as jsonlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from flasher import __version__
from flasher.balena import pine
from flasher.errors import ApiError, AuthError, CatalogError
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

LOGIN_HINT = "Log in with 'balena login', or set BALENA_API_KEY to an API key, or pass --token."
NETWORK_HINT = "Check the network connection, or use --sandbox to work offline."

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Answers that promise the request was not acted on, so even a POST may be sent again.
_NOT_PROCESSED_STATUSES = frozenset({429, 503})
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
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


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


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
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_wait_total_s = max_wait_total_s
        self._sleep = sleep
        self._http = requests.Session()
        self._http.headers["User-Agent"] = f"flasher/{__version__}"

    @classmethod
    def from_environment(
        cls, api_url: str | None = None, token: str | Secret | None = None, **options: Any
    ) -> BalenaSession:
        """A session configured like the balena CLI.

        API URL: `api_url`, else $FLASHER_API_URL, else the balenaCloud API. Token: `token`,
        else $BALENA_API_KEY, else $BALENA_TOKEN, else the token `balena login` saved.
        """
        url = api_url or os.environ.get("FLASHER_API_URL") or DEFAULT_API_URL
        if isinstance(token, str):
            token = Secret(token)
        if not token:
            found = (
                os.environ.get("BALENA_API_KEY")
                or os.environ.get("BALENA_TOKEN")
                or _read_saved_token()
            )
            token = Secret(found) if found else None
        return cls(url, token, **options)

    @property
    def authenticated(self) -> bool:
        return self._token is not None

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
        if self._token is not None and _origin(url) == _origin(self.api_url):
            send_headers["Authorization"] = f"Bearer {self._token.reveal()}"
        where = urlsplit(url).path or "/"
        waited_s = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=send_headers,
                    stream=stream,
                    timeout=(self.connect_timeout_s, self.read_timeout_s),
                )
            except requests.RequestException as err:
                retryable = allow_retry and (method in _IDEMPOTENT_METHODS or _never_sent(err))
                delay_s = self._retry_delay(attempt, None) if retryable else None
                if delay_s is None or waited_s + delay_s > self.max_wait_total_s:
                    raise ApiError(
                        f"Cannot reach the balena API at {self.api_url} ({_reason(err)}).",
                        hint=NETWORK_HINT,
                        url=self.api_url,
                        attempts=attempt,
                    ) from None
                log.info(
                    "%s %s failed (%s); retrying in %.1f s", method, where, _reason(err), delay_s
                )
                waited_s += self._wait(delay_s)
                continue
            log.debug("%s %s -> %d", method, where, response.status_code)
            if response.status_code < 400 or not check_status:
                return response
            retryable = (
                allow_retry
                and response.status_code in _RETRY_STATUSES
                and (
                    method in _IDEMPOTENT_METHODS or response.status_code in _NOT_PROCESSED_STATUSES
                )
            )
            if retryable:
                delay_s = self._retry_delay(attempt, response.headers.get("Retry-After"))
                if delay_s is not None and waited_s + delay_s <= self.max_wait_total_s:
                    log.info(
                        "%s %s -> %d; retrying in %.1f s",
                        method,
                        where,
                        response.status_code,
                        delay_s,
                    )
                    response.close()
                    waited_s += self._wait(delay_s)
                    continue
            raise self._error_for(method, where, response, attempt)

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
                hint="Check that --api-url points at a balena API.",
                resource=resource,
            )
        return [row for row in rows if isinstance(row, dict)]

    def _json_body(self, response: requests.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"The balena API answered {path} with something that is not JSON.",
                hint="Check that --api-url points at a balena API.",
                path=path,
            ) from None

    def _retry_delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when retries are used up."""
        if attempt > self.max_retries:
            return None
        asked_s = _parse_retry_after(retry_after)
        if asked_s is not None:
            return asked_s
        ceiling_s = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))
        # "Equal jitter": at least half the step, so clients that failed together spread out.
        return ceiling_s / 2 + random.uniform(0, ceiling_s / 2)

    def _wait(self, delay_s: float) -> float:
        self._sleep(delay_s)
        return delay_s

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
            return AuthError(text, hint=LOGIN_HINT, status=status, path=where)
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
                retry_after_s=_parse_retry_after(response.headers.get("Retry-After")),
            )
        if status in _RETRY_STATUSES:
            return ApiError(
                f"The balena API failed (HTTP {status}) for {where} after {attempts} "
                f"attempt(s){detail}",
                hint="The service may be busy or down; try again later.",
                status=status,
                path=where,
            )
        return ApiError(
            f"The balena API rejected {method} {where} (HTTP {status}){detail}",
            status=status,
            path=where,
            server_message=message,
        )


def is_not_found(err: CatalogError) -> bool:
    """Whether `err` is the session's answer to an HTTP 404."""
    return type(err) is CatalogError and err.fields.get("status") == 404


def _never_sent(err: requests.RequestException) -> bool:
    """Whether the request certainly never reached the server (so repeating it is harmless)."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    if not isinstance(err, requests.ConnectionError) or not err.args:
        return False
    reason = getattr(err.args[0], "reason", None)
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _reason(err: requests.RequestException) -> str:
    if isinstance(err, requests.Timeout):
        return "timed out"
    if isinstance(err, requests.ConnectionError):
        return "connection failed"
    return type(err).__name__


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - time.time())


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
