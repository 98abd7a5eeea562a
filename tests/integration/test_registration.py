"""Registering devices in a fleet against the sandbox: each registration is its own device the
API lists, its config.json carries its uuid and own key, and bad keys are refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from flasher.balena.config import config_json_bytes
from flasher.balena.registration import (
    FleetCredentials,
    Registrar,
    device_config,
    generate_unique_key,
)
from flasher.balena.session import BalenaSession
from flasher.errors import AuthError, CatalogError, ConfigError
from flasher.models import DeviceConfig, Secret
from flasher.sandbox.server import SandboxServer

FLEET = 1958513
DEVICE_TYPE = "raspberrypi4-64"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer.start() as server:
        yield server


@pytest.fixture
def session(sandbox: SandboxServer) -> Iterator[BalenaSession]:
    with BalenaSession(sandbox.url, Secret("sandbox-login"), max_retries=0) as s:
        yield s


def _registrar(session: BalenaSession, key: Secret | None = None) -> Registrar:
    return Registrar(session, FleetCredentials(FLEET, DEVICE_TYPE, key))


def _listed(session: BalenaSession) -> dict[str, int]:
    rows = session.pine_get("device", {"$select": ["id", "uuid"]})
    return {row["uuid"]: row["id"] for row in rows}


def test_two_registrations_are_two_devices_the_api_lists(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    registrar = _registrar(session)
    first, second = registrar.register(), registrar.register()
    assert first.uuid != second.uuid and first.id != second.id
    listed = _listed(session)
    assert listed[first.uuid] == first.id and listed[second.uuid] == second.id
    assert sandbox.registrations.holds_key(first.uuid, first.api_key.reveal())
    assert not sandbox.registrations.holds_key(first.uuid, second.api_key.reveal())


def test_registered_device_belongs_to_the_fleet_and_device_type(session: BalenaSession) -> None:
    device = _registrar(session).register()
    (row,) = session.pine_get(
        "device",
        {
            "$filter": {"uuid": device.uuid},
            "$expand": {"belongs_to__application": {"$select": "id"}, "is_of__device_type": {}},
        },
    )
    assert row["belongs_to__application"][0]["id"] == FLEET
    assert row["is_of__device_type"][0]["slug"] == DEVICE_TYPE


def test_registration_with_a_key_from_download_config(session: BalenaSession) -> None:
    api_config = session.post_json(
        "/download-config", {"appId": FLEET, "version": "6.5.50+rev8", "deviceType": DEVICE_TYPE}
    )
    cfg = DeviceConfig(device_type=DEVICE_TYPE, fleet_id=FLEET, base_config=api_config)
    creds = FleetCredentials.from_config(cfg)
    assert creds.provisioning_key == Secret(api_config["apiKey"])
    anonymous = BalenaSession(session.api_url, None)
    device = Registrar(anonymous, creds).register()
    assert device.uuid in _listed(session)


def test_unknown_provisioning_key_is_refused(session: BalenaSession) -> None:
    with pytest.raises(AuthError):
        _registrar(session, Secret("A" * 32)).register()


def test_no_key_and_no_login_is_a_config_error(sandbox: SandboxServer) -> None:
    with pytest.raises(ConfigError, match="provisioning key"):
        _registrar(BalenaSession(sandbox.url, None)).register()


def test_taken_uuid_is_refused(session: BalenaSession) -> None:
    uuid = generate_unique_key()
    registrar = _registrar(session)
    registrar.register(uuid=uuid)
    with pytest.raises(CatalogError) as caught:
        registrar.register(uuid=uuid)
    assert caught.value.status == 409


def test_devices_are_not_listed_to_anonymous_callers(sandbox: SandboxServer) -> None:
    with BalenaSession(sandbox.url, None) as anonymous:
        assert anonymous.pine_get("device") == []


def test_renewed_device_key_is_the_devices_own(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    registrar = _registrar(session)
    device = registrar.register()
    renewed = registrar.renew(device.uuid)
    assert renewed.id == device.id and renewed.api_key != device.api_key
    assert sandbox.registrations.holds_key(device.uuid, renewed.api_key.reveal())


def test_deleted_device_is_no_longer_listed(session: BalenaSession) -> None:
    registrar = _registrar(session)
    device = registrar.register()
    registrar.delete(device.uuid)
    assert device.uuid not in _listed(session)


def test_device_config_carries_the_device_and_not_the_provisioning_key(
    session: BalenaSession,
) -> None:
    key = Secret("P" * 32)
    cfg = DeviceConfig(
        device_type=DEVICE_TYPE, fleet_id=FLEET, provisioning_key=key, hostname="kiosk-1"
    )
    device = _registrar(session).register()
    config = json.loads(config_json_bytes(device_config(cfg, device)))
    assert "apiKey" not in config
    assert config["deviceApiKey"] == device.api_key.reveal()
    assert config["uuid"] == device.uuid and config["deviceId"] == device.id
    assert config["registered_at"] == device.registered_at_s
    assert config["applicationId"] == FLEET and config["hostname"] == "kiosk-1"
    assert "P" * 32 not in json.dumps(config)


def test_registered_device_repr_hides_its_key(session: BalenaSession) -> None:
    device = _registrar(session).register()
    assert device.api_key.reveal() not in repr(device)
