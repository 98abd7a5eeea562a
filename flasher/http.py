"""HTTP sessions with bounded retries: urllib3's `Retry`, mounted on a requests session.

`RetryPolicy` is urllib3.util.Retry with what Flasher needs on top: connection failures, 408,
429 and 5xx answers are repeated (idempotent methods always; any method after an answer that
promises the request was not acted on: 429, 503), honouring `Retry-After`, otherwise waiting
with exponential backoff and jitter from the first retry on, and never waiting more than
`max_wait_total_s` in all. Waits go through an injectable `sleep` (tests record them). After
the last attempt the final answer is returned as it is (the caller maps it to an error);
`attempts_of` says how many requests one call sent. Used by the balena session and by plain
downloads. Imports requests and urllib3; never Qt.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import InvalidHeader, MaxRetryError, NewConnectionError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Answers that promise the request was not acted on, so even a POST may be sent again.
NOT_PROCESSED_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class RetriesExhausted(MaxRetryError):
    """The last attempt failed too; `attempts` requests were sent."""

    def __init__(
        self, pool: ConnectionPool | None, url: str, reason: Exception | None, attempts: int
    ) -> None:
        super().__init__(pool, url or "", reason)  # type: ignore[arg-type]
        self.attempts = attempts


class RetryPolicy(Retry):
    """See the module docstring. `total` counts repeats after the first attempt; the waits grow
    from `backoff_factor` seconds (doubling, capped at `backoff_max`); `jitter` is the random
    share of each wait (0.5: "equal jitter", at least half the step, so clients that failed
    together spread out; 0: none)."""

    def __init__(
        self,
        total: bool | int | None = 4,
        *,
        max_wait_total_s: float = 120.0,
        jitter: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        waited_s: float = 0.0,
        planned_s: float | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("status_forcelist", RETRY_STATUSES)
        options.setdefault("allowed_methods", IDEMPOTENT_METHODS)
        options.setdefault("backoff_factor", 0.5)
        options.setdefault("backoff_max", 30.0)
        options.setdefault("raise_on_status", False)
        options.setdefault("raise_on_redirect", False)
        super().__init__(total, **options)
        self.max_wait_total_s = max_wait_total_s
        self.jitter = jitter
        self.waited_s = waited_s
        self.planned_s = planned_s
        self._sleep = sleep

    def new(self, **kw: Any) -> Self:
        kw.setdefault("max_wait_total_s", self.max_wait_total_s)
        kw.setdefault("jitter", self.jitter)
        kw.setdefault("sleep", self._sleep)
        kw.setdefault("waited_s", self.waited_s)
        kw.setdefault("planned_s", None)
        return super().new(**kw)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code in NOT_PROCESSED_STATUSES and status_code in (self.status_forcelist or ()):
            return bool(self.total)
        return super().is_retry(method, status_code, has_retry_after)

    def get_backoff_time(self) -> float:
        # urllib3's own repeats the first retry at once and adds a fixed jitter; here every
        # retry waits, and the jitter scales with the step.
        steps = len(self.history)
        if steps == 0:
            return 0.0
        ceiling_s = float(min(self.backoff_max, self.backoff_factor * 2.0 ** (steps - 1)))
        return ceiling_s * (1 - self.jitter) + random.uniform(0, ceiling_s * self.jitter)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        attempts = len(self.history) + 1
        try:
            following = super().increment(method, url, response, error, _pool, _stacktrace)
        except MaxRetryError as err:
            raise RetriesExhausted(_pool, url or "", err.reason, attempts) from err.reason
        delay_s = following.delay_s(response)
        if self.waited_s + delay_s > self.max_wait_total_s:
            raise RetriesExhausted(_pool, url or "", error, attempts) from error
        following.planned_s = delay_s
        return following

    def delay_s(self, response: BaseHTTPResponse | None) -> float:
        """The wait before the next attempt: what the server asks, else the backoff."""
        if response is not None and self.respect_retry_after_header:
            try:
                asked_s = self.get_retry_after(response)
            except InvalidHeader:
                asked_s = None
            if asked_s is not None:
                return asked_s
        return self.get_backoff_time()

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        delay_s = self.planned_s if self.planned_s is not None else self.delay_s(response)
        self.waited_s += delay_s
        cause = self.history[-1].status or "connection failed" if self.history else "?"
        log.info("attempt %d failed (%s); retrying in %.1f s", len(self.history), cause, delay_s)
        self._sleep(delay_s)


def retry_after_s(response: requests.Response) -> float | None:
    """The answer's `Retry-After` in seconds (a number or an HTTP date), None without one."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(Retry().parse_retry_after(value))
    except InvalidHeader:
        return None


def attempts_of(outcome: requests.Response | requests.RequestException) -> int:
    """How many requests one call sent: its answer's retry history plus one, or what the
    exhausted retries counted (1 when nothing says otherwise)."""
    if isinstance(outcome, requests.Response):
        retries = getattr(outcome.raw, "retries", None)
        return len(retries.history) + 1 if isinstance(retries, Retry) else 1
    cause = outcome.args[0] if outcome.args else None
    return cause.attempts if isinstance(cause, RetriesExhausted) else 1


def retrying_session(policy: RetryPolicy | None = None) -> requests.Session:
    """A requests session that repeats failed requests as `policy` (default: RetryPolicy())
    says."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=policy if policy is not None else RetryPolicy())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def never_sent(err: requests.RequestException) -> bool:
    """Whether the request failed before any byte reached the server (safe to send again)."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    if not isinstance(err, requests.ConnectionError) or not err.args:
        return False
    return isinstance(getattr(err.args[0], "reason", None), NewConnectionError)


def failure_reason(err: requests.RequestException) -> str:
    """A few words on why a request got no answer, for a person."""
    if isinstance(err, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(err, requests.Timeout):
        return "no answer in time"
    if never_sent(err):
        return "connection refused or no route"
    return "connection closed without an answer"
