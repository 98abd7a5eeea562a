"""Validation rules: each bad setting raises ConfigError naming its field; good ones pass; the
order of checks is stable; secrets never appear in an error."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from flasher.errors import ConfigError
from flasher.models import DeviceConfig, Keyfile, NetworkKind, NetworkSettings, Secret, StaticIPv4
from flasher.validation import (
    validate_device_config,
    validate_hostname,
    validate_netmask,
    validate_poll_interval,
    validate_wifi_key,
    validate_wifi_ssid,
)

KEY = "hunter2-correct-horse"
BASE = DeviceConfig("raspberrypi4-64", os_version="6.5.50+rev8")
STATIC = StaticIPv4("192.168.1.50", "24", "192.168.1.1", ("1.1.1.1",))
GOOD_KEYFILE = Keyfile("cellular", b"[connection]\nid=cell\ntype=gsm\n")


def _wifi(ssid: str | None = "Lab", key: str | None = KEY, **extra: Any) -> NetworkSettings:
    return NetworkSettings(
        NetworkKind.WIFI, ssid, Secret(key) if key is not None else None, **extra
    )


def _static(**fields: Any) -> NetworkSettings:
    return NetworkSettings(ipv4=replace(STATIC, **fields))


def _field_of(cfg: DeviceConfig, **options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_device_config(cfg, **options)
    return caught.value.field


VALID = {
    "minimal": DeviceConfig("raspberrypi4-64"),
    "wifi": replace(BASE, network=_wifi()),
    "open wifi asked for": replace(BASE, network=_wifi(key=None, open_network=True)),
    "empty key with open wifi asked for": replace(BASE, network=_wifi(key="", open_network=True)),
    "hidden wifi": replace(BASE, network=_wifi(hidden=True)),
    "wifi 32-byte ssid": replace(BASE, network=_wifi("é" * 16)),
    "wifi hex key": replace(BASE, network=_wifi(key="aB" * 32)),
    "wifi 63-char key": replace(BASE, network=_wifi(key="k" * 63)),
    "static ethernet": replace(BASE, network=_static()),
    "static dotted netmask": replace(BASE, network=_static(netmask="255.255.255.0")),
    "static /31 uses both addresses": replace(
        BASE, network=_static(address="10.0.0.0", netmask="31", gateway="10.0.0.1")
    ),
    "static wifi": replace(BASE, network=_wifi(ipv4=STATIC)),
    "everything": replace(
        BASE,
        fleet_id=1958513,
        provisioning_key=Secret(KEY),
        poll_interval_min=1440,
        hostname="bench-01",
        development_mode=True,
        persistent_logging=True,
        extra_keyfiles=(GOOD_KEYFILE, Keyfile("vpn.nmconnection", GOOD_KEYFILE.content)),
        api_url="https://api.balena-staging.com",
    ),
    "fleet from a base config with a key": replace(
        BASE, fleet_id=7, base_config={"applicationId": 7, "apiKey": KEY}
    ),
    "no version": DeviceConfig("generic-amd64", os_version=None),
    "unified version with dev mode": replace(BASE, development_mode=True),
    "legacy dev version": replace(BASE, os_version="2.88.4+rev1.dev", development_mode=True),
}


@pytest.mark.parametrize("cfg", VALID.values(), ids=VALID.keys())
def test_valid_config_passes(cfg: DeviceConfig) -> None:
    validate_device_config(cfg)


INVALID = {
    "empty device type": (replace(BASE, device_type=""), "device_type"),
    "device type with spaces": (replace(BASE, device_type="Raspberry Pi 4"), "device_type"),
    "device type trailing dash": (replace(BASE, device_type="rpi-"), "device_type"),
    "version word": (replace(BASE, os_version="latest"), "os_version"),
    "version two parts": (replace(BASE, os_version="6.5"), "os_version"),
    "version 1.x": (replace(BASE, os_version="1.26.0"), "os_version"),
    "wifi without ssid": (replace(BASE, network=_wifi(None)), "wifi_ssid"),
    "wifi 33-byte ssid": (replace(BASE, network=_wifi("x" * 33)), "wifi_ssid"),
    "wifi 17 two-byte chars": (replace(BASE, network=_wifi("é" * 17)), "wifi_ssid"),
    "wifi short key": (replace(BASE, network=_wifi(key="7chars!")), "wifi_key"),
    "wifi without a key, open not asked for": (replace(BASE, network=_wifi(key=None)), "wifi_key"),
    "wifi empty key, open not asked for": (replace(BASE, network=_wifi(key="")), "wifi_key"),
    "wifi key with open asked for": (replace(BASE, network=_wifi(open_network=True)), "wifi_key"),
    "open network on ethernet": (
        replace(BASE, network=NetworkSettings(open_network=True)),
        "open_network",
    ),
    "wifi 65-char key": (replace(BASE, network=_wifi(key="k" * 65)), "wifi_key"),
    "wifi 64 non-hex": (replace(BASE, network=_wifi(key="g" * 64)), "wifi_key"),
    "wifi non-ascii key": (replace(BASE, network=_wifi(key="pässwörd123")), "wifi_key"),
    "ethernet with ssid": (
        replace(BASE, network=NetworkSettings(wifi_ssid="Lab")),
        "wifi_ssid",
    ),
    "ethernet with key": (
        replace(BASE, network=NetworkSettings(wifi_key=Secret(KEY))),
        "wifi_key",
    ),
    "ethernet hidden": (replace(BASE, network=NetworkSettings(hidden=True)), "hidden"),
    "bad address": (replace(BASE, network=_static(address="192.168.1.300")), "ipv4.address"),
    "leading zero address": (
        replace(BASE, network=_static(address="192.168.01.5")),
        "ipv4.address",
    ),
    "loopback address": (replace(BASE, network=_static(address="127.0.0.5")), "ipv4.address"),
    "multicast address": (replace(BASE, network=_static(address="224.0.0.5")), "ipv4.address"),
    "network address": (replace(BASE, network=_static(address="192.168.1.0")), "ipv4.address"),
    "broadcast address": (replace(BASE, network=_static(address="192.168.1.255")), "ipv4.address"),
    "prefix 33": (replace(BASE, network=_static(netmask="33")), "ipv4.netmask"),
    "holey netmask": (replace(BASE, network=_static(netmask="255.0.255.0")), "ipv4.netmask"),
    "hostmask": (replace(BASE, network=_static(netmask="0.0.0.255")), "ipv4.netmask"),
    "bad gateway": (replace(BASE, network=_static(gateway="router")), "ipv4.gateway"),
    "gateway outside subnet": (replace(BASE, network=_static(gateway="10.0.0.1")), "ipv4.gateway"),
    "gateway is the address": (
        replace(BASE, network=_static(gateway="192.168.1.50")),
        "ipv4.gateway",
    ),
    "first dns bad": (replace(BASE, network=_static(dns=("dns.google",))), "ipv4.dns[0]"),
    "second dns bad": (replace(BASE, network=_static(dns=("1.1.1.1", "8.8.8"))), "ipv4.dns[1]"),
    "dns zero": (replace(BASE, network=_static(dns=("0.0.0.0",))), "ipv4.dns[0]"),
    "poll 9 min": (replace(BASE, poll_interval_min=9), "poll_interval_min"),
    "poll over a day": (replace(BASE, poll_interval_min=1441), "poll_interval_min"),
    "empty hostname": (replace(BASE, hostname=""), "hostname"),
    "dev with prod version": (
        replace(BASE, os_version="2.88.4+rev1.prod", development_mode=True),
        "development_mode",
    ),
    "api url without scheme": (replace(BASE, api_url="api.example.com"), "api_url"),
    "fleet id zero": (replace(BASE, fleet_id=0, provisioning_key=Secret(KEY)), "fleet_id"),
    "key without fleet": (replace(BASE, provisioning_key=Secret(KEY)), "provisioning_key"),
    "key with spaces": (
        replace(BASE, fleet_id=5, provisioning_key=Secret("has space")),
        "provisioning_key",
    ),
    "fleet without key": (replace(BASE, fleet_id=5), "provisioning_key"),
    "fleet differs from base": (
        replace(BASE, fleet_id=5, base_config={"applicationId": 6, "apiKey": KEY}),
        "fleet_id",
    ),
    "keyfile twice": (
        replace(BASE, extra_keyfiles=(GOOD_KEYFILE, GOOD_KEYFILE)),
        "keyfile:cellular",
    ),
    "keyfile named like the generated one": (
        replace(BASE, network=_wifi(), extra_keyfiles=(replace(GOOD_KEYFILE, name="resin-wifi"),)),
        "keyfile:resin-wifi",
    ),
}


@pytest.mark.parametrize(("cfg", "field"), INVALID.values(), ids=INVALID.keys())
def test_invalid_setting_names_its_field(cfg: DeviceConfig, field: str) -> None:
    assert _field_of(cfg) == field


def test_fleet_without_key_passes_when_the_api_will_generate_config() -> None:
    validate_device_config(replace(BASE, fleet_id=5), expect_remote_config=True)


def test_user_wifi_keyfile_is_fine_when_the_network_is_ethernet() -> None:
    own = Keyfile("resin-wifi", b"[connection]\nid=resin-wifi\ntype=wifi\n")
    validate_device_config(replace(BASE, extra_keyfiles=(own,)))


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "not a file name"),
        ("..", "not a file name"),
        ("a/b", "cannot contain"),
        ("con:1", "cannot contain"),
        ("tab\there", "cannot contain"),
        ("x" * 256, "at most 255"),
        ("trailing.", "cannot end"),
        (".hidden", "ignores"),
        ("backup~", "ignores"),
        ("balena-sample.ignore", "ignores"),
        ("wifi.tmp123", "ignores"),
        ("client.PEM", "ignores"),
        ("key.der", "ignores"),
    ],
)
def test_keyfile_name_rules(name: str, fragment: str) -> None:
    cfg = replace(BASE, extra_keyfiles=(replace(GOOD_KEYFILE, name=name),))
    with pytest.raises(ConfigError) as caught:
        validate_device_config(cfg)
    assert caught.value.field == f"keyfile:{name}"
    assert fragment in caught.value.rule


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[wifi]\nssid=x\n", "no [connection] group"),
        (b"[connection]\ntype=wifi\n", "no 'id'"),
        (b"[connection]\nid=x\ntype=\n", "no 'type'"),
        (b"[connection]\nid=x\ntype=wifi\n[connection]\n", "line 4"),
        (b"not a keyfile", "line 1"),
    ],
)
def test_keyfile_content_must_be_a_connection_profile(content: bytes, fragment: str) -> None:
    cfg = replace(BASE, extra_keyfiles=(Keyfile("mine", content),))
    with pytest.raises(ConfigError) as caught:
        validate_device_config(cfg)
    assert caught.value.field == "keyfile:mine"
    assert fragment in caught.value.rule


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("bench.local", "single name"),
        ("Bench01", "lowercase"),
        ("-bench", "start or end"),
        ("bench-", "start or end"),
        ("bench_01", "letters a-z"),
        ("b" * 64, "at most 63"),
    ],
)
def test_hostname_rules(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_hostname(name)
    assert caught.value.field == "hostname"
    assert fragment in caught.value.rule


@pytest.mark.parametrize("name", ["a", "bench01", "0day", "x" * 63, "my-device-1"])
def test_hostname_accepts_single_labels(name: str) -> None:
    validate_hostname(name)


@pytest.mark.parametrize("value", [True, 10.5, "10"])
def test_poll_interval_must_be_an_integer(value: Any) -> None:
    with pytest.raises(ConfigError):
        validate_poll_interval(value)


@pytest.mark.parametrize(("netmask", "prefix"), [("24", 24), ("255.255.0.0", 16), ("0", 0)])
def test_validate_netmask_returns_the_prefix(netmask: str, prefix: int) -> None:
    assert validate_netmask(netmask) == prefix


def test_ssid_length_counts_utf8_bytes_not_characters() -> None:
    validate_wifi_ssid("日本語のネットワーク")  # 10 characters, 30 bytes
    with pytest.raises(ConfigError):
        validate_wifi_ssid("日本語のネットワーク!!!")  # 13 characters, 33 bytes


def test_checks_run_in_a_stable_order() -> None:
    # Broken everywhere: the device type is reported first, then the network, and so on.
    cfg = DeviceConfig(
        "",
        network=_wifi(None),
        poll_interval_min=1,
        hostname="-",
        extra_keyfiles=(Keyfile("", b""),),
    )
    fields = []
    while True:
        try:
            validate_device_config(cfg)
            break
        except ConfigError as err:
            fields.append(err.field)
            cfg = {
                "device_type": lambda c: replace(c, device_type="raspberrypi4-64"),
                "wifi_ssid": lambda c: replace(c, network=_wifi()),
                "poll_interval_min": lambda c: replace(c, poll_interval_min=None),
                "hostname": lambda c: replace(c, hostname=None),
                "keyfile:": lambda c: replace(c, extra_keyfiles=()),
            }[err.field](cfg)
    assert fields == ["device_type", "wifi_ssid", "poll_interval_min", "hostname", "keyfile:"]


@pytest.mark.parametrize(
    "key",
    [KEY + "x" * 60, "\u00e9" + KEY, "g" * 64, "short"],
    ids=["long", "non-ascii", "hex", "7"],
)
def test_wifi_key_errors_never_show_the_key(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_wifi_key(Secret(key))
    err = caught.value
    for text in (str(err), repr(err), err.rule, str(err.hint), str(err.to_dict())):
        assert key not in text


def test_provisioning_key_errors_never_show_the_key() -> None:
    key = "secret with spaces " + KEY
    with pytest.raises(ConfigError) as caught:
        validate_device_config(replace(BASE, fleet_id=5, provisioning_key=Secret(key)))
    assert KEY not in str(caught.value.to_dict())


def test_keyfile_errors_never_show_its_content() -> None:
    content = f"[connection]\nid=x\ntype=wifi\n[wifi-security]\npsk={KEY}\\q\n".encode()
    with pytest.raises(ConfigError) as caught:
        validate_device_config(replace(BASE, extra_keyfiles=(Keyfile("mine", content),)))
    assert KEY not in str(caught.value.to_dict())


def test_device_config_repr_hides_every_secret() -> None:
    cfg = replace(
        VALID["everything"],
        network=_wifi(),
        extra_keyfiles=(Keyfile("mine", f"[connection]\npsk={KEY}\n".encode()),),
        base_config={"apiKey": KEY},
    )
    assert KEY not in repr(cfg)
