"""`prepare_update`: get a release update ready before the devices ask for it.

Describe the update; if it is ready, return that. Otherwise ask the delta server for every
pending service that has a source image (services being prepared are left alone). Without
waiting, return the description taken before those requests. When waiting (`wait=True`, or a
`timeout_s` unless `wait=False`), check again every `poll_interval_s` (20 s, as the original)
until the update is ready, and fail with `timeout` at the deadline (24 h without a timeout).

Two deliberate differences from balena-release-update, whose defects these are:
- a failure during a check (API or delta server) ends the wait with that error, where the
  original never settles (a library caller hangs, the command crashes with a stack trace);
- at every check, services that are pending again (their delta failed, or its build went stale)
  are requested again, where the original waits for them until the timeout.

Imports flasher.balena.session, flasher.errors and this package; never Qt or the faces.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flasher.balena.session import BalenaSession
from flasher.errors import UpdateTimeout
from flasher.release_update.delta_server import DeltaServer, delta_url_from_settings
from flasher.release_update.info import Clock, describe_update, utc_now
from flasher.release_update.model import (
    DeltaRequested,
    UpdateEventCallback,
    UpdateInfo,
    UpdateNotReady,
    UpdatePreparing,
    UpdateStatus,
    UpdateWaiting,
)

POLL_INTERVAL_S = 20.0
DEFAULT_WAIT_S = 24 * 3600.0


def _ignore(_event: object) -> None:
    return None


def request_pending_deltas(
    info: UpdateInfo, deltas: DeltaServer, on_event: UpdateEventCallback = _ignore
) -> None:
    """Ask the delta server for each pending service that has a source image."""
    for service in info.services:
        if service.status is not UpdateStatus.PENDING or service.source_image is None:
            continue
        on_event(
            DeltaRequested(service.service_name, service.source_image.id, service.target_image.id)
        )
        deltas.request_delta(service.source_image.id, service.target_image.id)


def prepare_update(
    from_release: int | str,
    to_release: int | str,
    *,
    session: BalenaSession | None = None,
    wait: bool | None = None,
    timeout_s: float | None = None,
    poll_interval_s: float = POLL_INTERVAL_S,
    delta_url: str | None = None,
    on_event: UpdateEventCallback = _ignore,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    now: Clock = utc_now,
) -> UpdateInfo:
    """Request the update's pending deltas and, when waiting, return once it is ready.

    `delta_url` defaults to the balena settings' delta server; `sleep`, `monotonic` and `now`
    are the clocks (tests pass fast ones). Raises UpdateTimeout at the deadline.
    """
    if session is None:
        with BalenaSession.from_environment() as own:
            return prepare_update(
                from_release,
                to_release,
                session=own,
                wait=wait,
                timeout_s=timeout_s,
                poll_interval_s=poll_interval_s,
                delta_url=delta_url,
                on_event=on_event,
                sleep=sleep,
                monotonic=monotonic,
                now=now,
            )
    should_wait = wait is True or (wait is not False and timeout_s is not None)
    deadline_s = monotonic() + (timeout_s if timeout_s is not None else DEFAULT_WAIT_S)
    info = describe_update(session, from_release, to_release, now=now)
    if info.overall_status is UpdateStatus.READY:
        return info
    url = delta_url or delta_url_from_settings(session.api_url)
    deltas = DeltaServer(url, session.authorization_header())
    try:
        on_event(UpdatePreparing())
        request_pending_deltas(info, deltas, on_event)
        if not should_wait:
            return info
        on_event(UpdateWaiting(poll_interval_s, timeout_s))
        ids = (info.from_release.id, info.to_release.id)
        while True:
            remaining_s = deadline_s - monotonic()
            if remaining_s <= poll_interval_s:
                # The deadline comes first (or together with the next check): time out then.
                sleep(max(remaining_s, 0.0))
                raise UpdateTimeout(timeout_s if timeout_s is not None else DEFAULT_WAIT_S)
            sleep(poll_interval_s)
            latest = describe_update(session, *ids, now=now)
            if latest.overall_status is UpdateStatus.READY:
                return latest
            on_event(UpdateNotReady(latest, poll_interval_s))
            request_pending_deltas(latest, deltas, on_event)
    finally:
        deltas.close()
