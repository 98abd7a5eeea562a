"""The fake supervisor's HTTP vocabulary: requests, replies, streams, value parsing, messages.

Replies follow Express 4 as the real supervisor uses it: res.send(text) is text/html,
res.sendStatus(n) is text/plain with the status text, res.json is application/json. Value
parsing follows its lib/validation.ts (checkInt, checkTruthy). Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
PLAIN_TYPE = "text/plain; charset=utf-8"

APP_NOT_FOUND = (
    "App not found: an app needs to be installed for this endpoint to work.\n"
    "\tIf you've recently moved this device from another app,\n"
    "\tplease push an app and wait for it to be installed first."
)
V2_SERVICE_ENDPOINT_ERROR = (
    "serviceName or imageId parameters were not provided or the app is multi-container. "
    "Use the v2 service action endpoints."
)
SERVICE_NOT_FOUND = "Service not found, a container must exist for this endpoint to work"
SINGLE_CONTAINER_ONLY = "Some v1 endpoints are only allowed on single-container apps"
_KEY_HEADER = re.compile(r"^(bearer|apikey) (\w+)$", re.IGNORECASE)
_INT = re.compile(r"^-?[0-9]+\.?0*$")
_TRUTHY = (True, 1, "1", "true", "on")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    authorization: str
    raw_body: bytes
    content_type: str

    def key(self) -> tuple[str | None, str | None]:
        """The key the supervisor would read: ?apikey= first, else the Authorization header."""
        from_query = self.query.get("apikey")
        if from_query:
            return from_query, "query"
        match = _KEY_HEADER.match(self.authorization)
        if match:
            return match.group(2), match.group(1).lower()
        return None, None

    def body(self) -> dict[str, Any]:
        if not self.raw_body:
            return {}
        if "application/x-www-form-urlencoded" in self.content_type:
            return dict(parse_qsl(self.raw_body.decode("utf-8", "replace")))
        value = json.loads(self.raw_body)
        return value if isinstance(value, dict) else {}


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    after: Callable[[], None] | None = None
    drop: bool = False


@dataclass
class Stream:
    chunks: Iterator[bytes]
    content_type: str | None = None
    after: Callable[[], None] | None = field(default=None)
    drop: bool = False


def text(status: int, message: str, content_type: str = HTML_TYPE) -> Reply:
    return Reply(status, message.encode(), content_type)


def status_text(status: int, message: str) -> Reply:
    """res.sendStatus: the status text as text/plain (204 has no body)."""
    return Reply(status, b"" if status == 204 else message.encode(), PLAIN_TYPE)


def js(status: int, value: Any) -> Reply:
    return Reply(status, json.dumps(value, separators=(",", ":")).encode(), JSON_TYPE)


def failed(status: int, message: str) -> Reply:
    return js(status, {"status": "failed", "message": message})


def check_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.match(value):
        return int(float(value))
    return None


def truthy(value: Any) -> bool:
    return (value.lower() if isinstance(value, str) else value) in _TRUTHY


class Denied(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply


@dataclass(frozen=True)
class Scope:
    global_: bool
    app_id: int | None = None

    def allows(self, app_id: int) -> bool:
        return self.global_ or self.app_id == app_id
