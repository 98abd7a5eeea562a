"""`get_update_info`: what moving a fleet from one release to another involves, read from the
balena API with the same pine requests balena-release-update makes.

A release is named by its ID (int) or by a prefix of its commit (str, even when it looks like a
number); only successful releases count, and a prefix matches across every fleet the login can
see. Only the target release's services are described (in the order the balena SDK sorts
service names): a service new in the target is ready without a source image, a service the
target drops is left out. For a service in both releases the newest version-3 delta between its
images decides the status: built -> ready (with the delta), built within the last three minutes
-> preparing, otherwise (none, failed, or a build nobody touched for three minutes) -> pending.
The update's status is the least ready of its services (ready when it has none), and its
payload estimate (delta sizes, whole images for new services) exists only when it is ready.

Imports flasher.balena (session, pine), flasher.errors and this package's model; never Qt.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from flasher.balena import pine
from flasher.balena.session import BalenaSession, is_not_found
from flasher.errors import (
    CatalogError,
    ReleaseAmbiguous,
    ReleaseImageNotFound,
    ReleaseNotFound,
    ReleasesNotInOneFleet,
)
from flasher.release_update.model import (
    Delta,
    ReleaseRef,
    ServiceImage,
    ServiceUpdate,
    UpdateInfo,
    UpdateStatus,
)

DELTA_VERSION = 3
# A running delta row counts as being built only if the delta server touched it this recently.
FRESH_BUILD_S = 180.0

Clock = Callable[[], dt.datetime]

_RELEASE_EXPAND: dict[str, Any] = {
    "release_image": {
        "$expand": {
            "image": {
                "$select": "id",
                "$expand": {"is_a_build_of__service": {"$select": "service_name"}},
            }
        }
    },
    "is_created_by__user": {"$select": ["id", "username"]},
}
_IMAGE_SELECT = ["id", "is_stored_at__image_location", "content_hash", "image_size"]
_DELTA_SELECT = ["id", "status", "version", "is_stored_at__location", "size"]
_LEADING_INT = re.compile(r"^\s*([+-]?\d+)")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_big_integer(value: Any) -> int:
    """An OData Big Integer (sent as a string) as JavaScript's parseInt reads it; 0 when absent
    or unreadable."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    match = _LEADING_INT.match(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else 0


def _first(value: Any) -> Mapping[str, Any] | None:
    """The entity of an expanded single navigation (the API sends it as a one-row array)."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, Mapping) else None


def _linked_id(value: Any) -> int | None:
    """The id behind a navigation, deferred (`{"__id": n}`), expanded, or a bare number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    entity = _first(value)
    if entity is None:
        return None
    found = entity.get("__id", entity.get("id"))
    return found if isinstance(found, int) else None


def service_sort_key(name: str) -> tuple[tuple[int, str], ...]:
    """Approximately how JavaScript's localeCompare orders service names: punctuation, then
    digits, then letters ignoring case; lower case before upper case on a tie."""
    primary = tuple(
        (0 if not ch.isalnum() else 1 if ch.isdigit() else 2, ch.casefold()) for ch in name
    )
    tertiary = tuple((0 if ch.islower() or not ch.isalpha() else 1, "") for ch in name)
    return (*primary, (3, ""), *tertiary)


class _Release:
    def __init__(self, row: Mapping[str, Any]) -> None:
        self.id = int(row["id"])
        commit = row.get("commit")
        self.commit = commit if isinstance(commit, str) else None
        self.fleet_id = _linked_id(row.get("belongs_to__application"))
        self.images: dict[str, int] = {}
        for link in row.get("release_image") or ():
            image = _first(link.get("image")) if isinstance(link, Mapping) else None
            service = _first(image.get("is_a_build_of__service")) if image else None
            if image is None or service is None or not isinstance(image.get("id"), int):
                continue
            self.images[str(service.get("service_name"))] = image["id"]

    @property
    def ref(self) -> ReleaseRef:
        return ReleaseRef(self.id, self.commit)


def _fetch_release(session: BalenaSession, release: int | str) -> _Release:
    options: dict[str, Any] = {"$expand": _RELEASE_EXPAND}
    try:
        if isinstance(release, int):
            options["$filter"] = {"status": "success"}
            rows = session.pine_get("release", options, entity_id=release)
        else:
            # Word for word as pinejs-client writes it (its first term unparenthesised).
            prefix = pine.literal(release)
            options["$filter"] = f"startswith(commit,{prefix}) and (status eq 'success')"
            rows = session.pine_get("release", options)
    except CatalogError as err:
        if is_not_found(err):
            raise ReleaseNotFound(release) from None
        raise
    if not rows:
        raise ReleaseNotFound(release)
    if len(rows) > 1:
        raise ReleaseAmbiguous(str(release), len(rows))
    return _Release(rows[0])


def _fetch_image(session: BalenaSession, image_id: int) -> ServiceImage:
    options = {"$select": _IMAGE_SELECT, "$filter": {"status": "success"}}
    try:
        rows = session.pine_get("image", options, entity_id=image_id)
    except CatalogError as err:
        if is_not_found(err):
            raise ReleaseImageNotFound(image_id) from None
        raise
    if not rows:
        raise ReleaseImageNotFound(image_id)
    row = rows[0]
    location, content_hash = row.get("is_stored_at__image_location"), row.get("content_hash")
    return ServiceImage(
        id=int(row.get("id", image_id)),
        location=location if isinstance(location, str) else None,
        content_hash=content_hash if isinstance(content_hash, str) else None,
        size_bytes=parse_big_integer(row.get("image_size")),
    )


def _js_timestamp(moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _fetch_delta(
    session: BalenaSession, source_id: int, target_id: int, now: dt.datetime
) -> Mapping[str, Any] | None:
    fresh_since = _js_timestamp(now - dt.timedelta(seconds=FRESH_BUILD_S))
    options = {
        "$top": 1,
        "$select": _DELTA_SELECT,
        "$filter": {
            "$and": [
                {"version": DELTA_VERSION},
                {"originates_from__image": source_id},
                {"produces__image": target_id},
                {
                    "$or": [
                        {"status": "success"},
                        {
                            "$and": [
                                {"status": "running"},
                                {"update_timestamp": {"$gt": {"$raw": f"datetime'{fresh_since}'"}}},
                            ]
                        },
                    ]
                },
            ]
        },
        "$orderby": {"id": "desc"},
    }
    rows = session.pine_get("delta", options)
    return rows[0] if rows else None


def _service_update(
    session: BalenaSession, name: str, source_id: int | None, target_id: int, now: dt.datetime
) -> ServiceUpdate:
    if source_id is None:
        # A new service: a delta is never built from nothing, so it is ready as it is.
        return ServiceUpdate(name, UpdateStatus.READY, _fetch_image(session, target_id))
    source = _fetch_image(session, source_id)
    target = _fetch_image(session, target_id)
    row = _fetch_delta(session, source_id, target_id, now)
    status = row.get("status") if row is not None else None
    if row is not None and status == "success":
        location = row.get("is_stored_at__location")
        delta = Delta(
            id=int(row["id"]),
            version=parse_big_integer(row.get("version", DELTA_VERSION)),
            location=location if isinstance(location, str) else None,
            size_bytes=parse_big_integer(row.get("size")),
        )
        return ServiceUpdate(name, UpdateStatus.READY, target, source, delta)
    if row is not None and status == "running":
        return ServiceUpdate(name, UpdateStatus.PREPARING, target, source)
    return ServiceUpdate(name, UpdateStatus.PENDING, target, source)


def describe_update(
    session: BalenaSession, from_release: int | str, to_release: int | str, *, now: Clock
) -> UpdateInfo:
    """`get_update_info` over an open session."""
    source = _fetch_release(session, from_release)
    target = _fetch_release(session, to_release)
    if source.fleet_id != target.fleet_id:
        raise ReleasesNotInOneFleet(source.fleet_id, target.fleet_id)
    moment = now()
    services = tuple(
        _service_update(session, name, source.images.get(name), target.images[name], moment)
        for name in sorted(target.images, key=service_sort_key)
    )
    overall = min((s.status for s in services), key=lambda s: s.rank, default=UpdateStatus.READY)
    payload = sum(s.payload_bytes for s in services) if overall is UpdateStatus.READY else None
    return UpdateInfo(source.ref, target.ref, services, overall, payload)


def get_update_info(
    from_release: int | str,
    to_release: int | str,
    *,
    session: BalenaSession | None = None,
    now: Clock = utc_now,
) -> UpdateInfo:
    """Describe the update from `from_release` to `to_release` (IDs, or commit prefixes as
    str). Without `session`, one configured like the balena CLI is opened and closed."""
    if session is not None:
        return describe_update(session, from_release, to_release, now=now)
    with BalenaSession.from_environment() as own:
        return describe_update(own, from_release, to_release, now=now)
