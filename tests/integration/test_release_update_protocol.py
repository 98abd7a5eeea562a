"""The wire side of release updates against scripted servers: the exact pine requests, how the
API's values are read, the delta server's answers, and a failure during a wait."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.balena.session import BalenaSession
from flasher.errors import ApiError, DeltaRequestFailed
from flasher.models import Secret
from flasher.release_update import (
    DeltaServer,
    UpdateStatus,
    delta_url_from_settings,
    get_update_info,
    prepare_update,
)
from flasher.release_update.delta_server import DeltaAnswer
from tests.support.fakeapi import Answer, FakeApi

RELEASE_EXPAND = (
    "release_image($expand=image($select=id;$expand=is_a_build_of__service($select=service_name)))"
    ",is_created_by__user($select=id,username)"
)
NOW = dt.datetime(2025, 11, 11, 16, 53, 0, tzinfo=dt.UTC)


def release_row(release_id: int, fleet_id: int, services: dict[str, int]) -> dict[str, Any]:
    return {
        "id": release_id,
        "commit": f"{release_id:x}" * 4,
        "status": "success",
        "belongs_to__application": {"__id": fleet_id},
        "is_created_by__user": [{"id": 5, "username": "someone"}],
        "release_image": [
            {"id": 1, "image": [{"id": image, "is_a_build_of__service": [{"service_name": name}]}]}
            for name, image in services.items()
        ],
    }


def image_row(image_id: int, size: Any) -> dict[str, Any]:
    return {
        "id": image_id,
        "is_stored_at__image_location": f"registry/v2/{image_id}",
        "content_hash": f"sha256:{image_id}",
        "image_size": size,
    }


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as fake:
        yield fake


@pytest.fixture
def session(api: FakeApi) -> Iterator[BalenaSession]:
    with BalenaSession(api.url, Secret("tok"), max_retries=0) as opened:
        yield opened


def serve_update(api: FakeApi, delta: dict[str, Any] | None) -> None:
    """Release 10 (main: image 100) -> release 11 (main: image 101), one delta lookup answer."""
    api.reply("GET", "/v7/release(10)", Answer(body={"d": [release_row(10, 7, {"main": 100})]}))
    api.reply("GET", "/v7/release(11)", Answer(body={"d": [release_row(11, 7, {"main": 101})]}))
    api.reply("GET", "/v7/image(100)", Answer(body={"d": [image_row(100, "310905195")]}))
    api.reply("GET", "/v7/image(101)", Answer(body={"d": [image_row(101, "310954877")]}))
    api.reply("GET", "/v7/delta", Answer(body={"d": [delta] if delta else []}))


def test_release_by_id_is_one_request_with_the_originals_options(
    api: FakeApi, session: BalenaSession
) -> None:
    serve_update(api, None)
    get_update_info(10, 11, session=session, now=lambda: NOW)
    (hit,) = api.hits("/v7/release(10)")
    assert hit.query == {"$expand": RELEASE_EXPAND, "$filter": "status eq 'success'"}
    assert hit.headers["authorization"] == "Bearer tok"


def test_release_by_commit_filters_on_the_prefix_as_pinejs_does(
    api: FakeApi, session: BalenaSession
) -> None:
    api.reply("GET", "/v7/release", Answer(body={"d": [release_row(10, 7, {})]}))
    api.reply("GET", "/v7/release(11)", Answer(body={"d": [release_row(11, 7, {})]}))
    get_update_info("84d3d8f", 11, session=session)
    (hit,) = api.hits("/v7/release")
    assert hit.query == {
        "$expand": RELEASE_EXPAND,
        "$filter": "startswith(commit,'84d3d8f') and (status eq 'success')",
    }
    assert "%20" in hit.raw_query and "+" not in hit.raw_query  # spaces as the SDK sends them


def test_image_and_delta_lookups_are_the_originals(api: FakeApi, session: BalenaSession) -> None:
    serve_update(api, None)
    get_update_info(10, 11, session=session, now=lambda: NOW)
    assert [h.query for h in api.hits("/v7/image(100)")] == [
        {
            "$select": "id,is_stored_at__image_location,content_hash,image_size",
            "$filter": "status eq 'success'",
        }
    ]
    (delta,) = api.hits("/v7/delta")
    assert delta.query == {
        "$top": "1",
        "$select": "id,status,version,is_stored_at__location,size",
        "$filter": "(version eq 3) and (originates_from__image eq 100) and "
        "(produces__image eq 101) and ((status eq 'success') or ((status eq 'running') and "
        "(update_timestamp gt datetime'2025-11-11T16:50:00.000Z')))",
        "$orderby": "id desc",
    }


def test_big_integers_sent_as_strings_become_numbers_and_null_sizes_zero(
    api: FakeApi, session: BalenaSession
) -> None:
    delta = {"id": 9, "status": "success", "version": 3, "is_stored_at__location": None}
    serve_update(api, {**delta, "size": None})
    info = get_update_info(10, 11, session=session)
    doc = info.to_json()["is_produced_by__service_update"][0]
    assert doc["originates_from__image"]["image_size"] == 310905195
    assert doc["produces__image"]["is_produced_by__delta"] == {
        "id": 9,
        "version": 3,
        "is_stored_at__location": None,
        "size": 0,
    }
    assert info.estimated_payload_bytes == 0


def test_a_target_release_without_services_is_ready_with_no_payload(
    api: FakeApi, session: BalenaSession
) -> None:
    api.reply("GET", "/v7/release(10)", Answer(body={"d": [release_row(10, 7, {"main": 100})]}))
    api.reply("GET", "/v7/release(11)", Answer(body={"d": [release_row(11, 7, {})]}))
    info = get_update_info(10, 11, session=session)
    assert info.to_json() == {
        "originates_from__release": {"id": 10, "commit": "aaaa"},
        "produces__release": {"id": 11, "commit": "bbbb"},
        "is_produced_by__service_update": [],
        "overall_status": "ready",
        "estimated_total_payload_size": 0,
    }


def test_the_same_image_in_both_releases_still_looks_for_a_delta(
    api: FakeApi, session: BalenaSession
) -> None:
    api.reply("GET", "/v7/release(10)", Answer(body={"d": [release_row(10, 7, {"main": 100})]}))
    api.reply("GET", "/v7/release(11)", Answer(body={"d": [release_row(11, 7, {"main": 100})]}))
    api.reply("GET", "/v7/image(100)", Answer(body={"d": [image_row(100, "5")]}))
    api.reply("GET", "/v7/delta", Answer(body={"d": []}))
    info = get_update_info(10, 11, session=session)
    assert info.services[0].status is UpdateStatus.PENDING
    assert (
        "(originates_from__image eq 100) and (produces__image eq 100)"
        in (api.hits("/v7/delta")[0].query["$filter"])
    )


def test_an_error_during_a_wait_ends_it_with_that_error(
    api: FakeApi, session: BalenaSession
) -> None:
    # The original never settles here (a hung promise); Flasher reports the failure.
    running = {"id": 9, "status": "running", "version": 3}
    serve_update(api, None)
    api.reply(
        "GET",
        "/v7/delta",
        Answer(body={"d": [running]}),
        Answer(500, {"message": "database unavailable"}),
    )
    with pytest.raises(ApiError) as caught:
        prepare_update(10, 11, session=session, delta_url=api.url, wait=True, poll_interval_s=0.01)
    assert caught.value.fields["server_message"] == "database unavailable"


# -- the delta server ------------------------------------------------------------------------


def trigger(api: FakeApi, *answers: Answer) -> DeltaAnswer:
    api.reply("GET", "/api/v3/delta", *answers)
    server = DeltaServer(api.url, {"Authorization": "Bearer tok"}, timeout_s=5.0)
    try:
        return server.request_delta(100, 101)
    finally:
        server.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(200, {"name": "registry/v2/101:delta-1"}), DeltaAnswer.ACCEPTED),
        (Answer(302, ""), DeltaAnswer.ACCEPTED),
        (Answer(504, "Gateway Timeout"), DeltaAnswer.COMPUTING),
    ],
)
def test_delta_server_success_and_still_computing(
    api: FakeApi, answer: Answer, expected: DeltaAnswer
) -> None:
    assert trigger(api, answer) is expected
    (hit,) = api.hits("/api/v3/delta")
    assert hit.query == {"src": "100", "dest": "101"}
    assert hit.headers["authorization"] == "Bearer tok"


def test_delta_server_redirects_are_followed(api: FakeApi) -> None:
    api.reply("GET", "/elsewhere", Answer(200, {"name": "x"}))
    assert trigger(api, Answer(302, "", {"Location": "/elsewhere"})) is DeltaAnswer.ACCEPTED
    assert len(api.hits("/elsewhere")) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 500, 502, 503])
def test_delta_server_errors_fail_with_its_words(api: FakeApi, status: int) -> None:
    with pytest.raises(DeltaRequestFailed) as caught:
        trigger(api, Answer(status, "no such images\n"))
    assert str(caught.value) == "Request error: no such images"
    assert caught.value.status == status


def test_delta_server_errors_never_echo_the_token(api: FakeApi) -> None:
    with pytest.raises(DeltaRequestFailed) as caught:
        trigger(api, Answer(400, "bad token tok"))
    assert "tok" not in str(caught.value).replace("token", "")


def test_a_delta_server_that_does_not_answer_in_time_is_a_network_timeout() -> None:
    # A listening socket that accepts the connection and never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        server = DeltaServer(f"http://127.0.0.1:{port}", {}, timeout_s=0.2)
        with pytest.raises(DeltaRequestFailed) as caught:
            server.request_delta(1, 2)
    assert str(caught.value) == "network timeout"
    assert caught.value.status is None


def test_an_unreachable_delta_server_fails_with_the_reason() -> None:
    server = DeltaServer("http://127.0.0.1:9", {})
    with pytest.raises(DeltaRequestFailed) as caught:
        server.request_delta(1, 2)
    assert str(caught.value).startswith("request to http://127.0.0.1:9/api/v3/delta failed")


@pytest.mark.parametrize(
    ("env", "api_url", "expected"),
    [
        ({}, "https://api.balena-cloud.com", "https://delta.balena-cloud.com"),
        ({"BALENARC_DELTA_URL": "http://127.0.0.1:5/"}, "https://x", "http://127.0.0.1:5"),
        ({"BALENARC_BALENA_URL": "example.org"}, "https://api.other", "https://delta.example.org"),
        (
            {"BALENARC_DELTA_URL": "http://d", "BALENARC_BALENA_URL": "example.org"},
            "https://x",
            "http://d",
        ),
        ({}, "https://api.my-balena.local:8443", "https://delta.my-balena.local:8443"),
        ({}, "http://127.0.0.1:4000/", "http://127.0.0.1:4000"),  # a local API serves both
        ({}, "", "https://delta.balena-cloud.com"),
    ],
)
def test_delta_url_follows_the_balena_settings(
    env: dict[str, str], api_url: str, expected: str, tmp_path: Path
) -> None:
    assert delta_url_from_settings(api_url, env, home=tmp_path, cwd=tmp_path) == expected


@pytest.mark.parametrize(
    ("home_rc", "project_rc", "env", "expected"),
    [
        ("balenaUrl: example.org\n", "", {}, "https://delta.example.org"),
        ("deltaUrl: 'http://d1'\n", "deltaUrl: http://d2\n", {}, "http://d2"),
        ("deltaUrl: http://d1\n", "", {"BALENARC_DELTA_URL": "http://env"}, "http://env"),
        # an explicit deltaUrl in a file beats a balenaUrl from the environment
        ("deltaUrl: http://d1\n", "", {"BALENARC_BALENA_URL": "example.org"}, "http://d1"),
        ("other: x\n  deltaUrl: nested\n", "", {}, "https://delta.balena-cloud.com"),
    ],
)
def test_delta_url_reads_balenarc_files_under_the_environment(
    tmp_path: Path, home_rc: str, project_rc: str, env: dict[str, str], expected: str
) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    (home / ".balenarc.yml").write_text(home_rc)
    (project / ".balenarc.yml").write_text(project_rc)
    url = delta_url_from_settings("https://api.balena-cloud.com", env, home=home, cwd=project)
    assert url == expected
