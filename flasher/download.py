"""Resumable, verified image downloads into the cache.

`download_image` streams a GET into `partial/<key>.part` under the cache's lock for that
download key (a second process waits, then reuses the result), hashing with SHA-256 as bytes
arrive. A broken connection resumes with `Range` (and `If-Range` when the server gave a strong
ETag or a Last-Modified date); a server that ignores the range restarts from zero. Failed
requests (429/5xx answers, refused connections) are repeated by the requester's session
(flasher.http); this module only resumes bodies that broke off, a bounded number of times. The size
is checked against Content-Length/Content-Range, the hash against an expected value when one is
known, and the content is sniffed as an image before the file moves into the cache; nothing
that failed a check stays. Imports requests, the standard library and flasher (cache, errors,
events, image.sources); never prints.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import requests

from flasher.cache import CacheEntry, ImageCache, ImageMeta
from flasher.errors import ApiError, AuthError, Cancelled, DownloadError, ImageError
from flasher.events import (
    CancelToken,
    EventCallback,
    Log,
    Phase,
    PhaseChanged,
    RateMeter,
    ignore_event,
)
from flasher.http import RETRY_STATUSES, attempts_of

# a read cut by a broken connection loses its piece: keep pieces small enough to lose little
CHUNK_BYTES = 256 * 1024
_SECRET_PARAM = re.compile(r"key|token|secret|pass", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
RETRY_HINT = "Check the network connection and run the command again; it resumes where it stopped."


class Requester(Protocol):
    """What a download needs from an HTTP session: BalenaSession, or a requests wrapper."""

    def request(
        self,
        method: str,
        path_or_url: str,
        /,
        *,
        params: Mapping[str, Any] | None = ...,
        headers: Mapping[str, str] | None = ...,
        stream: bool = ...,
    ) -> requests.Response: ...


@dataclass(frozen=True)
class DownloadRequest:
    """One image download. `origin` is the API base URL a relative `path_or_url` belongs to;
    with `params` it identifies the download in the cache."""

    path_or_url: str
    params: Mapping[str, str] = field(default_factory=dict)
    origin: str = ""
    meta: ImageMeta = field(default_factory=ImageMeta)
    expected_sha256: str | None = None
    expected_size_bytes: int | None = None

    @property
    def key(self) -> str:
        canonical = f"GET {self.origin}{self.path_or_url}?{urlencode(sorted(self.params.items()))}"
        # hashed: a configured download's parameters may carry a Wi-Fi key
        return "download:" + hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def display_url(self) -> str:
        """The URL with secret-looking parameters redacted, for logs and the cache index."""
        shown = {k: ("***" if _SECRET_PARAM.search(k) else v) for k, v in self.params.items()}
        query = urlencode(sorted(shown.items()), safe="*+")
        return f"{self.origin}{self.path_or_url}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class DownloadResult:
    entry: CacheEntry
    from_cache: bool
    downloaded_bytes: int
    attempts: int


class _Resume(Exception):
    """The body broke off (or the server's answer cannot be continued): try again, resuming
    where it stopped; `at_once` when waiting would not help."""

    def __init__(self, reason: str, *, at_once: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at_once = at_once


def _validator(headers: Mapping[str, str]) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _cached(cache: ImageCache, request: DownloadRequest) -> CacheEntry | None:
    entry = cache.find(request.key)
    if entry is None:
        return None
    if request.expected_sha256 and entry.sha256 != request.expected_sha256.lower():
        return None
    return entry


def download_image(
    requester: Requester,
    request: DownloadRequest,
    cache: ImageCache,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    max_attempts: int = 5,
    backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    sleep: Callable[[float], None] | None = None,
) -> DownloadResult:
    """The cached image for `request`, downloading it first if needed.

    `max_attempts` GETs at most resume a body that broke off, waiting `backoff_s` (doubling, up
    to `max_backoff_s`) through `sleep` (default: the cancel token's wait) before each; failed
    requests are repeated by the requester's own session.
    """
    hit = _cached(cache, request)
    if hit is None:

        def waiting() -> None:
            on_event(Log("info", "Another download of this image is running; waiting for it."))

        with cache.lock(request.key, cancel=cancel, on_wait=waiting):
            hit = _cached(cache, request)
            if hit is None:
                fetch = _Fetch(requester, request, cache, on_event, cancel)
                return fetch.run(max_attempts, backoff_s, max_backoff_s, sleep)
    cache.touch(hit.sha256)
    on_event(Log("info", f"Using the cached image {hit.path}."))
    return DownloadResult(hit, True, 0, 0)


class _Fetch:
    def __init__(
        self,
        requester: Requester,
        request: DownloadRequest,
        cache: ImageCache,
        on_event: EventCallback,
        cancel: CancelToken | None,
    ) -> None:
        self.requester = requester
        self.request = request
        self.cache = cache
        self.on_event = on_event
        self.cancel = cancel
        self.part = cache.partial_path(request.key)
        self.state_path = self.part.with_name(self.part.name + ".json")
        self.hasher = hashlib.sha256()
        self.done = 0
        self.total: int | None = None
        self.validator: str | None = None
        self.can_resume = True
        self.received = 0
        self.meter: RateMeter | None = None
        self.discard_on_failure = False
        self.sent = 0  # HTTP requests, counting the ones the requester's session repeated

    # --- the attempt loop -----------------------------------------------------------------

    def run(
        self,
        max_attempts: int,
        backoff_s: float,
        max_backoff_s: float,
        sleep: Callable[[float], None] | None,
    ) -> DownloadResult:
        self.on_event(PhaseChanged(Phase.DOWNLOADING))
        attempt = 0
        try:
            self._resume_from_disk()
            while True:
                attempt += 1
                try:
                    if self._attempt():
                        break
                    reason = f"the connection closed after {self.done} of {self.total} bytes"
                    at_once = False
                except _Resume as resume:
                    reason, at_once = resume.reason, resume.at_once
                if attempt >= max_attempts:
                    raise self._failed(reason)
                delay_s = 0.0 if at_once else min(backoff_s * 2 ** (attempt - 1), max_backoff_s)
                self.on_event(
                    Log(
                        "warning",
                        f"Download: {reason}; retrying in {delay_s:.1f} s "
                        f"(attempt {attempt + 1} of {max_attempts}).",
                    )
                )
                self._pause(delay_s, sleep)
            entry = self._finish()
        except BaseException:
            resumable = self.validator is not None and self.can_resume
            if self.discard_on_failure or not resumable:
                self._discard()
            raise
        return DownloadResult(entry, False, self.received, self.sent)

    def _failed(self, reason: str, **fields: Any) -> DownloadError:
        return DownloadError(
            f"Downloading {self.request.display_url} failed after {self.sent} attempts: {reason}.",
            hint=RETRY_HINT,
            url=self.request.display_url,
            attempts=self.sent,
            **fields,
        )

    def _pause(self, delay_s: float, sleep: Callable[[float], None] | None) -> None:
        if sleep is not None:
            sleep(delay_s)
        elif self.cancel is not None:
            self.cancel.wait(delay_s)
        else:
            time.sleep(delay_s)
        self._check_cancel()

    def _check_cancel(self) -> None:
        if self.cancel is not None:
            self.cancel.check()

    # --- partial file ---------------------------------------------------------------------

    def _discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)

    def _restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.hasher = hashlib.sha256()
        self.done = 0
        self.meter = None

    def _save_state(self) -> None:
        state = {"key": self.request.key, "validator": self.validator, "total": self.total}
        self.state_path.write_text(json.dumps(state), encoding="utf-8")

    def _resume_from_disk(self) -> None:
        """Continue a part an earlier run left, if the server can tell us it is unchanged."""
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            size = self.part.stat().st_size
        except (OSError, ValueError):
            self._discard()
            return
        if not (isinstance(state, dict) and state.get("key") == self.request.key):
            self._discard()
            return
        validator, total = state.get("validator"), state.get("total")
        if not isinstance(validator, str) or (isinstance(total, int) and size > total):
            self._discard()
            return
        with open(self.part, "rb", buffering=0) as f:
            while chunk := f.read(4 * CHUNK_BYTES):
                self._check_cancel()
                self.hasher.update(chunk)
        self.done, self.validator = size, validator
        self.total = total if isinstance(total, int) else None
        self.on_event(Log("info", f"Resuming an earlier download at {size} bytes."))

    # --- one GET --------------------------------------------------------------------------

    def _open(self) -> requests.Response:
        if self.done and not self.can_resume:
            self._restart()
        headers = {"Accept-Encoding": "identity"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
            if self.validator:
                headers["If-Range"] = self.validator
        try:
            response = self.requester.request(
                "GET",
                self.request.path_or_url,
                params=self.request.params,
                headers=headers,
                stream=True,
            )
        except requests.RequestException as err:
            self.sent += attempts_of(err)
            raise self._failed(f"the request failed ({type(err).__name__})") from None
        except ApiError as err:
            self.sent += int(err.fields.get("attempts") or 1)
            if err.fields.get("status") == 416:
                self._restart()
                raise _Resume("the server refused to resume", at_once=True) from None
            raise DownloadError(
                f"Downloading {self.request.display_url} failed: {err.message}",
                hint=err.hint or RETRY_HINT,
                url=self.request.display_url,
                status=err.fields.get("status"),
            ) from None
        self.sent += attempts_of(response)
        return response

    def _check_status(self, response: requests.Response) -> int | None:
        """The total size this answer promises; raises for answers that carry no image."""
        status = response.status_code
        url = self.request.display_url
        if status in RETRY_STATUSES:  # the requester's session has repeated it already
            raise self._failed(f"the server answered HTTP {status}", status=status)
        if status == 416:
            self._restart()
            raise _Resume("the server refused to resume", at_once=True)
        if status in (401, 403):
            raise AuthError(
                f"The server refused the download of {url} (HTTP {status}).",
                hint="Log in with 'balena login', or set BALENA_API_KEY.",
                status=status,
            )
        if status not in (200, 206):
            raise DownloadError(
                f"The server answered HTTP {status} for {url}.",
                hint="Check the device type, version and file type." if status == 404 else None,
                url=url,
                status=status,
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        self.can_resume = encoding == "identity"
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if not self.done or match is None or int(match.group(1)) != self.done:
                self._restart()
                raise _Resume("the server resumed at another offset than asked", at_once=True)
            total = None if match.group(3) == "*" else int(match.group(3))
            if self.total is not None and total is not None and total != self.total:
                self._restart()
                raise _Resume("the file on the server changed", at_once=True)
        else:
            if self.done:
                self.on_event(Log("info", "The server does not resume downloads; starting over."))
                self._restart()
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() and self.can_resume else None
            self.total = None  # a fresh answer: forget what an earlier one announced
        expected = self.request.expected_size_bytes
        if expected is not None and total is not None and total != expected:
            self.discard_on_failure = True
            raise DownloadError(
                f"The server offers {total} bytes for {url}, but {expected} were expected.",
                url=url,
            )
        return total

    def _attempt(self) -> bool:
        """One GET appended to the part; True once every byte has arrived."""
        self._check_cancel()
        response = self._open()
        if self.cancel is not None:
            self.cancel.on_cancel(response.close)  # unblocks a read that is waiting
        with response:
            total = self._check_status(response)
            self.total = total if total is not None else self.total
            self.validator = _validator(response.headers)
            self._save_state()
            if self.meter is None:
                self.meter = RateMeter(Phase.DOWNLOADING, self.total)
            try:
                with open(self.part, "ab") as out:
                    self._copy(response, out)
            except (DownloadError, Cancelled):
                raise
            except requests.RequestException as err:
                self._check_cancel()
                raise _Resume(f"the connection broke ({type(err).__name__})") from None
            except OSError as err:
                self.discard_on_failure = True
                raise DownloadError(
                    f"Cannot write the download into {self.part.parent}: {err.strerror}.",
                    hint="Free some disk space or set FLASHER_CACHE_DIR to another folder.",
                ) from None
            except Exception:
                self._check_cancel()  # closing the response on cancel breaks the read oddly
                raise
        return self.total is None or self.done >= self.total

    def _copy(self, response: requests.Response, out: Any) -> None:
        assert self.meter is not None
        for chunk in response.iter_content(CHUNK_BYTES):
            self._check_cancel()
            out.write(chunk)
            self.hasher.update(chunk)
            self.done += len(chunk)
            self.received += len(chunk)
            if self.total is not None and self.done > self.total:
                self.discard_on_failure = True
                raise DownloadError(
                    f"The server sent more than the {self.total} bytes it announced.",
                    url=self.request.display_url,
                )
            event = self.meter.update(self.done)
            if event is not None:
                self.on_event(event)

    # --- verification and storage ---------------------------------------------------------

    def _finish(self) -> CacheEntry:
        digest = self.hasher.hexdigest()
        url = self.request.display_url
        self.discard_on_failure = True
        expected = self.request.expected_sha256
        if expected and digest != expected.lower():
            raise DownloadError(
                f"The download of {url} is corrupt: SHA-256 {digest}, expected {expected}.",
                hint="Try again; if it keeps failing, the server or a proxy is damaging it.",
                url=url,
                sha256=digest,
            )
        size = self.request.expected_size_bytes
        if size is not None and self.done != size:
            raise DownloadError(
                f"The download of {url} has {self.done} bytes, expected {size}.",
                hint=RETRY_HINT,
                url=url,
            )
        meta = self.request.meta
        if meta.source_url is None:
            meta = ImageMeta(**{**vars(meta), "source_url": url})
        try:
            entry = self.cache.add_file(
                self.part, meta=meta, key=self.request.key, sha256=digest, move=True
            )
        except ImageError as err:
            raise DownloadError(
                f"The server sent something that is not a usable image for {url}: {err.message}",
                hint="The server may have answered with an error page; try again later.",
                url=url,
                problem=err.problem,
            ) from None
        self.state_path.unlink(missing_ok=True)
        if self.meter is not None:
            self.on_event(self.meter.snapshot(self.done))
        return entry
