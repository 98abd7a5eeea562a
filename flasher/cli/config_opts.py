"""Device-configuration options shared by `os configure`, `config generate` and `flash`: argparse
arguments and their conversion into a validated DeviceConfig.

Option names follow the balena CLI where it has one (`--config-network`, `--config-wifi-ssid`,
`--config-wifi-key`, `--config-app-update-poll-interval`, `-c/--system-connection`), with
shorter spellings as the primary names. Secrets can come from the environment (FLASHER_WIFI_KEY,
FLASHER_PROVISIONING_KEY) or, for the Wi-Fi key, a prompt, because a command line is visible to
every user of the machine. `with_fleet_config_from_api` lets the balena API generate a fleet's
config.json when the user is logged in but has no provisioning key.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from flasher.balena.config import DEFAULT_FLEET_POLL_INTERVAL_MIN, load_config_file
from flasher.cli.context import CliContext
from flasher.cli.output import printable
from flasher.errors import ConfigError
from flasher.image.inspection import ImageIdentity
from flasher.models import DeviceConfig, Keyfile, NetworkKind, NetworkSettings, Secret, StaticIPv4
from flasher.validation import validate_device_config

WIFI_KEY_ENV = "FLASHER_WIFI_KEY"
PROVISIONAL_DEVICE_TYPE = "generic"  # validates the other settings before the image is read
PROVISIONING_KEY_ENV = "FLASHER_PROVISIONING_KEY"
API_URL_ENV = "FLASHER_API_URL"
WIFI_KEY_PROMPT = "Wi-Fi key (leave empty for an open network): "
WIFI_KEY_HINT = (
    f"set {WIFI_KEY_ENV} to the network's key (or run on a terminal to be asked for it); "
    "for an open network add --wifi-open"
)
KEYFILE_MAX_BYTES = 64 * 1024


def add_device_config_arguments(parser: argparse.ArgumentParser) -> None:
    before = {a.dest for a in parser._actions}
    group = parser.add_argument_group("device configuration")
    group.add_argument(
        "--config",
        metavar="FILE",
        dest="config_file",
        help="start from this config.json (e.g. from 'balena config generate'); "
        "the options below are applied on top",
    )
    group.add_argument("--device-type", metavar="SLUG", help="device type, e.g. raspberrypi4-64")
    group.add_argument(
        "--version", dest="os_version", metavar="VERSION", help="balenaOS version, e.g. 6.5.50+rev8"
    )
    group.add_argument(
        "--network",
        "--config-network",
        choices=[kind.value for kind in NetworkKind],
        help="network type (default: ethernet, or wifi when --wifi-ssid is given)",
    )
    group.add_argument("--wifi-ssid", "--config-wifi-ssid", metavar="SSID", help="Wi-Fi name")
    group.add_argument(
        "--wifi-key",
        "--config-wifi-key",
        metavar="KEY",
        help=f"Wi-Fi passphrase (prefer env {WIFI_KEY_ENV}; asked for on a terminal; "
        "'' for an open network)",
    )
    group.add_argument(
        "--wifi-open",
        action="store_true",
        help="the Wi-Fi network is open (no key); an empty --wifi-key means the same",
    )
    group.add_argument("--hidden", action="store_true", help="the Wi-Fi network hides its name")
    group.add_argument("--ip", metavar="ADDRESS", help="static IPv4 address (default: DHCP)")
    group.add_argument("--netmask", metavar="MASK", help="netmask: 24 or 255.255.255.0")
    group.add_argument("--gateway", metavar="ADDRESS", help="IPv4 gateway for --ip")
    group.add_argument(
        "--dns",
        action="append",
        metavar="SERVER",
        help="DNS server for --ip (repeatable, or comma-separated)",
    )
    group.add_argument(
        "--poll-interval",
        "--config-app-update-poll-interval",
        dest="poll_interval",
        metavar="MINUTES",
        help="how often the device checks for updates, 10-1440 minutes",
    )
    group.add_argument("--hostname", help="device hostname; reachable as <hostname>.local")
    group.add_argument("--dev", action="store_true", help="enable development mode")
    group.add_argument("--persistent-logging", action="store_true", help="keep logs across reboots")
    group.add_argument(
        "-c",
        "--system-connection",
        action="append",
        metavar="FILE",
        dest="system_connections",
        help="NetworkManager keyfile to add to system-connections/ (repeatable)",
    )
    group.add_argument("--fleet", metavar="ID", help="numeric ID of the fleet the device joins")
    group.add_argument(
        "--provisioning-key",
        metavar="KEY",
        help=f"the fleet's provisioning key (prefer env {PROVISIONING_KEY_ENV})",
    )
    # What says "configure the image" (the device type and version only say which image).
    added = {a.dest for a in parser._actions} - before - {"device_type", "os_version"}
    parser.set_defaults(config_dests=sorted(added))


def config_requested(args: argparse.Namespace) -> bool:
    """Whether any configuration option was given on the command line."""
    return any(
        getattr(args, dest, None) not in (None, False, [], ())
        for dest in getattr(args, "config_dests", ())
    )


def exact_version(version: str | None) -> str | None:
    """A --version that names one release (not "latest" or a range), which the image must
    carry; None otherwise (the catalog resolves ranges)."""
    if not version or version == "latest" or any(c in version for c in "^~<>=*x| "):
        return None
    return version


def _job_args(args: argparse.Namespace, version_from_catalog: bool) -> argparse.Namespace:
    if not version_from_catalog:
        return args
    local = argparse.Namespace(**vars(args))
    local.os_version = exact_version(getattr(args, "os_version", None))
    return local


def precheck_device_config(args: argparse.Namespace, *, version_from_catalog: bool = False) -> None:
    """Reject bad settings before anything is downloaded or read: silent (no prompt, no hints),
    with a stand-in device type when the image is to supply it. `version_from_catalog`: the
    catalog resolves a --version of "latest" or a range, so only an exact one is checked."""
    device_config_from_args(
        _job_args(args, version_from_catalog),
        device_type=getattr(args, "device_type", None) or PROVISIONAL_DEVICE_TYPE,
        expect_remote_config=True,
        # A terminal will be asked for a missing key later; without one it is an error now.
        prompt=(lambda _: "") if sys.stdin.isatty() else None,
        hint=lambda _: None,
    )


def device_config_for_image(
    args: argparse.Namespace,
    ctx: CliContext,
    identity: ImageIdentity,
    *,
    version_from_catalog: bool = False,
) -> DeviceConfig:
    """The configuration for an image once it is known: its device type and version are the
    defaults, and a fleet without a key gets its config.json from the API."""
    cfg = device_config_from_args(
        _job_args(args, version_from_catalog),
        device_type=identity.device_type,
        os_version=identity.os_version,
        expect_remote_config=True,
    )
    return with_fleet_config_from_api(cfg, ctx)


def _print_hint(message: str) -> None:
    print(f"hint: {printable(message)}", file=sys.stderr)


def _prompt_wifi_key(prompt: str) -> str:
    return getpass.getpass(prompt)


def _text(args: argparse.Namespace, name: str) -> str | None:
    value = getattr(args, name, None)
    return value if isinstance(value, str) else None


def _network(
    args: argparse.Namespace,
    base: Mapping[str, Any] | None,
    environ: Mapping[str, str],
    hint: Callable[[str], None],
) -> tuple[NetworkSettings, bool]:
    """The network settings, and whether the Wi-Fi key is still to be asked for.

    An open network is only ever asked for: `--wifi-open`, or an empty key given on purpose
    (`--wifi-key ''`, FLASHER_WIFI_KEY='', `"wifiKey": ""` in --config, or an empty answer at the
    prompt). As `balena os configure --config` does, a config.json's `wifiSsid`/`wifiKey` are
    read: they mean Wi-Fi unless the command line says otherwise, and its key is kept only for
    its own SSID (another --wifi-ssid needs its own key)."""
    kind_arg = _text(args, "network")
    ssid = _text(args, "wifi_ssid")
    key = _text(args, "wifi_key")
    wifi_open = bool(getattr(args, "wifi_open", False))
    if key:
        hint(f"other users can see --wifi-key in the process list; prefer env {WIFI_KEY_ENV}")
    elif key is None:
        key = environ.get(WIFI_KEY_ENV)
    key_from_user = key is not None
    base_ssid = base.get("wifiSsid") if base is not None else None
    base_key = base.get("wifiKey") if base is not None else None
    file_ssid = str(base_ssid) if isinstance(base_ssid, str) and base_ssid else None
    file_wifi = file_ssid is not None and kind_arg in (None, NetworkKind.WIFI.value)
    if file_wifi and ssid is None:
        ssid = file_ssid
    if file_wifi and key is None and not wifi_open and isinstance(base_key, str):
        if ssid == file_ssid:
            key = base_key
        else:
            hint(
                f"the --config file's wifiKey is for '{file_ssid}', so it is not used for "
                f"'{ssid}'; give that network's key with env {WIFI_KEY_ENV}"
            )
    if kind_arg is not None:
        kind = NetworkKind(kind_arg)
    else:
        kind = NetworkKind.WIFI if ssid is not None else NetworkKind.ETHERNET
    wifi = kind is NetworkKind.WIFI
    if not wifi and _text(args, "wifi_key") is None:
        key = None  # a key exported in the environment is for Wi-Fi jobs; it does not apply here
    settings = NetworkSettings(
        kind=kind,
        wifi_ssid=ssid,
        wifi_key=Secret(key) if key else None,
        hidden=bool(getattr(args, "hidden", False)),
        ipv4=_static_ipv4(args),
        # An empty key given on purpose asks for an open network as --wifi-open does.
        open_network=wifi_open or (wifi and key == ""),
    )
    return settings, wifi and key is None and not wifi_open and not key_from_user


def _static_ipv4(args: argparse.Namespace) -> StaticIPv4 | None:
    address = _text(args, "ip")
    netmask = _text(args, "netmask")
    gateway = _text(args, "gateway")
    dns_args = getattr(args, "dns", None) or []
    dns = tuple(item.strip() for arg in dns_args for item in arg.split(",") if item.strip())
    if address is None:
        if netmask is not None or gateway is not None or dns:
            raise ConfigError(
                "ipv4.address",
                "is required with --netmask, --gateway or --dns",
                hint="add '--ip <address>', or drop them to use DHCP",
            )
        return None
    if netmask is None:
        raise ConfigError("ipv4.netmask", "is required with --ip (e.g. 24 or 255.255.255.0)")
    if gateway is None:
        raise ConfigError("ipv4.gateway", "is required with --ip")
    return StaticIPv4(address=address, netmask=netmask, gateway=gateway, dns=dns)


def _whole_number(text: str | None, field: str, rule: str) -> int | None:
    if text is None:
        return None
    stripped = text.strip()
    if not stripped.isdecimal():
        raise ConfigError(field, rule)
    return int(stripped)


def _read_keyfile(path_text: str) -> Keyfile:
    path = Path(path_text)
    # A name the terminal decoded into surrogates is not text; it is shown with \x escapes.
    shown = os.fsencode(path.name or path_text).decode("utf-8", errors="backslashreplace")
    field = f"keyfile:{shown}"
    if shown != (path.name or path_text):
        raise ConfigError(
            field,
            "the file name is not UTF-8 text; the image's connection files are named in UTF-8",
            hint="rename the file (or a copy of it) to a UTF-8 name",
        )
    try:
        with open(path, "rb") as handle:
            content = handle.read(KEYFILE_MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(field, f"cannot read {path_text}: {err.strerror or err}") from None
    if len(content) > KEYFILE_MAX_BYTES:
        raise ConfigError(field, f"{path_text} is larger than 64 KiB; it is not a keyfile")
    return Keyfile(name=path.name, content=content)


def device_config_from_args(
    args: argparse.Namespace,
    *,
    device_type: str | None = None,
    os_version: str | None = None,
    expect_remote_config: bool = False,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
    hint: Callable[[str], None] | None = None,
) -> DeviceConfig:
    """A validated DeviceConfig from the options above; ConfigError before any image or network
    I/O (only the named files are read).

    `device_type`/`os_version` are the caller's defaults (e.g. read from the image); the command
    line wins, then the caller, then the `--config` file's deviceType. `expect_remote_config`:
    the caller fetches config.json from the API, so `--fleet` needs no provisioning key.
    `environ`, `prompt` and `hint` default to os.environ, getpass on a terminal, and stderr.
    """
    env = os.environ if environ is None else environ
    say = hint or _print_hint
    config_path = _text(args, "config_file")
    base = load_config_file(config_path) if config_path is not None else None
    base_type = base.get("deviceType") if base is not None else None
    chosen_type = (
        _text(args, "device_type")
        or device_type
        or (base_type if isinstance(base_type, str) else None)
    )
    if not chosen_type:
        raise ConfigError("device_type", "is required", hint="add '--device-type <slug>'")
    network, ask_key = _network(args, base, env, say)
    provisioning_key = _text(args, "provisioning_key")
    if provisioning_key is not None:
        say(
            "other users can see --provisioning-key in the process list; "
            f"prefer env {PROVISIONING_KEY_ENV}"
        )
    else:
        provisioning_key = env.get(PROVISIONING_KEY_ENV) or None
    # A device configured against the throwaway in-process sandbox could never reach it; it
    # gets the default endpoints instead.
    api_url = None
    if not getattr(args, "sandbox", False):
        api_url = _text(args, "api_url") or env.get(API_URL_ENV) or None
    cfg = DeviceConfig(
        device_type=chosen_type,
        os_version=_text(args, "os_version") or os_version,
        fleet_id=_whole_number(
            _text(args, "fleet"),
            "fleet_id",
            "must be the fleet's numeric ID (see its dashboard URL)",
        ),
        provisioning_key=Secret(provisioning_key) if provisioning_key is not None else None,
        network=network,
        poll_interval_min=_whole_number(
            _text(args, "poll_interval"), "poll_interval_min", "must be a whole number of minutes"
        ),
        hostname=_text(args, "hostname"),
        development_mode=bool(getattr(args, "dev", False)),
        persistent_logging=bool(getattr(args, "persistent_logging", False)),
        extra_keyfiles=tuple(
            _read_keyfile(p) for p in getattr(args, "system_connections", None) or ()
        ),
        base_config=base,
        api_url=api_url,
    )
    ask = prompt or (_prompt_wifi_key if sys.stdin.isatty() else None)
    if ask_key and ask is not None:
        # The key is asked for only once everything else is known to be valid, so a typo
        # elsewhere does not cost the user a retyped passphrase; until then it counts as given.
        pending = replace(network, open_network=True)
        validate_device_config(
            replace(cfg, network=pending), expect_remote_config=expect_remote_config
        )
        key = ask(WIFI_KEY_PROMPT)
        network = replace(network, wifi_key=Secret(key) if key else None, open_network=not key)
        cfg = replace(cfg, network=network)
    try:
        validate_device_config(cfg, expect_remote_config=expect_remote_config)
    except ConfigError as err:
        if err.field == "wifi_key" and network.wifi_key is None and not network.open_network:
            raise ConfigError(err.field, err.rule, hint=WIFI_KEY_HINT) from None
        raise
    return cfg


def _lacks_credentials(cfg: DeviceConfig) -> bool:
    base = cfg.base_config or {}
    return cfg.provisioning_key is None and not any(
        base.get(key) for key in ("apiKey", "deviceApiKey")
    )


def with_fleet_config_from_api(cfg: DeviceConfig, ctx: CliContext) -> DeviceConfig:
    """For a fleet without credentials (no provisioning key, no key in `--config`): `cfg` on top
    of the config.json the API generates (POST /download-config, which mints a provisioning
    key), validated. Otherwise `cfg` unchanged. Pair it with
    `device_config_from_args(..., expect_remote_config=True)`."""
    fleet_id = cfg.fleet_id
    if fleet_id is None or not _lacks_credentials(cfg):
        return cfg
    if cfg.os_version is None:
        raise ConfigError(
            "os_version",
            "is required for the balena API to generate a fleet's config.json",
            hint="add '--version <balenaOS version>' (see 'flasher os versions <device type>')",
        )
    session = ctx.session()
    if not session.authenticated:
        raise ConfigError(
            "provisioning_key",
            "is required with --fleet when not logged in",
            hint=f"set {PROVISIONING_KEY_ENV} to one of the fleet's provisioning keys, or log in "
            "('balena login' or BALENA_API_KEY) so that the API creates one",
        )
    from flasher.balena.os_model import OsModel  # only fleet jobs need the API client

    network = cfg.network
    wifi = network.kind is NetworkKind.WIFI
    api_config = OsModel(session).get_config(
        fleet_id,
        version=cfg.os_version,
        network="wifi" if wifi else "ethernet",
        app_update_poll_interval_min=cfg.poll_interval_min or DEFAULT_FLEET_POLL_INTERVAL_MIN,
        wifi_ssid=network.wifi_ssid if wifi else None,
        wifi_key=network.wifi_key if wifi else None,
        device_type=cfg.device_type,
        development_mode=True if cfg.development_mode else None,
    )
    with_base = replace(cfg, base_config=api_config)
    validate_device_config(with_base)
    return with_base
