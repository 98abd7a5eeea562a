"""Downloads over real HTTP on 127.0.0.1: resume, retries, verification, locking, the CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from flasher.balena.session import BalenaSession
from flasher.cache import ImageCache, ImageMeta
from flasher.cli.main import main
from flasher.download import DownloadRequest, DownloadResult, download_image
from flasher.errors import Cancelled, DownloadError
from flasher.events import CancelToken, Event, Log, Phase, Progress
from flasher.http import RetryPolicy, retrying_session
from tests.conftest import ImageFactory
from tests.support.httpserver import Fault, HttpTestServer

ROOT = Path(__file__).resolve().parents[2]


class PlainRequester:
    """A requests.Session on the test server: bare (every fault reaches the downloader), or
    repeating failed requests as `policy` says (what flasher's own sessions do)."""

    def __init__(self, base_url: str, policy: RetryPolicy | None = None) -> None:
        self.base_url = base_url
        self.session = requests.Session() if policy is None else retrying_session(policy)

    def request(
        self,
        method: str,
        path_or_url: str,
        /,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        return self.session.request(
            method,
            self.base_url + path_or_url,
            params=params,
            headers=headers,
            stream=stream,
            timeout=10,
        )


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as srv:
        yield srv


@pytest.fixture
def image_zip(mbr_image: ImageFactory, compressed_image: Callable[[Path, str], Path]) -> bytes:
    """A real balenaOS-layout image, zipped: what /download?fileType=.zip sends."""
    return compressed_image(mbr_image().path, "zip").read_bytes()


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "cache")


def _request(path: str = "/img.zip", **options: Any) -> DownloadRequest:
    meta = ImageMeta(device_type="raspberrypi4-64", os_version="6.5.50+rev8", file_type=".zip")
    return DownloadRequest(path, {"deviceType": "raspberrypi4-64"}, meta=meta, **options)


def _download(
    server: HttpTestServer,
    cache: ImageCache,
    request: DownloadRequest | None = None,
    *,
    policy: RetryPolicy | None = None,
    **kw: Any,
) -> DownloadResult:
    kw.setdefault("sleep", lambda _s: None)
    requester = PlainRequester(server.url, policy)
    return download_image(requester, request or _request(), cache, **kw)


def _leftovers(cache: ImageCache) -> list[str]:
    """Files in the cache other than its bookkeeping (index, locks)."""
    found = []
    for path in cache.root.rglob("*"):
        rel = path.relative_to(cache.root).as_posix()
        bookkeeping = rel.startswith("locks/") or rel in ("index.json", "index.lock")
        if path.is_file() and not bookkeeping:
            found.append(rel)
    return sorted(found)


def test_download_stores_the_verified_image_read_only(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip)
    digest = hashlib.sha256(image_zip).hexdigest()
    result = _download(server, cache, _request(expected_sha256=digest))
    entry = result.entry
    assert (entry.sha256, entry.kind, entry.path.name) == (digest, "zip", f"{digest}.zip")
    assert entry.path.read_bytes() == image_zip
    assert entry.path.stat().st_mode & 0o777 == 0o444
    assert entry.meta.device_type == "raspberrypi4-64" and result.downloaded_bytes == len(image_zip)
    assert _leftovers(cache) == [entry.path.name]


def test_a_dropped_connection_resumes_with_range(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    half = len(image_zip) // 2
    server.serve("/img.zip", image_zip, faults=[Fault(drop_after_bytes=half)])
    result = _download(server, cache)
    assert result.entry.sha256 == hashlib.sha256(image_zip).hexdigest()
    first, second = server.requests_for("/img.zip")
    assert "Range" not in first.headers and second.headers["If-Range"] == '"v1"'
    # a read cut by the broken connection loses at most that one piece; the rest is kept
    resumed_at = int(second.headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert half - 1024 * 1024 < resumed_at <= half
    assert second.status == 206
    assert result.downloaded_bytes == len(image_zip)  # nothing kept was fetched twice


def test_a_server_that_ignores_range_is_restarted_from_zero(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    faults = [Fault(drop_after_bytes=len(image_zip) // 3)]
    server.serve("/img.zip", image_zip, ranges=False, faults=faults)
    result = _download(server, cache)
    assert result.entry.path.read_bytes() == image_zip
    assert [r.status for r in server.requests_for("/img.zip")] == [200, 200]


def test_a_file_changed_on_the_server_is_fetched_whole_again(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip, faults=[Fault(drop_after_bytes=len(image_zip) // 2)])
    newer = image_zip[:-2] + b"\x02\x00v2"  # the same archive with a zip comment added
    events: list[Event] = []

    def swap_after_first_failure(event: Event) -> None:
        events.append(event)
        if isinstance(event, Log) and event.level == "warning":
            server.serve("/img.zip", newer, etag='"v2"')

    result = _download(server, cache, on_event=swap_after_first_failure)
    second = server.requests_for("/img.zip")[1]
    assert second.headers["If-Range"] == '"v1"' and second.status == 200
    assert result.entry.sha256 == hashlib.sha256(newer).hexdigest()


def test_429_is_retried_after_the_time_the_server_asks(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip, faults=[Fault(status=429, retry_after="7")])
    waits: list[float] = []
    result = _download(server, cache, policy=RetryPolicy(sleep=waits.append))
    assert waits == [7.0]
    assert result.entry.path.read_bytes() == image_zip and result.attempts == 2


def test_500_forever_fails_clearly_after_bounded_retries(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip, faults=[Fault(status=500)] * 10)
    waits: list[float] = []
    with pytest.raises(DownloadError) as caught:
        policy = RetryPolicy(2, backoff_factor=0.5, jitter=0, sleep=waits.append)
        _download(server, cache, policy=policy)
    assert "after 3 attempts" in str(caught.value) and "HTTP 500" in str(caught.value)
    assert caught.value.hint
    assert len(server.requests_for("/img.zip")) == 3 and waits == [0.5, 1.0]
    assert _leftovers(cache) == [] and cache.entries() == []


def test_balena_session_errors_become_download_errors(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip, faults=[Fault(status=503)] * 10)
    session = BalenaSession(server.url, max_retries=1, backoff_s=0.01, sleep=lambda _s: None)
    with pytest.raises(DownloadError) as caught:
        download_image(session, _request(), cache, sleep=lambda _s: None)
    assert caught.value.fields["status"] == 503
    assert _leftovers(cache) == []


def test_balena_session_downloads_with_resume(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip, faults=[Fault(drop_after_bytes=len(image_zip) // 2)])
    session = BalenaSession(server.url, sleep=lambda _s: None)
    result = download_image(session, _request(), cache, sleep=lambda _s: None)
    assert result.entry.path.read_bytes() == image_zip
    assert server.requests_for("/img.zip")[1].headers["Range"].startswith("bytes=")


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        (Fault(corrupt=True), {"expected_sha256": "sha"}),
        (Fault(short_bytes=100_000), {"expected_size_bytes": "size"}),
    ],
    ids=["corrupt", "short"],
)
def test_a_damaged_download_is_rejected_and_not_kept(
    server: HttpTestServer,
    cache: ImageCache,
    image_zip: bytes,
    fault: Fault,
    options: dict[str, str],
) -> None:
    server.serve("/img.zip", image_zip, faults=[fault])
    truth = {"sha": hashlib.sha256(image_zip).hexdigest(), "size": len(image_zip)}
    request = _request(**{name: truth[value] for name, value in options.items()})
    with pytest.raises(DownloadError):
        _download(server, cache, request)
    assert _leftovers(cache) == [] and cache.entries() == []


def test_an_error_page_is_not_stored_as_an_image(server: HttpTestServer, cache: ImageCache) -> None:
    server.serve("/img.zip", b"<!DOCTYPE html><html><body>Maintenance</body></html>\n" * 20)
    with pytest.raises(DownloadError) as caught:
        _download(server, cache)
    assert caught.value.fields["problem"] == "not_an_image"
    assert _leftovers(cache) == []


def test_a_second_request_is_served_from_the_cache(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip)
    first = _download(server, cache)
    second = _download(server, cache)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert second.entry.sha256 == first.entry.sha256
    assert len(server.requests_for("/img.zip")) == 1


def test_concurrent_downloads_of_one_image_fetch_it_once(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip, send_delay_s=0.005)  # ~0.2 s in flight
    results: list[DownloadResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(_download(server, cache))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 2
    assert len(server.requests_for("/img.zip")) == 1
    assert sorted(r.from_cache for r in results) == [False, True]
    assert {r.entry.sha256 for r in results} == {hashlib.sha256(image_zip).hexdigest()}


def test_another_process_waits_for_the_download_and_reuses_it(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip, send_delay_s=0.01)  # ~0.4 s in flight
    script = (
        "import json, sys\n"
        "from tests.integration.test_download import PlainRequester, _request\n"
        "from flasher.cache import ImageCache\n"
        "from flasher.download import download_image\n"
        "r = download_image(PlainRequester(sys.argv[1]), _request(), ImageCache(sys.argv[2]))\n"
        "print(json.dumps([r.from_cache, r.entry.sha256]))\n"
    )
    args = [sys.executable, "-c", script, server.url, str(cache.root)]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sorted(from_cache for from_cache, _ in outputs) == [False, True]
    assert {sha for _, sha in outputs} == {hashlib.sha256(image_zip).hexdigest()}
    assert len(server.requests_for("/img.zip")) == 1


def test_a_cancelled_download_resumes_in_the_next_run(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip, send_delay_s=0.01)  # ~0.4 s in flight
    cancel = CancelToken()

    def cancel_midway(event: Event) -> None:
        if isinstance(event, Progress) and event.done_bytes >= len(image_zip) // 3:
            cancel.cancel()

    with pytest.raises(Cancelled):
        _download(server, cache, on_event=cancel_midway, cancel=cancel)
    assert cache.entries() == [] and len(_leftovers(cache)) == 2  # the part and its state
    result = _download(server, cache)
    resumed = server.requests_for("/img.zip")[-1]
    assert resumed.status == 206 and resumed.headers["Range"] != "bytes=0-"
    assert result.entry.path.read_bytes() == image_zip
    assert result.downloaded_bytes < len(image_zip)
    assert _leftovers(cache) == [result.entry.path.name]


def test_progress_counts_up_to_the_announced_size(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip)
    events: list[Event] = []
    _download(server, cache, on_event=events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and {e.phase for e in progress} == {Phase.DOWNLOADING}
    assert progress[-1].done_bytes == progress[-1].total_bytes == len(image_zip)
    assert all(a.done_bytes <= b.done_bytes for a, b in itertools.pairwise(progress))


def test_secret_parameters_never_reach_the_cache_index(
    server: HttpTestServer, cache: ImageCache, image_zip: bytes
) -> None:
    server.serve("/img.zip", image_zip)
    request = DownloadRequest("/img.zip", {"appId": "1", "wifiKey": "hunter2-secret"})
    entry = _download(server, cache, request).entry
    assert "hunter2" not in (cache.root / "index.json").read_text()
    assert entry.meta.source_url is not None and "wifiKey=***" in entry.meta.source_url


def test_os_download_cli_fetches_through_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = ["--sandbox", "--json", "os", "download", "raspberrypi4-64", "--file-type", ".zip"]
    assert main([*argv, "-o", str(out_dir)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    copied = Path(result["output"])
    assert (
        copied.parent == out_dir and copied.read_bytes() == Path(result["cache_path"]).read_bytes()
    )
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == result["sha256"]
    assert result["kind"] == "zip" and result["from_cache"] is False
    assert copied.stat().st_mode & 0o777 == 0o644  # a private copy, not a link into the cache
    assert Path(result["cache_path"]).stat().st_mode & 0o777 == 0o444
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["from_cache"] is True
