"""config.json: exact bytes (golden files), key order and units, base-config layering, API
endpoints, redaction and loading a user's file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flasher.balena.config import (
    config_json_bytes,
    endpoints_for,
    load_config_file,
    redact_config,
    render_config_json,
)
from flasher.errors import ConfigError
from flasher.models import DeviceConfig, NetworkKind, NetworkSettings, Secret, StaticIPv4

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
KEY = "Xq3mVb9Lr2TzKp7WnY4sHd8cFj1GaE6u"
WIFI = NetworkSettings(NetworkKind.WIFI, "Office", Secret("s3cretpass"))
UNMANAGED = DeviceConfig("raspberrypi4-64", os_version="6.5.50+rev8")
FLEET = replace(UNMANAGED, fleet_id=1958513, provisioning_key=Secret(KEY))
# A config.json as `balena config generate --network wifi` (API + CLI) produces it.
API_BASE: dict[str, Any] = {
    "applicationId": 1958513,
    "deviceType": "raspberrypi4-64",
    "userId": 234385,
    "appUpdatePollInterval": 900000,
    "listenPort": 48484,
    "vpnPort": 443,
    "apiEndpoint": "https://api.balena-cloud.com",
    "vpnEndpoint": "cloudlink.balena-cloud.com",
    "registryEndpoint": "registry2.balena-cloud.com",
    "deltaEndpoint": "https://delta.balena-cloud.com",
    "mixpanelToken": "9ef939ea64cb6cd8bbc96af72345d70d",
    "apiKey": KEY,
    "wifiSsid": "Office",
    "wifiKey": "s3cretpass",
    "files": {"network/network.config": "[service_home_wifi]\nPassphrase=s3cretpass"},
    "os": {"sshKeys": ["ssh-ed25519 AAAA user@host"]},
}

GOLDEN_CASES: dict[str, tuple[DeviceConfig, bool]] = {
    "config-unmanaged-ethernet.json": (UNMANAGED, False),
    "config-unmanaged-wifi.json": (
        replace(UNMANAGED, network=WIFI, hostname="bench01", poll_interval_min=15),
        False,
    ),
    "config-fleet.json": (FLEET, False),
    "config-fleet-dev.json": (
        replace(FLEET, development_mode=True, hostname="bench01", persistent_logging=True),
        False,
    ),
    "config-fleet-generate-wifi.json": (replace(FLEET, network=WIFI), True),
    "config-base-merge.json": (
        replace(
            UNMANAGED,
            base_config=API_BASE,
            network=WIFI,
            poll_interval_min=30,
            hostname="bench01",
            development_mode=True,
        ),
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_config_json_matches_golden_bytes(name: str) -> None:
    cfg, include_wifi = GOLDEN_CASES[name]
    assert config_json_bytes(cfg, include_wifi=include_wifi) == (GOLDEN / name).read_bytes()


def test_fleet_config_is_the_api_answer_without_user_and_analytics_keys() -> None:
    # POST /download-config for this fleet, ethernet, no poll interval given by the CLI user
    # (the CLI sends 10 minutes).
    api_answer = {
        k: v
        for k, v in API_BASE.items()
        if k not in ("wifiSsid", "wifiKey", "files", "os", "userId", "mixpanelToken")
    }
    api_answer["appUpdatePollInterval"] = 600000
    config = render_config_json(FLEET)
    assert list(config.items()) == list(api_answer.items())


def test_bytes_are_compact_utf8_without_trailing_newline() -> None:
    cfg = replace(FLEET, network=NetworkSettings(NetworkKind.WIFI, "Café", Secret("s3cretpass")))
    data = config_json_bytes(cfg, include_wifi=True)
    assert not data.endswith(b"\n")
    assert b": " not in data and b", " not in data
    assert "Café".encode() in data
    assert json.loads(data) == render_config_json(cfg, include_wifi=True)


def test_fleet_keys_come_in_the_api_order() -> None:
    assert list(render_config_json(replace(FLEET, development_mode=True))) == [
        "applicationId",
        "deviceType",
        "appUpdatePollInterval",
        "listenPort",
        "vpnPort",
        "apiEndpoint",
        "vpnEndpoint",
        "registryEndpoint",
        "deltaEndpoint",
        "apiKey",
        "developmentMode",
    ]


@pytest.mark.parametrize(
    ("cfg", "expected_ms"),
    [
        (FLEET, 600000),
        (replace(FLEET, poll_interval_min=72), 4320000),
        (replace(UNMANAGED, poll_interval_min=10), 600000),
        (replace(UNMANAGED, poll_interval_min=1440), 86400000),
        (UNMANAGED, None),
    ],
    ids=["fleet default", "72 min", "unmanaged 10", "a day", "unmanaged unset"],
)
def test_poll_interval_minutes_become_milliseconds(cfg: DeviceConfig, expected_ms: int) -> None:
    assert render_config_json(cfg).get("appUpdatePollInterval") == expected_ms


def test_wifi_and_static_ip_stay_out_of_an_image_config() -> None:
    static = StaticIPv4("192.168.1.50", "24", "192.168.1.1")
    cfg = replace(FLEET, network=replace(WIFI, ipv4=static), base_config=API_BASE)
    config = render_config_json(cfg)
    assert not {"wifiSsid", "wifiKey", "ip", "gateway", "netmask", "files"} & set(config)
    assert b"s3cretpass" not in config_json_bytes(cfg)


def test_generate_writes_wifi_keys_from_the_settings_not_the_base() -> None:
    cfg = replace(
        FLEET, network=NetworkSettings(NetworkKind.WIFI, "Lab", None), base_config=API_BASE
    )
    config = render_config_json(cfg, include_wifi=True)
    assert (config["wifiSsid"], config["wifiKey"]) == ("Lab", "")


def test_generate_with_ethernet_drops_the_base_wifi_keys() -> None:
    config = render_config_json(replace(FLEET, base_config=API_BASE), include_wifi=True)
    assert "wifiSsid" not in config and "wifiKey" not in config


def test_base_config_keeps_its_keys_order_and_unscaled_values() -> None:
    config = render_config_json(replace(UNMANAGED, base_config=API_BASE))
    kept = [k for k in API_BASE if k not in ("wifiSsid", "wifiKey", "files")]
    assert list(config)[: len(kept)] == kept
    assert config["appUpdatePollInterval"] == 900000
    assert config["mixpanelToken"] == API_BASE["mixpanelToken"]


def test_base_config_keeps_files_outside_network() -> None:
    base = {"deviceType": "x", "files": {"network/settings": "a", "other/file": "b"}}
    assert render_config_json(replace(UNMANAGED, base_config=base))["files"] == {"other/file": "b"}


def test_fleet_on_an_unmanaged_base_adds_the_missing_api_keys() -> None:
    base = {"deviceType": "raspberrypi4-64", "persistentLogging": True}
    config = render_config_json(replace(FLEET, base_config=base))
    assert list(config)[:2] == ["deviceType", "persistentLogging"]
    assert config["applicationId"] == FLEET.fleet_id
    assert config["apiKey"] == KEY
    assert config["listenPort"] == 48484
    assert config["appUpdatePollInterval"] == 600000


def test_explicit_settings_overwrite_base_values_in_place() -> None:
    base = {"deviceType": "raspberrypi3", "apiKey": "old", "applicationId": 1, "hostname": "a"}
    cfg = replace(FLEET, base_config=base, hostname="b")
    config = render_config_json(cfg)
    assert list(config)[:4] == ["deviceType", "apiKey", "applicationId", "hostname"]
    assert (config["deviceType"], config["apiKey"], config["hostname"]) == (
        "raspberrypi4-64",
        KEY,
        "b",
    )


def test_switches_left_off_keep_the_base_values() -> None:
    base = {"deviceType": "x", "developmentMode": True, "persistentLogging": True}
    config = render_config_json(replace(UNMANAGED, base_config=base))
    assert (config["developmentMode"], config["persistentLogging"]) == (True, True)


@pytest.mark.parametrize(
    ("api_url", "expected"),
    [
        (
            None,
            ("https://api.balena-cloud.com", "cloudlink.balena-cloud.com",
             "registry2.balena-cloud.com", "https://delta.balena-cloud.com"),
        ),
        (
            "https://api.balena-staging.com/",
            ("https://api.balena-staging.com", "cloudlink.balena-staging.com",
             "registry2.balena-staging.com", "https://delta.balena-staging.com"),
        ),
        (
            "https://api.open.example.org",
            ("https://api.open.example.org", "vpn.open.example.org",
             "registry.open.example.org", "https://delta.open.example.org"),
        ),
        (
            "http://127.0.0.1:8080",
            ("http://127.0.0.1:8080", "127.0.0.1", "127.0.0.1", "http://127.0.0.1:8080"),
        ),
    ],
)  # fmt: skip
def test_endpoints_derive_from_the_api_url(api_url: str | None, expected: tuple[str, ...]) -> None:
    found = endpoints_for(api_url)
    keys = ("apiEndpoint", "vpnEndpoint", "registryEndpoint", "deltaEndpoint")
    assert tuple(found[k] for k in keys) == expected


def test_fleet_config_uses_the_configured_api() -> None:
    config = render_config_json(replace(FLEET, api_url="https://api.open.example.org"))
    assert config["apiEndpoint"] == "https://api.open.example.org"
    assert config["vpnEndpoint"] == "vpn.open.example.org"


def test_redact_masks_secrets_at_any_depth() -> None:
    config = {
        **API_BASE,
        "deviceApiKey": "dk",
        "deviceApiKeys": {"api.balena-cloud.com": "dk"},
        "installer": {"secureboot": True},
        "empty": {"apiKey": ""},
    }
    redacted = redact_config(config)
    for key in ("apiKey", "wifiKey", "deviceApiKey", "mixpanelToken"):
        assert redacted[key] == "***"
    assert redacted["deviceApiKeys"] == {"api.balena-cloud.com": "***"}
    assert redacted["empty"] == {"apiKey": ""}
    assert redacted["os"] == API_BASE["os"]
    assert redacted["installer"] == {"secureboot": True}
    assert redacted["applicationId"] == API_BASE["applicationId"]
    assert KEY not in json.dumps(redacted)


def test_redact_leaves_the_original_alone() -> None:
    config = {"apiKey": KEY, "nested": {"token": "t"}}
    redact_config(config)
    assert config == {"apiKey": KEY, "nested": {"token": "t"}}


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "config.json"
    path.write_bytes(data)
    return path


def test_load_config_file_returns_the_object_in_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps(API_BASE).encode())
    loaded = load_config_file(path)
    assert loaded == API_BASE
    assert list(loaded) == list(API_BASE)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"applicationId": "abc"}', "applicationId must be a number"),
        (b'{"applicationId": true}', "applicationId must be a number"),
        (b'{"deviceType": ""}', "deviceType must be a non-empty string"),
        (b'{"installer": {"secureboot": "yes"}}', "secureboot must be true or false"),
        (b'{"appUpdatePollInterval": "10"}', "appUpdatePollInterval"),
        pytest.param(b" " * (1024 * 1024 + 1), "larger than 1 MiB", id="over 1 MiB"),
    ],
)
def test_load_config_file_rejects_bad_files(tmp_path: Path, data: bytes, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_file(_write(tmp_path, data))
    assert caught.value.field == "config"
    assert fragment in caught.value.rule


def test_load_config_file_accepts_a_numeric_string_application_id(tmp_path: Path) -> None:
    assert load_config_file(_write(tmp_path, b'{"applicationId": "1958513"}')) == {
        "applicationId": "1958513"
    }


def test_load_config_file_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_file(tmp_path / "absent.json")
    assert "absent.json" in caught.value.rule


def test_load_errors_do_not_echo_file_content(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_file(_write(tmp_path, f'{{"apiKey": "{KEY}" oops}}'.encode()))
    assert KEY not in str(caught.value.to_dict())
