"""The sandbox's fleet releases: services, images, release images, users and image deltas as
pine rows, and the delta builds that the sandbox's delta server starts.

The data (resources/sandbox-fleet-releases.json) covers every state a release update can be in:
ready deltas, deltas being built, failed and stale ones, new and removed services, an image that
did not build, two commits sharing a prefix and a release of another fleet. Builds are
deterministic: a delta the data marks `running` (and every delta the delta server is asked for)
finishes `build_s` seconds after it started, successfully unless the data says its first build
fails. While a build runs its `update_timestamp` stays fresh, as the real delta server keeps it;
a `stale` row is a build whose worker died. Sizes are Big Integers, sent as strings.

Imports only the standard library and flasher.resources; no HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flasher.resources import resource

DATA_FILE = "sandbox-fleet-releases.json"
DELTA_VERSION = 3
STALE_AGE_S = 600.0
REGISTRY = "registry2.balena-cloud.invalid"

Rows = dict[str, dict[int, dict[str, Any]]]

# name -> (fields, single navigations, collection navigations), in pine.ResourceSchema's order.
RESOURCE_SCHEMAS: dict[str, tuple[tuple[str, ...], dict[str, str], dict[str, tuple[str, str]]]] = {
    "service": (("id", "created_at", "service_name"), {"application": "application"}, {}),
    "image": (
        (
            "id",
            "created_at",
            "status",
            "is_stored_at__image_location",
            "content_hash",
            "image_size",
            "push_timestamp",
        ),
        {"is_a_build_of__service": "service"},
        {},
    ),
    "release_image": (
        ("id", "created_at"),
        {"is_part_of__release": "release", "image": "image"},
        {},
    ),
    "delta": (
        (
            "id",
            "created_at",
            "status",
            "version",
            "is_stored_at__location",
            "size",
            "update_timestamp",
        ),
        {"originates_from__image": "image", "produces__image": "image"},
        {},
    ),
    "user": (("id", "username"), {}, {}),
}
# Added to the release resource: who created it, and its images.
RELEASE_SINGLE = {"is_created_by__user": "user"}
RELEASE_COLLECTIONS = {"release_image": ("release_image", "is_part_of__release")}
# Only the sandbox user (any token) sees these; anonymous callers get nothing.
PRIVATE_RESOURCES = frozenset(RESOURCE_SCHEMAS)


def iso(timestamp_s: float) -> str:
    """A JavaScript-style ISO 8601 UTC timestamp (milliseconds, `Z`)."""
    moment = dt.datetime.fromtimestamp(timestamp_s, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _hex(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass
class _Build:
    row_id: int
    finish_at_s: float
    fails: bool


class DeltaBuilds:
    """The delta rows' life: builds in progress, their completion, and the delta server's
    answers. Thread-safe; every method first brings the rows up to date with the clock."""

    def __init__(
        self,
        rows: Rows,
        server_rules: Mapping[tuple[int, int], Mapping[str, Any]],
        *,
        build_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rows = rows
        self._rules = server_rules
        self.build_s = build_s
        self._clock = clock
        self._lock = threading.Lock()
        self._builds: list[_Build] = []
        self._attempts: dict[tuple[int, int], int] = {}

    def start_build(self, row_id: int, *, fails: bool = False) -> None:
        with self._lock:
            self._builds.append(_Build(row_id, self._clock() + self.build_s, fails))

    def advance(self) -> None:
        """Finish the builds whose time has come; keep the others' update_timestamp fresh."""
        with self._lock:
            self._advance()

    def _advance(self) -> None:
        now = self._clock()
        running = []
        for build in self._builds:
            row = self._rows["delta"][build.row_id]
            row["update_timestamp"] = iso(now)
            if now < build.finish_at_s:
                running.append(build)
            elif build.fails:
                row["status"] = "failed"
            else:
                row["status"] = "success"
                row["is_stored_at__location"] = self.delta_location(row)
                row["size"] = str(self._size(row))
        self._builds = running

    def delta_location(self, row: Mapping[str, Any]) -> str:
        dest = self._rows["image"][row["produces__image"]]
        pair = f"{row['originates_from__image']}:{row['produces__image']}"
        return f"{dest['is_stored_at__image_location']}:delta-{_hex(pair, 16)}"

    def _size(self, row: Mapping[str, Any]) -> int:
        dest = self._rows["image"][row["produces__image"]]
        pair = f"{row['originates_from__image']}:{row['produces__image']}"
        return int(dest["image_size"]) // 200 + int(_hex(pair, 6), 16) % 100_000

    def request(self, src: int, dest: int) -> tuple[int, Any]:
        """The delta server's answer to GET /api/v3/delta?src=&dest= (image IDs): 200 with the
        delta's name when built, 504 while it is being built (starting the build if needed),
        or the error the data configures for this pair."""
        with self._lock:
            self._advance()
            images = self._rows["image"]
            if src not in images or dest not in images:
                return 404, "Image not found"
            rule = self._rules.get((src, dest), {})
            if "status" in rule:
                return int(rule["status"]), str(rule.get("body", ""))
            rows = [
                row
                for row in self._rows["delta"].values()
                if (row["originates_from__image"], row["produces__image"]) == (src, dest)
                and row["version"] == DELTA_VERSION
            ]
            done = [row for row in rows if row["status"] == "success"]
            if done:
                newest = max(done, key=lambda row: row["id"])
                return 200, {"name": newest["is_stored_at__location"]}
            building = {b.row_id for b in self._builds}
            if any(row["id"] in building for row in rows):
                return 504, "Gateway Timeout"
            attempt = self._attempts.get((src, dest), 0) + 1
            self._attempts[(src, dest)] = attempt
            now = self._clock()
            row_id = max(self._rows["delta"], default=0) + 1
            self._rows["delta"][row_id] = _delta_row(row_id, src, dest, "running", now)
            fails = attempt == 1 and rule.get("first_build") == "failed"
            self._builds.append(_Build(row_id, now + self.build_s, fails))
            return 504, "Gateway Timeout"


def _delta_row(row_id: int, src: int, dest: int, status: str, now_s: float) -> dict[str, Any]:
    return {
        "id": row_id,
        "created_at": iso(now_s),
        "status": status,
        "version": DELTA_VERSION,
        "is_stored_at__location": None,
        "size": None,
        "update_timestamp": iso(now_s),
        "originates_from__image": src,
        "produces__image": dest,
    }


def _release_row(raw: Mapping[str, Any], user_id: int) -> dict[str, Any]:
    major, minor, patch = (int(part) for part in str(raw["semver"]).split("."))
    return {
        "id": int(raw["id"]),
        "created_at": raw["created_at"],
        "commit": raw["commit"],
        "raw_version": raw["semver"],
        "semver": raw["semver"],
        "semver_major": major,
        "semver_minor": minor,
        "semver_patch": patch,
        "semver_prerelease": "",
        "semver_build": "",
        "revision": 0,
        "variant": "",
        "status": raw.get("status", "success"),
        "source": "cloud",
        "is_final": True,
        "is_finalized_at__date": raw["created_at"],
        "is_invalidated": False,
        "is_passing_tests": True,
        "phase": None,
        "known_issue_list": None,
        "invalidation_reason": None,
        "note": None,
        "contract": None,
        "belongs_to__application": int(raw["application"]),
        "is_created_by__user": user_id,
    }


def load(
    rows: Rows,
    *,
    user_id: int,
    username: str,
    build_s: float,
    path: str | Path | None = None,
    clock: Callable[[], float] = time.time,
) -> DeltaBuilds:
    """Add the fleet-release rows to `rows` (one dict per resource, by id) and return the
    delta builds over them. `path` replaces the bundled data file."""
    source = Path(path) if path is not None else resource(DATA_FILE)
    raw = json.loads(source.read_text(encoding="utf-8"))
    now = clock()
    for name in (*RESOURCE_SCHEMAS, "release"):
        rows.setdefault(name, {})
    rows["user"][user_id] = {"id": user_id, "username": username}
    for service in raw["services"]:
        rows["service"][service["id"]] = {
            "id": service["id"],
            "created_at": "2026-09-01T08:00:00.000Z",
            "service_name": service["service_name"],
            "application": service["application"],
        }
    for image in raw["images"]:
        image_id = int(image["id"])
        rows["image"][image_id] = {
            "id": image_id,
            "created_at": "2026-09-01T08:30:00.000Z",
            "status": image.get("status", "success"),
            "is_stored_at__image_location": f"{REGISTRY}/v2/{_hex(f'image:{image_id}', 32)}",
            "content_hash": f"sha256:{_hex(f'content:{image_id}', 64)}",
            "image_size": str(image["image_size"]),
            "push_timestamp": "2026-09-01T08:40:00.000Z",
            "is_a_build_of__service": image["service"],
        }
    link_id = 2500001
    for release in raw["releases"]:
        row = _release_row(release, user_id)
        rows["release"][row["id"]] = row
        for image_id in release["images"]:
            rows["release_image"][link_id] = {
                "id": link_id,
                "created_at": release["created_at"],
                "is_part_of__release": row["id"],
                "image": image_id,
            }
            link_id += 1
    rules = {(int(r["src"]), int(r["dest"])): r for r in raw.get("delta_server", [])}
    builds = DeltaBuilds(rows, rules, build_s=build_s, clock=clock)
    for delta in raw["deltas"]:
        stale = bool(delta.get("stale"))
        row = _delta_row(
            int(delta["id"]), delta["src"], delta["dest"], delta["status"], now - STALE_AGE_S
        )
        row["version"] = int(delta.get("version", DELTA_VERSION))
        if delta["status"] == "success":
            row["is_stored_at__location"] = builds.delta_location(row)
            row["size"] = str(delta["size"])
        rows["delta"][row["id"]] = row
        if delta["status"] == "running" and not stale:
            builds.start_build(row["id"])
    builds.advance()
    return builds
