"""The sandbox's fleet releases: who sees them, datetime filters, and the delta server's builds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from flasher.sandbox import fleet_releases
from flasher.sandbox.odata import ODataError, evaluate, parse_filter
from flasher.sandbox.server import SandboxServer

AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer.start(delta_build_s=3600) as server:
        yield server


class _Row:
    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    @property
    def key(self) -> Any:
        return self.fields.get("id")

    def prop(self, name: str) -> Any:
        return self.fields[name]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [("2025-11-11T16:50:00.001Z", True), ("2025-11-11T16:50:00.000Z", False), (None, False)],
)
def test_datetime_literals_compare_with_iso_text_fields(stamp: str | None, expected: bool) -> None:
    condition = parse_filter("update_timestamp gt datetime'2025-11-11T16:50:00.000Z'")
    assert evaluate(condition, _Row(update_timestamp=stamp)) is expected


def test_a_malformed_datetime_literal_is_a_bad_request() -> None:
    with pytest.raises(ODataError, match="bad datetime"):
        parse_filter("update_timestamp gt datetime'yesterday'")


@pytest.mark.parametrize("resource", ["image", "delta", "service", "release_image", "user"])
def test_anonymous_callers_see_no_fleet_release_data(sandbox: SandboxServer, resource: str) -> None:
    assert requests.get(f"{sandbox.url}/v7/{resource}", timeout=10).json() == {"d": []}
    assert requests.get(f"{sandbox.url}/v7/{resource}", headers=AUTH, timeout=10).json()["d"]


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("src=2200001&dest=2200011", {}, 401),
        ("src=x&dest=2200011", AUTH, 400),
        ("src=1&dest=2200011", AUTH, 404),
        ("src=2200001&dest=2200011", AUTH, 200),
        ("src=2200011&dest=2200031", AUTH, 500),
    ],
)
def test_delta_server_answers(
    sandbox: SandboxServer, query: str, headers: dict[str, str], status: int
) -> None:
    answer = requests.get(f"{sandbox.url}/api/v3/delta?{query}", headers=headers, timeout=10)
    assert answer.status_code == status


class _Clock:
    def __init__(self) -> None:
        self.now_s = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now_s


def test_a_requested_delta_is_built_after_the_build_time() -> None:
    clock = _Clock()
    rows: fleet_releases.Rows = {}
    builds = fleet_releases.load(rows, user_id=1, username="u", build_s=10, clock=clock)
    assert builds.request(2200012, 2200022)[0] == 504
    (row,) = [
        r
        for r in rows["delta"].values()
        if r["produces__image"] == 2200022 and r["originates_from__image"] == 2200012
    ]
    assert row["status"] == "running" and row["size"] is None
    clock.now_s += 10
    status, body = builds.request(2200012, 2200022)
    assert status == 200
    assert row["status"] == "success"
    assert body == {"name": row["is_stored_at__location"]}
    assert int(row["size"]) > 0


def test_a_running_build_keeps_its_timestamp_fresh_and_a_stale_one_does_not() -> None:
    clock = _Clock()
    rows: fleet_releases.Rows = {}
    builds = fleet_releases.load(rows, user_id=1, username="u", build_s=100, clock=clock)
    clock.now_s += 50
    builds.advance()
    fresh, stale = rows["delta"][2400004], rows["delta"][2400008]
    assert fresh["update_timestamp"] == fleet_releases.iso(clock.now_s)
    age = dt.datetime.fromtimestamp(clock.now_s, dt.UTC) - dt.datetime.fromisoformat(
        stale["update_timestamp"]
    )
    assert age.total_seconds() > 180


def test_a_pair_marked_to_fail_first_fails_once_then_builds() -> None:
    clock = _Clock()
    rows: fleet_releases.Rows = {}
    builds = fleet_releases.load(rows, user_id=1, username="u", build_s=1, clock=clock)
    pair = (2200001, 2200031)
    assert builds.request(*pair)[0] == 504
    clock.now_s += 1
    builds.advance()
    statuses = [
        r["status"]
        for r in rows["delta"].values()
        if (r["originates_from__image"], r["produces__image"]) == pair
    ]
    assert statuses == ["failed"]
    assert builds.request(*pair)[0] == 504
    clock.now_s += 1
    assert builds.request(*pair)[0] == 200
