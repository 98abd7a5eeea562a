"""The sandbox's device registration: provisioning keys, `POST /device/register`, device keys
and deleting devices, with the balena API's status codes; registered devices are listed through
pine (`GET /v7/device`).

Routes (HTTP-free: `handle()` takes the decoded request and returns (status, JSON value), or
None for a path it does not serve):
* `POST /api-key/application/<id>/provisioning` (login): a new provisioning key, as a JSON
  string. Keys minted by /download-config are provisioning keys too (SandboxApi.issued_keys).
* `POST /device/register` with `Authorization: Bearer <provisioning key>` and
  `{"application", "uuid", "device_type", "api_key"?, "user"?}`: 201 `{"id", "uuid",
  "api_key"}`; 401 for a key that is not one of the fleet's, 400 for a missing or malformed
  field, 409 for a uuid already taken.
* `POST /api-key/device/<id>/device-key` (login): a fresh device API key, as a JSON string.
* `DELETE /v7/device(<id>)` or `DELETE /v7/device?$filter=…` (login): removes the devices.

Device API keys are kept only as SHA-256 digests. Imports the standard library and flasher's
sandbox modules only.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flasher.sandbox.api import ApiProblem, SandboxApi
from flasher.sandbox.odata import QueryOptions, parse_options
from flasher.sandbox.pine import SCHEMAS, PineStore

_PROVISIONING = re.compile(r"^/api-key/application/(\d+)/provisioning/?$")
_DEVICE_KEY = re.compile(r"^/api-key/device/(\d+)/device-key/?$")
_DEVICE_ENTITY = re.compile(r"^/v[67]/device(?:\((\d+)\))?/?$")
_UUID = re.compile(r"^[0-9a-f]{32,62}$")
FIRST_DEVICE_ID = 7_000_001


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class DeviceRegistrations:
    """The devices registered in this sandbox (kept in the pine store as `device` rows, with
    every field of that resource; the ones registration does not know are null)."""

    def __init__(self, api: SandboxApi, pine: PineStore) -> None:
        self._api = api
        self._pine = pine
        self._lock = threading.Lock()
        self._next_id = FIRST_DEVICE_ID
        self._device_keys: dict[int, set[str]] = {}

    def handle(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        body: Mapping[str, Any],
        bearer: str,
        authenticated: bool,
    ) -> tuple[int, Any] | None:
        if method == "POST" and path.rstrip("/") == "/device/register":
            return 201, self.register(body, bearer)
        if method == "POST" and (match := _PROVISIONING.match(path)):
            _require_login(authenticated)
            return 200, self.new_provisioning_key(int(match.group(1)))
        if method == "POST" and (match := _DEVICE_KEY.match(path)):
            _require_login(authenticated)
            return 200, self.new_device_key(int(match.group(1)))
        if method == "DELETE" and (match := _DEVICE_ENTITY.match(path)):
            _require_login(authenticated)
            entity = match.group(1)
            options = parse_options(params)
            self.delete(int(entity) if entity else None, options)
            return 200, "OK"
        return None

    def new_provisioning_key(self, fleet_id: int) -> str:
        app = self._api.catalog.application(fleet_id)
        if app is None or app.is_host:
            raise ApiProblem(404, "Application not found")
        key = self._api.new_provisioning_key()
        self._api.issued_keys[key] = fleet_id
        return key

    def register(self, body: Mapping[str, Any], bearer: str) -> dict[str, Any]:
        fleet = body.get("application")
        if isinstance(fleet, bool) or not isinstance(fleet, int):
            raise ApiProblem(400, "Application id not specified or invalid")
        if self._api.issued_keys.get(bearer) != fleet:
            raise ApiProblem(401, "Unauthorized")
        uuid = body.get("uuid")
        if not isinstance(uuid, str) or not _UUID.match(uuid):
            raise ApiProblem(400, "Invalid uuid: expected 32 to 62 lowercase hex digits")
        slug = body.get("device_type")
        dt = self._api.catalog.device_type(slug) if isinstance(slug, str) else None
        if dt is None:
            raise ApiProblem(400, f"Invalid device type {slug}")
        api_key = body.get("api_key")
        if api_key is None:
            api_key = secrets.token_hex(16)
        if not isinstance(api_key, str) or len(api_key) < 16:
            raise ApiProblem(400, "Invalid api_key")
        with self._lock:
            if any(row["uuid"] == uuid for row in self._pine.rows["device"].values()):
                raise ApiProblem(409, "Device uuid must be unique")
            device_id = self._next_id
            self._next_id += 1
            self._device_keys[device_id] = {_digest(api_key)}
            row: dict[str, Any] = dict.fromkeys(SCHEMAS["device"].fields)
            row.update(
                {
                    "id": device_id,
                    "uuid": uuid,
                    "device_name": uuid[:7],
                    "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "is_online": False,
                    "status": "Inactive",
                    "api_heartbeat_state": "unknown",
                    "os_version": None,
                    "supervisor_version": None,
                    "note": None,
                    "belongs_to__application": fleet,
                    "is_of__device_type": dt.id,
                }
            )
            self._pine.add_devices([row])
        return {"id": device_id, "uuid": uuid, "api_key": api_key}

    def new_device_key(self, device_id: int) -> str:
        with self._lock:
            if device_id not in self._pine.rows["device"]:
                raise ApiProblem(404, "Device not found")
            key = secrets.token_hex(16)
            self._device_keys.setdefault(device_id, set()).add(_digest(key))
        return key

    def holds_key(self, uuid: str, api_key: str) -> bool:
        """Whether `api_key` is one of the device's keys (tests check config.json with it)."""
        for row in self._pine.rows["device"].values():
            if row["uuid"] == uuid:
                return _digest(api_key) in self._device_keys.get(row["id"], set())
        return False

    def delete(self, device_id: int | None, options: QueryOptions) -> None:
        if device_id is None and options.filter is None:
            raise ApiProblem(400, "Deleting every device needs a $filter")
        found = self._pine.query("device", options, entity_id=device_id, authenticated=True)
        with self._lock:
            for row in found["d"]:
                self._pine.remove("device", row["id"])
                self._device_keys.pop(row["id"], None)


def _require_login(authenticated: bool) -> None:
    if not authenticated:
        raise ApiProblem(401, "Unauthorized")
