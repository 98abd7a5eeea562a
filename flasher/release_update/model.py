"""Release-update values: statuses, releases, images, deltas, per-service updates, the whole
update, and the events `prepare_update` reports while it works.

`UpdateInfo.to_json()` gives the exact JSON shape of balena-release-update: the same keys in the
same order, with absent parts left out (not null). Imports only the standard library.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class UpdateStatus(enum.StrEnum):
    """How far a service update (or the whole update) is from ready; ordered by `rank`."""

    PENDING = "pending"
    PREPARING = "preparing"
    READY = "ready"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS = {UpdateStatus.PENDING: 0, UpdateStatus.PREPARING: 1, UpdateStatus.READY: 2}


@dataclass(frozen=True)
class ReleaseRef:
    id: int
    commit: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "commit": self.commit}


@dataclass(frozen=True)
class Delta:
    """A built image delta; `location` is where devices pull it from."""

    id: int
    version: int
    location: str | None
    size_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "is_stored_at__location": self.location,
            "size": self.size_bytes,
        }


@dataclass(frozen=True)
class ServiceImage:
    id: int
    location: str | None
    content_hash: str | None
    size_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_stored_at__image_location": self.location,
            "content_hash": self.content_hash,
            "image_size": self.size_bytes,
        }


@dataclass(frozen=True)
class ServiceUpdate:
    """One service of the target release. `source_image` is None for a service the source
    release does not have; `delta` is set only when the status is ready and a delta exists."""

    service_name: str
    status: UpdateStatus
    target_image: ServiceImage
    source_image: ServiceImage | None = None
    delta: Delta | None = None

    @property
    def payload_bytes(self) -> int:
        """What a device downloads for this service: the delta, else the whole image."""
        return self.delta.size_bytes if self.delta is not None else self.target_image.size_bytes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service_name": self.service_name, "status": self.status.value}
        if self.source_image is not None:
            out["originates_from__image"] = self.source_image.to_json()
        target = self.target_image.to_json()
        if self.delta is not None:
            target["is_produced_by__delta"] = self.delta.to_json()
        out["produces__image"] = target
        return out


@dataclass(frozen=True)
class UpdateInfo:
    """The transition between two releases of one fleet. `estimated_payload_bytes` is known
    only when the update is ready."""

    from_release: ReleaseRef
    to_release: ReleaseRef
    services: tuple[ServiceUpdate, ...]
    overall_status: UpdateStatus
    estimated_payload_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "originates_from__release": self.from_release.to_json(),
            "produces__release": self.to_release.to_json(),
            "is_produced_by__service_update": [s.to_json() for s in self.services],
            "overall_status": self.overall_status.value,
        }
        if self.estimated_payload_bytes is not None:
            out["estimated_total_payload_size"] = self.estimated_payload_bytes
        return out


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatePreparing:
    """The update is not ready: the pending deltas are about to be requested."""


@dataclass(frozen=True)
class DeltaRequested:
    service_name: str
    source_image_id: int
    target_image_id: int


@dataclass(frozen=True)
class UpdateWaiting:
    """Waiting starts; the first check comes after `poll_interval_s`."""

    poll_interval_s: float
    timeout_s: float | None


@dataclass(frozen=True)
class UpdateNotReady:
    """A check found the update not ready; the next one comes after `next_poll_s`."""

    info: UpdateInfo
    next_poll_s: float


UpdateEvent = UpdatePreparing | DeltaRequested | UpdateWaiting | UpdateNotReady
UpdateEventCallback = Callable[[UpdateEvent], None]
