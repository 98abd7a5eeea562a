"""get_update_info and prepare_update against the sandbox (a real HTTP API and delta server).

The sandbox's fleet releases (resources/sandbox-fleet-releases.json), as these tests use them:
demo-fleet releases 2100001 (main, frontend, legacy), 2100002 (main, frontend, metrics),
2100003 and 2100004 (same services), 2100005/2100006 (commits sharing the prefix c0ffee),
2100007 (failed), 2100008 (an image that did not build); gateway-fleet release 2100101.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flasher.balena.session import BalenaSession
from flasher.errors import (
    ReleaseAmbiguous,
    ReleaseImageNotFound,
    ReleaseNotFound,
    ReleasesNotInOneFleet,
    UpdateTimeout,
)
from flasher.models import Secret
from flasher.release_update import (
    DeltaRequested,
    UpdateEvent,
    UpdateInfo,
    UpdateNotReady,
    UpdateStatus,
    get_update_info,
    prepare_update,
)
from flasher.sandbox.server import SandboxServer

FAST_POLL_S = 0.05


@pytest.fixture(scope="module")
def frozen() -> Iterator[tuple[SandboxServer, BalenaSession]]:
    """A sandbox whose delta builds never finish during the tests (statuses stay put)."""
    with (
        SandboxServer.start(delta_build_s=3600) as server,
        BalenaSession(server.url, Secret("test-token")) as session,
    ):
        yield server, session


@pytest.fixture
def slow() -> Iterator[tuple[SandboxServer, BalenaSession]]:
    """A sandbox of its own whose delta builds never finish during a test."""
    with (
        SandboxServer.start(delta_build_s=3600) as server,
        BalenaSession(server.url, Secret("test-token")) as session,
    ):
        yield server, session


@pytest.fixture
def fresh() -> Iterator[tuple[SandboxServer, BalenaSession]]:
    """A sandbox of its own whose delta builds take 0.3 s."""
    with (
        SandboxServer.start(delta_build_s=0.3) as server,
        BalenaSession(server.url, Secret("test-token")) as session,
    ):
        yield server, session


def statuses(info: UpdateInfo) -> dict[str, str]:
    return {s.service_name: s.status.value for s in info.services}


@pytest.mark.parametrize(
    ("source", "target", "expected", "overall"),
    [
        # built deltas
        (2100001, 2100002, {"frontend": "ready", "main": "ready", "metrics": "ready"}, "ready"),
        # no delta (frontend), a running v3 delta despite a built v2 one (main), failed (metrics)
        (
            2100002,
            2100003,
            {"frontend": "pending", "main": "preparing", "metrics": "pending"},
            "pending",
        ),
        # one delta being built, the rest ready
        (
            2100001,
            2100003,
            {"frontend": "preparing", "main": "ready", "metrics": "ready"},
            "preparing",
        ),
        # the same image in both releases (frontend) and a stale running delta (main)
        (
            2100003,
            2100004,
            {"frontend": "pending", "main": "pending", "metrics": "ready"},
            "pending",
        ),
    ],
)
def test_service_and_overall_status_follow_the_newest_version_3_delta(
    frozen: tuple[SandboxServer, BalenaSession],
    source: int,
    target: int,
    expected: dict[str, str],
    overall: str,
) -> None:
    info = get_update_info(source, target, session=frozen[1])
    assert statuses(info) == expected
    assert info.overall_status.value == overall


def test_only_target_services_are_described_in_name_order(
    frozen: tuple[SandboxServer, BalenaSession],
) -> None:
    forward = get_update_info(2100001, 2100002, session=frozen[1])
    assert [s.service_name for s in forward.services] == ["frontend", "main", "metrics"]
    backward = get_update_info(2100002, 2100001, session=frozen[1])
    assert [s.service_name for s in backward.services] == ["frontend", "legacy", "main"]


def test_a_new_service_is_ready_without_source_image_or_delta(
    frozen: tuple[SandboxServer, BalenaSession],
) -> None:
    info = get_update_info(2100001, 2100002, session=frozen[1])
    metrics = next(s for s in info.services if s.service_name == "metrics")
    assert metrics.status is UpdateStatus.READY
    assert metrics.source_image is None and metrics.delta is None
    assert "originates_from__image" not in metrics.to_json()
    assert metrics.target_image.id == 2200013


def test_a_built_delta_is_attached_with_its_numeric_size(
    frozen: tuple[SandboxServer, BalenaSession],
) -> None:
    info = get_update_info(2100001, 2100002, session=frozen[1])
    main = next(s for s in info.services if s.service_name == "main")
    assert main.source_image is not None and main.source_image.id == 2200001
    assert main.delta is not None
    assert (main.delta.id, main.delta.version, main.delta.size_bytes) == (2400001, 3, 484575)
    assert main.delta.location == f"{main.target_image.location}:delta-8b2352341f298b9e"
    assert main.to_json()["produces__image"]["is_produced_by__delta"]["size"] == 484575
    assert main.target_image.size_bytes == 310954877


def test_a_delta_being_built_is_not_shown(frozen: tuple[SandboxServer, BalenaSession]) -> None:
    info = get_update_info(2100002, 2100003, session=frozen[1])
    main = next(s for s in info.services if s.service_name == "main")
    assert main.status is UpdateStatus.PREPARING
    assert main.delta is None
    assert "is_produced_by__delta" not in main.to_json()["produces__image"]


def test_payload_is_the_deltas_plus_whole_images_of_new_services(
    frozen: tuple[SandboxServer, BalenaSession],
) -> None:
    info = get_update_info(2100001, 2100002, session=frozen[1])
    # frontend and main deltas from the data file, plus the whole new metrics image
    assert info.estimated_payload_bytes == 96330 + 484575 + 24117248
    assert info.to_json()["estimated_total_payload_size"] == info.estimated_payload_bytes


@pytest.mark.parametrize(("source", "target"), [(2100002, 2100003), (2100001, 2100003)])
def test_payload_is_absent_unless_ready(
    frozen: tuple[SandboxServer, BalenaSession], source: int, target: int
) -> None:
    info = get_update_info(source, target, session=frozen[1])
    assert info.estimated_payload_bytes is None
    assert "estimated_total_payload_size" not in info.to_json()


@pytest.mark.parametrize(
    ("release", "release_id"),
    [("1a5c3e", 2100001), ("1a5c3e9b7d2f4a6c8e0b1d3f5a7c9e2b", 2100001), ("c0ffee5", 2100005)],
)
def test_a_release_is_found_by_commit_prefix(
    frozen: tuple[SandboxServer, BalenaSession], release: str, release_id: int
) -> None:
    info = get_update_info(release, 2100002, session=frozen[1])
    assert info.from_release.id == release_id


def test_a_numeric_string_is_a_commit_prefix_in_the_library(
    frozen: tuple[SandboxServer, BalenaSession],
) -> None:
    with pytest.raises(ReleaseNotFound) as caught:
        get_update_info("2100001", 2100002, session=frozen[1])
    assert caught.value.release == "2100001"


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (999, 2100002, "Release not found: 999"),
        ("deadbeef", 2100002, "Release not found: deadbeef"),
        (2100007, 2100002, "Release not found: 2100007"),  # failed releases do not count
        ("deadfa11", 2100002, "Release not found: deadfa11"),
        (2100001, 888, "Release not found: 888"),
    ],
)
def test_unknown_or_unsuccessful_releases_are_not_found(
    frozen: tuple[SandboxServer, BalenaSession], source: int | str, target: int, message: str
) -> None:
    with pytest.raises(ReleaseNotFound) as caught:
        get_update_info(source, target, session=frozen[1])
    assert str(caught.value) == message


def test_a_shared_commit_prefix_is_ambiguous(frozen: tuple[SandboxServer, BalenaSession]) -> None:
    with pytest.raises(ReleaseAmbiguous) as caught:
        get_update_info("c0ffee", 2100001, session=frozen[1])
    assert str(caught.value) == (
        "Release is ambiguous: There are multiple releases matching the release hash 'c0ffee'"
    )
    assert (caught.value.commit, caught.value.matches) == ("c0ffee", 2)


def test_releases_of_two_fleets_are_refused(frozen: tuple[SandboxServer, BalenaSession]) -> None:
    with pytest.raises(ReleasesNotInOneFleet) as caught:
        get_update_info(2100001, 2100101, session=frozen[1])
    assert str(caught.value) == "Source and target release must be from the same application"
    assert (caught.value.from_fleet_id, caught.value.to_fleet_id) == (1958513, 1958514)


def test_an_image_that_did_not_build_fails_the_whole_call(
    frozen: tuple[SandboxServer, BalenaSession],
) -> None:
    with pytest.raises(ReleaseImageNotFound) as caught:
        get_update_info(2100001, 2100008, session=frozen[1])
    assert str(caught.value) == "Image not found: 2200051"
    assert caught.value.image_id == 2200051


# -- prepare_update ---------------------------------------------------------------------------


def test_prepare_requests_only_pending_services_with_a_source_image(
    slow: tuple[SandboxServer, BalenaSession],
) -> None:
    server, session = slow
    events: list[UpdateEvent] = []
    prepare_update(2100002, 2100003, session=session, delta_url=server.url, on_event=events.append)
    requested = [
        (e.service_name, e.source_image_id, e.target_image_id)
        for e in events
        if isinstance(e, DeltaRequested)
    ]
    # main is already being built (preparing): it is not requested again
    assert requested == [("frontend", 2200012, 2200022), ("metrics", 2200013, 2200023)]


def test_prepare_without_waiting_returns_the_snapshot_taken_before_the_requests(
    slow: tuple[SandboxServer, BalenaSession],
) -> None:
    server, session = slow
    info = prepare_update(2100002, 2100003, session=session, delta_url=server.url)
    assert statuses(info) == {"frontend": "pending", "main": "preparing", "metrics": "pending"}
    after = get_update_info(2100002, 2100003, session=session)
    assert statuses(after)["frontend"] == "preparing"  # the request started a build


def test_prepare_on_a_ready_update_requests_nothing(
    fresh: tuple[SandboxServer, BalenaSession],
) -> None:
    server, session = fresh
    events: list[UpdateEvent] = []
    info = prepare_update(
        2100001, 2100002, session=session, delta_url=server.url, wait=True, on_event=events.append
    )
    assert info.overall_status is UpdateStatus.READY
    assert events == []


def test_waiting_polls_until_the_update_is_ready(
    fresh: tuple[SandboxServer, BalenaSession],
) -> None:
    server, session = fresh
    events: list[UpdateEvent] = []
    sleeps: list[float] = []

    def sleep(duration_s: float) -> None:
        sleeps.append(duration_s)
        __import__("time").sleep(duration_s)

    info = prepare_update(
        2100002,
        2100003,
        session=session,
        delta_url=server.url,
        wait=True,
        poll_interval_s=FAST_POLL_S,
        on_event=events.append,
        sleep=sleep,
    )
    assert info.overall_status is UpdateStatus.READY
    assert set(statuses(info).values()) == {"ready"}
    assert info.estimated_payload_bytes == sum(s.payload_bytes for s in info.services)
    assert sleeps and set(sleeps) == {FAST_POLL_S}
    assert any(isinstance(e, UpdateNotReady) for e in events)


@pytest.mark.parametrize(("wait", "timeout_s"), [(True, 0.2), (None, 0.2), (True, 0), (None, -5)])
def test_waiting_past_the_timeout_fails_with_timeout(
    slow: tuple[SandboxServer, BalenaSession], wait: bool | None, timeout_s: float
) -> None:
    server, session = slow
    with pytest.raises(UpdateTimeout) as caught:
        prepare_update(
            2100003,
            2100004,
            session=session,
            delta_url=server.url,
            wait=wait,
            timeout_s=timeout_s,
            poll_interval_s=FAST_POLL_S,
        )
    assert str(caught.value) == "timeout"


def test_wait_false_overrides_a_timeout(slow: tuple[SandboxServer, BalenaSession]) -> None:
    server, session = slow
    info = prepare_update(
        2100003, 2100004, session=session, delta_url=server.url, wait=False, timeout_s=0
    )
    assert info.overall_status is UpdateStatus.PENDING


def test_a_delta_that_fails_while_waiting_is_requested_again(
    fresh: tuple[SandboxServer, BalenaSession],
) -> None:
    # The sandbox's first build of main 2200001 -> 2200031 fails; the original would wait for
    # it until the timeout, Flasher asks again and the second build succeeds.
    server, session = fresh
    events: list[UpdateEvent] = []
    info = prepare_update(
        2100001,
        2100004,
        session=session,
        delta_url=server.url,
        timeout_s=30,
        poll_interval_s=FAST_POLL_S,
        on_event=events.append,
    )
    assert info.overall_status is UpdateStatus.READY
    main_requests = [
        e for e in events if isinstance(e, DeltaRequested) and e.service_name == "main"
    ]
    assert len(main_requests) == 2
