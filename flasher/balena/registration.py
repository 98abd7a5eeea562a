"""Registering devices in a fleet before they are flashed, as `balena device register` and
`balena os configure --device` do, and the config.json such a device boots with.

Registration is `POST /device/register` on the fleet's balena API, authenticated with one of
the fleet's provisioning keys (`Authorization: Bearer <key>`), with the body
`{"application": <fleet id>, "uuid": <32 hex>, "device_type": <slug>, "api_key": <device key>}`;
the API answers 201 `{"id", "uuid", "api_key"}`. The uuid and the device API key are generated
here (16 random bytes as hex each, as the balena SDK's generateUniqueKey does). When logged in
without a provisioning key, one is created first (`POST /api-key/application/<id>/provisioning`).
A registered device that was never flashed can get a fresh device key
(`POST /api-key/device/<id>/device-key`, needs the login) and be flashed later, or be deleted
(`DELETE /v7/device(<id>)`).

The device's config.json is the fleet's, minus the provisioning key (`apiKey`), plus
`deviceApiKey`, `uuid`, `deviceId` and `registered_at` (seconds, as the CLI writes it): the
device boots already provisioned, as itself.

Core: never prints. Imports the standard library, flasher.errors, flasher.models,
flasher.balena.config and flasher.balena.session.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from flasher.balena.config import render_config_json
from flasher.balena.session import BalenaSession
from flasher.error_codes import Action
from flasher.errors import ApiError, ConfigError
from flasher.models import DeviceConfig, Secret

UUID_BYTES = 16
_UUID = re.compile(r"^[0-9a-f]{32,62}$")


def generate_unique_key() -> str:
    """A fresh uuid or device API key: 16 random bytes as 32 lowercase hex digits."""
    return secrets.token_hex(UUID_BYTES)


@dataclass(frozen=True)
class RegisteredDevice:
    """A device the API now lists in the fleet. `api_key` is its own device API key."""

    id: int
    uuid: str
    fleet_id: int
    device_type: str
    api_key: Secret
    registered_at_s: int


@dataclass(frozen=True)
class FleetCredentials:
    """What registering needs, taken from a validated DeviceConfig."""

    fleet_id: int
    device_type: str
    provisioning_key: Secret | None

    @classmethod
    def from_config(cls, cfg: DeviceConfig) -> FleetCredentials:
        """The fleet and provisioning key of `cfg` (given, or in its base config.json)."""
        base: Mapping[str, Any] = cfg.base_config or {}
        fleet = cfg.fleet_id if cfg.fleet_id is not None else base.get("applicationId")
        if fleet is None or isinstance(fleet, bool):
            raise ConfigError(
                "register", "needs a fleet", hint="Name the fleet the devices belong to."
            )
        key = cfg.provisioning_key
        if key is None and isinstance(base.get("apiKey"), str) and base["apiKey"]:
            key = Secret(base["apiKey"])
        return cls(int(fleet), cfg.device_type, key)


def _device_from_answer(answer: Any, creds: FleetCredentials, sent_uuid: str) -> RegisteredDevice:
    if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
        raise ApiError(
            "The balena API answered the device registration with an unexpected shape.",
            hint="Check that the API URL points at a balena API.",
        )
    uuid = answer.get("uuid", sent_uuid)
    key = answer.get("api_key")
    if uuid != sent_uuid or not isinstance(key, str) or not key:
        raise ApiError(
            "The balena API registered a different device than asked for.",
            hint="Try again; if it persists, report it to the API's operators.",
        )
    return RegisteredDevice(
        id=answer["id"],
        uuid=uuid,
        fleet_id=creds.fleet_id,
        device_type=creds.device_type,
        api_key=Secret(key),
        registered_at_s=int(time.time()),
    )


class Registrar:
    """Registers devices in one fleet. `session` is the fleet's API (its login, if any, is only
    used to create a provisioning key, renew a device key or delete a device; registering
    itself sends only the provisioning key)."""

    def __init__(self, session: BalenaSession, creds: FleetCredentials) -> None:
        self.session = session
        self.creds = creds
        self._key = creds.provisioning_key

    def _provisioning_key(self) -> Secret:
        if self._key is None:
            if not self.session.authenticated:
                raise ConfigError(
                    "register",
                    "needs a provisioning key of the fleet, or a login",
                    hint="Give the fleet's provisioning key.",
                    action=Action.LOG_IN,
                )
            answer = self.session.post_json(
                f"/api-key/application/{self.creds.fleet_id}/provisioning",
                {"name": "Flasher bench", "description": "Registers bench-flashed devices"},
                allow_retry=False,
            )
            if not isinstance(answer, str) or not answer:
                raise ApiError("The balena API did not return a provisioning key.")
            self._key = Secret(answer)
        return self._key

    def register(self, *, uuid: str | None = None) -> RegisteredDevice:
        """Register one new device in the fleet (a fresh uuid unless given)."""
        uuid = uuid or generate_unique_key()
        if not _UUID.match(uuid):
            raise ConfigError("uuid", "must be 32 to 62 lowercase hex digits")
        key = self._provisioning_key()
        device_key = generate_unique_key()
        body = {
            "application": self.creds.fleet_id,
            "uuid": uuid,
            "device_type": self.creds.device_type,
            "api_key": device_key,
        }
        # Only the provisioning key goes with this request, never the user's login.
        anonymous = BalenaSession(self.session.api_url, None, max_retries=1)
        try:
            response = anonymous.request(
                "POST",
                "/device/register",
                json=body,
                headers={"Authorization": f"Bearer {key.reveal()}"},
                allow_retry=False,
            )
            answer = response.json()
        except ValueError:
            raise ApiError("The balena API answered the registration with invalid JSON.") from None
        finally:
            anonymous.close()
        return _device_from_answer(answer, self.creds, uuid)

    def device_id(self, uuid: str) -> int:
        rows = self.session.pine_get("device", {"$select": ["id"], "$filter": {"uuid": uuid}})
        if not rows or not isinstance(rows[0].get("id"), int):
            raise ApiError(
                f"The fleet has no device {uuid}.",
                hint="It may have been deleted; register a new one.",
                uuid=uuid,
            )
        return int(rows[0]["id"])

    def renew(self, uuid: str) -> RegisteredDevice:
        """An already registered (never flashed) device with a fresh device API key."""
        device_id = self.device_id(uuid)
        answer = self.session.post_json(
            f"/api-key/device/{device_id}/device-key", {}, allow_retry=False
        )
        if not isinstance(answer, str) or not answer:
            raise ApiError("The balena API did not return a device key.", uuid=uuid)
        return RegisteredDevice(
            id=device_id,
            uuid=uuid,
            fleet_id=self.creds.fleet_id,
            device_type=self.creds.device_type,
            api_key=Secret(answer),
            registered_at_s=int(time.time()),
        )

    def delete(self, uuid: str) -> None:
        device_id = self.device_id(uuid)
        self.session.request("DELETE", f"/v7/device({device_id})")


def device_config(cfg: DeviceConfig, device: RegisteredDevice) -> DeviceConfig:
    """`cfg` for one registered device: its config.json carries the device's uuid, id and own
    device API key, and no provisioning key (as `balena os configure --device` writes it)."""
    config = render_config_json(replace(cfg, hostname=None))
    config.pop("apiKey", None)
    config["deviceApiKey"] = device.api_key.reveal()
    config["registered_at"] = device.registered_at_s
    config["deviceId"] = device.id
    config["uuid"] = device.uuid
    return replace(cfg, base_config=config, provisioning_key=None)
