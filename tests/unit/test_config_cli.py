"""Device-configuration options and `flasher config generate`: argv to DeviceConfig, secrets
from the environment or a prompt, and the command's output (bytes, JSON, files, exit codes)."""

from __future__ import annotations

import argparse
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from flasher.balena.config import config_json_bytes
from flasher.cli import main as cli_main
from flasher.cli.config_opts import (
    WIFI_KEY_PROMPT,
    add_device_config_arguments,
    device_config_from_args,
    precheck_device_config,
)
from flasher.errors import EXIT_OK, EXIT_USAGE, ConfigError
from flasher.models import DeviceConfig, Keyfile, NetworkKind, Secret, StaticIPv4

KEY = "hunter2-correct-horse"
PROV = "Xq3mVb9Lr2TzKp7WnY4sHd8cFj1GaE6u"
DT = ["--device-type", "raspberrypi4-64"]
SECRET_ENV = (
    "FLASHER_WIFI_KEY",
    "FLASHER_PROVISIONING_KEY",
    "FLASHER_API_URL",
    "BALENA_API_KEY",
    "BALENA_TOKEN",
)
FLEET = ["--fleet", "1958513", "--version", "6.5.50+rev8"]  # the sandbox's demo fleet


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_device_config_arguments(parser)
    return parser.parse_args(argv)


def _config(argv: list[str], **options: Any) -> DeviceConfig:
    options.setdefault("environ", {})
    options.setdefault("hint", lambda _message: None)
    options.setdefault("prompt", _no_prompt)
    return device_config_from_args(_args(argv), **options)


def _no_prompt(_text: str) -> str:
    raise AssertionError("prompted")


def _error_field(argv: list[str], **options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        _config(argv, **options)
    return caught.value.field


# --- options to DeviceConfig ------------------------------------------------------------------


def test_defaults_are_an_unmanaged_dhcp_ethernet_device() -> None:
    assert _config(DT) == DeviceConfig("raspberrypi4-64")


def test_every_option_lands_in_its_field(tmp_path: Path) -> None:
    keyfile = tmp_path / "cellular"
    keyfile.write_bytes(b"[connection]\nid=cell\ntype=gsm\n")
    cfg = _config(
        [*DT, "--version", "6.5.50+rev8", "--network", "wifi", "--wifi-ssid", "Lab",
         "--wifi-key", KEY, "--hidden", "--ip", "10.0.0.5", "--netmask", "255.255.255.0",
         "--gateway", "10.0.0.1", "--dns", "1.1.1.1,8.8.8.8", "--dns", "9.9.9.9",
         "--poll-interval", "30", "--hostname", "bench01", "--dev", "--persistent-logging",
         "-c", str(keyfile), "--fleet", "1958513", "--provisioning-key", PROV],
    )  # fmt: skip
    assert cfg.os_version == "6.5.50+rev8"
    assert cfg.network.kind is NetworkKind.WIFI
    assert (cfg.network.wifi_ssid, cfg.network.wifi_key, cfg.network.hidden) == (
        "Lab",
        Secret(KEY),
        True,
    )
    assert cfg.network.ipv4 == StaticIPv4(
        "10.0.0.5", "255.255.255.0", "10.0.0.1", ("1.1.1.1", "8.8.8.8", "9.9.9.9")
    )
    assert (cfg.poll_interval_min, cfg.hostname) == (30, "bench01")
    assert (cfg.development_mode, cfg.persistent_logging) == (True, True)
    assert cfg.extra_keyfiles == (Keyfile("cellular", keyfile.read_bytes()),)
    assert (cfg.fleet_id, cfg.provisioning_key) == (1958513, Secret(PROV))


@pytest.mark.parametrize(
    "argv",
    [
        ["--config-network", "wifi", "--config-wifi-ssid", "Lab", "--config-wifi-key", KEY,
         "--config-app-update-poll-interval", "30"],
        ["--network", "wifi", "--wifi-ssid", "Lab", "--wifi-key", KEY, "--poll-interval", "30"],
    ],
    ids=["balena CLI names", "short names"],
)  # fmt: skip
def test_balena_cli_option_names_are_aliases(argv: list[str]) -> None:
    cfg = _config([*DT, *argv])
    assert (cfg.network.wifi_ssid, cfg.network.wifi_key, cfg.poll_interval_min) == (
        "Lab",
        Secret(KEY),
        30,
    )


def test_an_ssid_alone_means_wifi() -> None:
    cfg = _config([*DT, "--wifi-ssid", "Lab"], prompt=lambda _t: "")
    assert cfg.network.kind is NetworkKind.WIFI


def test_wifi_key_comes_from_the_environment() -> None:
    cfg = _config([*DT, "--wifi-ssid", "Lab"], environ={"FLASHER_WIFI_KEY": KEY})
    assert cfg.network.wifi_key == Secret(KEY)


def test_wifi_key_is_asked_for_when_missing() -> None:
    prompts: list[str] = []

    def answer(text: str) -> str:
        prompts.append(text)
        return KEY

    cfg = _config([*DT, "--wifi-ssid", "Lab"], prompt=answer)
    assert cfg.network.wifi_key == Secret(KEY)
    assert prompts == [WIFI_KEY_PROMPT]


def test_an_empty_answer_means_an_open_network() -> None:
    assert _config([*DT, "--wifi-ssid", "Lab"], prompt=lambda _t: "").network.wifi_key is None


def test_no_prompt_before_other_settings_are_valid() -> None:
    assert _error_field([*DT, "--wifi-ssid", "Lab", "--hostname", "Bad.Name"]) == "hostname"


def test_a_bad_answer_is_rejected() -> None:
    assert _error_field([*DT, "--wifi-ssid", "Lab"], prompt=lambda _t: "short") == "wifi_key"


def test_without_a_terminal_a_missing_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(ConfigError) as caught:
        device_config_from_args(
            _args([*DT, "--wifi-ssid", "Lab"]), environ={}, hint=lambda _m: None
        )
    assert caught.value.field == "wifi_key"
    assert "--wifi-open" in (caught.value.hint or "")


def test_the_precheck_without_a_terminal_rejects_a_missing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.delenv("FLASHER_WIFI_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        precheck_device_config(_args([*DT, "--wifi-ssid", "Lab"]))
    assert caught.value.field == "wifi_key"


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["--wifi-ssid", "Lab", "--wifi-open"], {}),
        (["--wifi-ssid", "Lab", "--wifi-key", ""], {}),
        (["--wifi-ssid", "Lab"], {"FLASHER_WIFI_KEY": ""}),
    ],
    ids=["--wifi-open", "empty --wifi-key", "empty env key"],
)
def test_an_open_network_asked_for_needs_no_terminal(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], environ: dict[str, str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    cfg = device_config_from_args(_args([*DT, *argv]), environ=environ, hint=lambda _m: None)
    assert (cfg.network.wifi_key, cfg.network.open_network) == (None, True)


def test_wifi_open_with_a_key_is_rejected() -> None:
    assert _error_field([*DT, "--wifi-ssid", "Lab", "--wifi-open", "--wifi-key", KEY]) == (
        "wifi_key"
    )


def test_wifi_open_on_ethernet_is_rejected() -> None:
    assert _error_field([*DT, "--network", "ethernet", "--wifi-open"]) == "open_network"


def _config_file(tmp_path: Path, **keys: Any) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"deviceType": "raspberrypi3", **keys}))
    return str(path)


def test_config_network_wifi_takes_the_ssid_and_key_from_the_config_file(tmp_path: Path) -> None:
    path = _config_file(tmp_path, wifiSsid="Lab", wifiKey=KEY)
    cfg = _config(["--config", path, "--config-network", "wifi"])
    assert (cfg.network.wifi_ssid, cfg.network.wifi_key) == ("Lab", Secret(KEY))


def test_a_config_file_with_an_empty_key_means_an_open_network(tmp_path: Path) -> None:
    cfg = _config(["--config", _config_file(tmp_path, wifiSsid="Lab", wifiKey="")])
    assert (cfg.network.wifi_key, cfg.network.open_network) == (None, True)


def test_a_config_file_without_a_key_asks_for_it(tmp_path: Path) -> None:
    cfg = _config(["--config", _config_file(tmp_path, wifiSsid="Lab")], prompt=lambda _t: KEY)
    assert cfg.network.wifi_key == Secret(KEY)


def test_another_ssid_does_not_inherit_the_config_files_key(tmp_path: Path) -> None:
    hints: list[str] = []
    path = _config_file(tmp_path, wifiSsid="Lab", wifiKey=KEY)
    args = _args(["--config", path, "--wifi-ssid", "Office"])
    cfg = device_config_from_args(
        args, environ={}, prompt=lambda _t: "other-key-1", hint=hints.append
    )
    assert (cfg.network.wifi_ssid, cfg.network.wifi_key) == ("Office", Secret("other-key-1"))
    assert any("'Lab'" in hint and "'Office'" in hint for hint in hints)


def test_the_same_ssid_keeps_the_config_files_key(tmp_path: Path) -> None:
    path = _config_file(tmp_path, wifiSsid="Lab", wifiKey=KEY)
    cfg = _config(["--config", path, "--wifi-ssid", "Lab"])
    assert cfg.network.wifi_key == Secret(KEY)


@pytest.mark.parametrize(
    ("option", "env"),
    [("--wifi-key", "FLASHER_WIFI_KEY"), ("--provisioning-key", "FLASHER_PROVISIONING_KEY")],
)
def test_secrets_on_the_command_line_draw_a_hint(option: str, env: str) -> None:
    hints: list[str] = []
    argv = [*DT, "--wifi-ssid", "Lab", "--fleet", "5", option, KEY]
    _config(argv, hint=hints.append, prompt=lambda _t: "", expect_remote_config=True)
    assert len(hints) == 1
    assert env in hints[0] and KEY not in hints[0]


def test_provisioning_key_comes_from_the_environment() -> None:
    cfg = _config([*DT, "--fleet", "5"], environ={"FLASHER_PROVISIONING_KEY": PROV})
    assert cfg.provisioning_key == Secret(PROV)


def test_caller_defaults_fill_in_what_the_command_line_leaves_out() -> None:
    cfg = _config([], device_type="generic-amd64", os_version="6.0.13")
    assert (cfg.device_type, cfg.os_version) == ("generic-amd64", "6.0.13")


def test_command_line_wins_over_caller_defaults() -> None:
    cfg = _config([*DT, "--version", "6.5.50+rev8"], device_type="x", os_version="6.0.13")
    assert (cfg.device_type, cfg.os_version) == ("raspberrypi4-64", "6.5.50+rev8")


def test_config_file_supplies_device_type_and_wifi(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"deviceType": "raspberrypi3", "wifiSsid": "Lab", "wifiKey": KEY}))
    cfg = _config(["--config", str(path)])
    assert cfg.device_type == "raspberrypi3"
    assert (cfg.network.kind, cfg.network.wifi_ssid, cfg.network.wifi_key) == (
        NetworkKind.WIFI,
        "Lab",
        Secret(KEY),
    )
    assert cfg.base_config is not None and cfg.base_config["wifiSsid"] == "Lab"


def test_network_option_overrides_config_file_wifi(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"deviceType": "raspberrypi3", "wifiSsid": "Lab"}))
    assert _config(["--config", str(path), "--network", "ethernet"]).network.wifi_ssid is None


def test_api_url_comes_from_the_option_or_environment_but_not_the_sandbox() -> None:
    url = "https://api.open.example.org"
    assert _config(DT, environ={"FLASHER_API_URL": url}).api_url == url
    args = _args(DT)
    args.api_url, args.sandbox = "http://127.0.0.1:1", True
    assert device_config_from_args(args, environ={}, hint=lambda _m: None).api_url is None


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        ([], "device_type"),
        ([*DT, "--netmask", "24"], "ipv4.address"),
        ([*DT, "--dns", "1.1.1.1"], "ipv4.address"),
        ([*DT, "--ip", "10.0.0.5", "--gateway", "10.0.0.1"], "ipv4.netmask"),
        ([*DT, "--ip", "10.0.0.5", "--netmask", "24"], "ipv4.gateway"),
        ([*DT, "--ip", "10.0.0.5", "--netmask", "24", "--gateway", "10.0.0.1", "--dns", "x"],
         "ipv4.dns[0]"),
        ([*DT, "--poll-interval", "ten"], "poll_interval_min"),
        ([*DT, "--poll-interval", "5"], "poll_interval_min"),
        ([*DT, "--fleet", "myorg/myfleet"], "fleet_id"),
        ([*DT, "--fleet", "5"], "provisioning_key"),
        ([*DT, "--network", "ethernet", "--wifi-ssid", "Lab"], "wifi_ssid"),
        ([*DT, "-c", "/nonexistent/cellular"], "keyfile:cellular"),
        ([*DT, "--config", "/nonexistent/config.json"], "config"),
    ],
)  # fmt: skip
def test_bad_options_name_the_field(argv: list[str], field: str) -> None:
    assert _error_field(argv) == field


# --- flasher config generate ------------------------------------------------------------------


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> Any:
    """`run(*argv, env={})` -> (exit code, stdout bytes, stderr text) through the real CLI root."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    # No saved `balena login` token from this machine.
    monkeypatch.setenv("BALENARC_DATA_DIRECTORY", str(tmp_path / "balenarc"))

    def invoke(*argv: str, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        for name in SECRET_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        code = cli_main.main(list(argv))
        out, err = capsysbinary.readouterr()
        return code, out, err.decode()

    return invoke


def test_generate_prints_exactly_the_config_json_bytes(run: Any) -> None:
    env = {"FLASHER_PROVISIONING_KEY": PROV}
    code, out, _ = run("config", "generate", *DT, "--fleet", "5", env=env)
    expected = config_json_bytes(
        DeviceConfig("raspberrypi4-64", fleet_id=5, provisioning_key=Secret(PROV))
    )
    assert (code, out) == (EXIT_OK, expected)


def test_generate_keeps_wifi_in_the_api_keys(run: Any) -> None:
    env = {"FLASHER_WIFI_KEY": KEY}
    code, out, _ = run("config", "generate", *DT, "--wifi-ssid", "Lab", env=env)
    assert code == EXIT_OK
    assert json.loads(out)["wifiKey"] == KEY


def test_generate_json_wraps_the_config(run: Any) -> None:
    code, out, _ = run("--json", "config", "generate", *DT, "--hostname", "bench01")
    assert code == EXIT_OK
    assert json.loads(out) == {
        "config": {
            "deviceType": "raspberrypi4-64",
            "hostname": "bench01",
            "persistentLogging": False,
        }
    }


def test_generate_to_a_file_is_private_and_reports_redacted(run: Any, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "config.json"
    argv = ["--json", "config", "generate", *DT, "--fleet", "5", "-o", str(target)]
    code, out, _ = run(*argv, env={"FLASHER_PROVISIONING_KEY": PROV})
    assert code == EXIT_OK
    assert json.loads(target.read_bytes())["apiKey"] == PROV
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    summary = json.loads(out)
    assert summary["path"] == str(target)
    assert summary["size_bytes"] == target.stat().st_size
    assert summary["config"]["apiKey"] == "***"
    assert list(target.parent.iterdir()) == [target]


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--ip", "10.0.0.5", "--netmask", "24", "--gateway", "10.0.0.1"], "ipv4.address"),
        (["-c", "somefile"], "system_connection"),
        (["--wifi-ssid", "Lab", "--hidden"], "hidden"),
    ],
)
def test_generate_refuses_settings_config_json_cannot_hold(
    run: Any, argv: list[str], field: str
) -> None:
    code, out, _ = run("--json", "config", "generate", *DT, *argv)
    assert code == EXIT_USAGE
    assert json.loads(out)["details"]["field"] == field


def test_generate_errors_never_show_secrets(run: Any) -> None:
    argv = ["--json", "config", "generate", *DT, "--wifi-ssid", "Lab"]
    code, out, err = run(*argv, env={"FLASHER_WIFI_KEY": KEY + "x" * 60})
    assert code == EXIT_USAGE
    assert json.loads(out)["details"]["field"] == "wifi_key"
    assert KEY not in out.decode() and KEY not in err


def test_generate_has_the_api_make_a_fleet_config_when_logged_in(run: Any) -> None:
    argv = ["--poll-interval", "20", "--hostname", "bench01", "--dev"]
    code, out, _ = run("--sandbox", "--token", "t", "config", "generate", *DT, *FLEET, *argv)
    assert code == EXIT_OK
    config = json.loads(out)
    assert config["applicationId"] == 1958513
    assert len(config["apiKey"]) == 32 and config["apiKey"].isalnum()
    assert config["appUpdatePollInterval"] == 20 * 60 * 1000
    assert (config["developmentMode"], config["hostname"]) == (True, "bench01")
    assert list(config)[:2] == ["applicationId", "deviceType"]


def test_generate_passes_wifi_to_the_api(run: Any) -> None:
    argv = ["--sandbox", "--token", "t", "config", "generate", *DT, *FLEET, "--wifi-ssid", "Lab"]
    code, out, _ = run(*argv, env={"FLASHER_WIFI_KEY": KEY})
    assert code == EXIT_OK
    assert (json.loads(out)["wifiSsid"], json.loads(out)["wifiKey"]) == ("Lab", KEY)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--sandbox", "config", "generate", *DT, *FLEET], "provisioning_key"),
        (["--sandbox", "--token", "t", "config", "generate", *DT, "--fleet", "5"], "os_version"),
    ],
    ids=["not logged in", "no version"],
)
def test_generate_needs_a_login_and_version_for_the_api(
    run: Any, argv: list[str], field: str
) -> None:
    code, out, _ = run("--json", *argv)
    assert code == EXIT_USAGE
    assert json.loads(out)["details"]["field"] == field


def test_generate_uses_a_given_key_without_asking_the_api(run: Any) -> None:
    # No --sandbox and no token: any API call would fail, so success proves none was made.
    env = {"FLASHER_PROVISIONING_KEY": PROV, "FLASHER_API_URL": "http://127.0.0.1:9"}
    code, out, _ = run("config", "generate", *DT, *FLEET, env=env)
    assert code == EXIT_OK
    assert json.loads(out)["apiKey"] == PROV
