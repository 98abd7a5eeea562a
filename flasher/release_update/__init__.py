"""Release updates: what moving a fleet from one release to another costs, and getting its
image deltas built before the devices ask (the behaviour of balena-release-update).

    get_update_info(from_release, to_release)            -> UpdateInfo
    prepare_update(from_release, to_release, wait=…, timeout_s=…) -> UpdateInfo

Releases are IDs (int) or commit prefixes (str). `UpdateInfo.to_json()` is the original's JSON.
Errors are FlasherErrors (ReleaseNotFound, ReleaseAmbiguous, ReleasesNotInOneFleet,
ReleaseImageNotFound, DeltaRequestFailed, UpdateTimeout, and the session's AuthError/ApiError).
Qt-free and never prints; see `prepare` for where this deliberately differs from the original.
"""

from __future__ import annotations

from flasher.release_update.delta_server import DeltaServer, delta_url_from_settings
from flasher.release_update.info import get_update_info
from flasher.release_update.model import (
    Delta,
    DeltaRequested,
    ReleaseRef,
    ServiceImage,
    ServiceUpdate,
    UpdateEvent,
    UpdateInfo,
    UpdateNotReady,
    UpdatePreparing,
    UpdateStatus,
    UpdateWaiting,
)
from flasher.release_update.prepare import POLL_INTERVAL_S, prepare_update

__all__ = [
    "POLL_INTERVAL_S",
    "Delta",
    "DeltaRequested",
    "DeltaServer",
    "ReleaseRef",
    "ServiceImage",
    "ServiceUpdate",
    "UpdateEvent",
    "UpdateInfo",
    "UpdateNotReady",
    "UpdatePreparing",
    "UpdateStatus",
    "UpdateWaiting",
    "delta_url_from_settings",
    "get_update_info",
    "prepare_update",
]
