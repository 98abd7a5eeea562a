"""`flasher device …` end to end: direct to fake supervisors (--address), through the sandbox's
proxy (--sandbox --name/--uuid), options before and after the verb, --json, exit codes, what
the user is told, and keys kept out of the output."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from flasher.cli.main import main
from flasher.sandbox.devices import DEMO_FLEET, GATEWAY_FLEET, SandboxDevices
from flasher.sandbox.supervisor_fake import FakeSupervisor

DEMO = str(DEMO_FLEET[0])
GATEWAY = str(GATEWAY_FLEET[0])


@pytest.fixture(autouse=True)
def _no_device_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BALENA_SUPERVISOR_ADDRESS", "BALENA_SUPERVISOR_API_KEY", "BALENA_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def key_file(kitchen: FakeSupervisor, tmp_path: Path) -> str:
    path = tmp_path / "key"
    path.write_text(f"{kitchen.spec.api_key}\n")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "order",
    [
        ("device", "--address", "{url}", "--api-key-file", "{key}", "name"),
        ("device", "name", "--address", "{url}", "--api-key-file", "{key}"),
        ("device", "--address", "{url}", "name", "--api-key-file", "{key}"),
    ],
    ids=["before", "after", "split"],
)
def test_target_options_work_before_and_after_the_verb(
    capsys: pytest.CaptureFixture[str], kitchen: FakeSupervisor, key_file: str, order: Any
) -> None:
    argv = [a.format(url=kitchen.url, key=key_file) for a in order]
    code, out, _err = run(capsys, *argv)
    assert (code, out.strip()) == (0, "kitchen-pi")
    assert kitchen.requests[-1].key == kitchen.spec.api_key


def test_json_after_the_verb_prints_the_answer(
    capsys: pytest.CaptureFixture[str], kitchen: FakeSupervisor, key_file: str
) -> None:
    code, out, _ = run(
        capsys,
        "device",
        "device-info",
        "--address",
        kitchen.url,
        "--api-key-file",
        key_file,
        "--json",
    )
    assert code == 0
    assert json.loads(out) == {"device_type": "raspberrypi4-64", "arch": "aarch64"}


def test_key_from_the_environment_as_in_a_service_container(
    capsys: pytest.CaptureFixture[str], kitchen: FakeSupervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALENA_SUPERVISOR_ADDRESS", kitchen.url)
    monkeypatch.setenv("BALENA_SUPERVISOR_API_KEY", kitchen.spec.api_key or "")
    code, out, _ = run(capsys, "device", "version")
    assert (code, out.strip()) == (0, "supervisor 17.0.3")


def test_locked_device_exits_6_with_the_lock_message_and_a_force_hint(
    capsys: pytest.CaptureFixture[str], devices: SandboxDevices, tmp_path: Path
) -> None:
    fake = devices.supervisor("locked-pi")
    (tmp_path / "k").write_text(fake.spec.api_key or "")
    code, _out, err = run(
        capsys, "device", "reboot", "--address", fake.url, "--api-key-file", str(tmp_path / "k")
    )
    assert code == 6
    assert "Lockfile exists for { appId: 1958513, service: main }" in err
    assert "--force" in err


def test_force_reaches_the_device(
    capsys: pytest.CaptureFixture[str], devices: SandboxDevices, tmp_path: Path
) -> None:
    fake = devices.supervisor("locked-pi")
    (tmp_path / "k").write_text(fake.spec.api_key or "")
    argv = ["device", "restart", DEMO, "--service", "main", "--force"]
    code, out, _ = run(capsys, *argv, "--address", fake.url, "--api-key-file", str(tmp_path / "k"))
    assert code == 0 and "Restarted main" in out
    assert fake.requests[-1].body == {"force": True, "serviceName": "main"}


def test_wrong_key_exits_7_says_which_key_and_never_shows_it(
    capsys: pytest.CaptureFixture[str], kitchen: FakeSupervisor
) -> None:
    code, out, err = run(capsys, "device", "info", "--address", kitchen.url, "--api-key", "bad0key")
    assert code == 7
    assert "refused the API key" in err and "supervisor API key" in err
    assert "bad0key" not in out + err


def test_missing_key_says_local_mode_needs_none(
    capsys: pytest.CaptureFixture[str], kitchen: FakeSupervisor
) -> None:
    code, _out, err = run(capsys, "device", "info", "--address", kitchen.url)
    assert code == 7
    assert "without an API key" in err and "local-mode" in err


def test_unreachable_device_names_the_address_and_what_was_tried(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--json", "device", "ping", "--address", "127.0.0.1:9")
    error = json.loads(out)
    assert code == 5
    assert error["code"] == "device_unreachable"
    assert "127.0.0.1:9" in error["message"]
    assert error["details"]["tried"] == [
        "GET http://127.0.0.1:9/ping: connection refused or no route"
    ]


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["device", "ping"], "device"),
        (["device", "ping", "--address", "ftp://x"], "--address"),
        (["device", "ping", "--address", "a", "--uuid", "abcdef0"], "device"),
        (["device", "logs", "--count", "0", "--address", "a"], "--count"),
        (["device", "host-config", "--proxy-type", "socks5", "--address", "a"], "--proxy-type"),
        (
            ["device", "host-config", "--clear-proxy", "--proxy-ip", "x", "--address", "a"],
            "--clear-proxy",
        ),
        (["device", "tags", "--set", "no equals", "--address", "a"], "--set"),
        (["device", "wait", "--timeout", "0", "--address", "a"], "--timeout"),
    ],
    ids=["no-device", "bad-address", "two-devices", "count", "proxy", "clear", "tag", "timeout"],
)
def test_bad_input_is_refused_before_any_io(
    capsys: pytest.CaptureFixture[str], argv: list[str], field: str
) -> None:
    code, out, _ = run(capsys, "--json", *argv)
    assert code == 2
    assert json.loads(out)["details"]["field"] == field


def test_regenerated_key_goes_to_a_private_file_never_the_output(
    capsys: pytest.CaptureFixture[str], kitchen: FakeSupervisor, key_file: str, tmp_path: Path
) -> None:
    target = tmp_path / "new-key"
    code, out, err = run(
        capsys, "device", "regenerate-api-key", "--key-file", str(target),
        "--address", kitchen.url, "--api-key-file", key_file,
    )  # fmt: skip
    new_key = target.read_text().strip()
    assert code == 0
    assert new_key == kitchen.state.api_key and new_key != kitchen.spec.api_key
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert new_key not in out + err


def test_logs_stop_after_count(capsys: pytest.CaptureFixture[str], devices: SandboxDevices) -> None:
    fake = devices.supervisor("gateway-local")
    code, out, _ = run(capsys, "device", "logs", "--count", "3", "--address", fake.url, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [line["message"] for line in lines] == [
        "Streaming logs",
        "main log line 0",
        "main log line 1",
    ]


def test_wait_checks_type_and_os_version(
    capsys: pytest.CaptureFixture[str], devices: SandboxDevices
) -> None:
    fake = devices.supervisor("gateway-local")
    argv = ["device", "wait", "--address", fake.url, "--device-type", "generic-amd64"]
    code, out, _ = run(capsys, *argv, "--os-version", "6.8.1", "--json")
    check = json.loads(out)
    assert code == 0
    assert (check["up"], check["device_type"], check["os_version"]) == (
        True,
        "generic-amd64",
        "balenaOS 6.8.1",
    )


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--device-type", "raspberrypi5", "not a raspberrypi5"),
        ("--os-version", "6.5.50", "not 6.5.50"),
    ],
)
def test_wait_fails_clearly_on_another_device(
    capsys: pytest.CaptureFixture[str], devices: SandboxDevices, option: str, value: str, words: str
) -> None:
    fake = devices.supervisor("gateway-local")
    code, _out, err = run(capsys, "device", "wait", "--address", fake.url, option, value)
    assert code == 8
    assert words in err


# -- through the sandbox's balena API ---------------------------------------------------------


def test_sandbox_lists_its_devices(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--sandbox", "device", "list", "--json")
    rows = {d["name"]: d for d in json.loads(out)}
    assert code == 0
    assert rows["cellar-pi"]["online"] is False
    assert rows["gateway-multi"]["device_type"] == "generic-amd64"
    assert "bench-nuc" not in rows  # unmanaged devices are not registered


def test_sandbox_uuid_prefix_through_the_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    _code, listing, _ = run(capsys, "--sandbox", "device", "list", "--json")
    uuid = next(d["uuid"] for d in json.loads(listing) if d["name"] == "hall-pi")
    code, out, _ = run(capsys, "--sandbox", "device", "--uuid", uuid[:7], "name")
    assert (code, out.strip()) == (0, "hall-pi")


@pytest.mark.parametrize(
    ("name", "code", "json_code"),
    [
        ("cellar-pi", 5, "device_offline"),
        ("attic-pi", 5, "device_unreachable"),
        ("locked-pi", 6, "device_locked"),
    ],
)
def test_sandbox_failures_through_the_proxy(
    capsys: pytest.CaptureFixture[str], name: str, code: int, json_code: str
) -> None:
    got, out, _ = run(capsys, "--sandbox", "device", "--name", name, "shutdown", "--json")
    assert got == code
    assert json.loads(out)["code"] == json_code


def test_sandbox_multi_container_service_stop(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "--sandbox",
        "device",
        "stop",
        GATEWAY,
        "--service",
        "frontend",
        "--name",
        "gateway-multi",
    )
    assert code == 0 and "Stopped frontend" in out


def test_sandbox_direct_local_mode_target_state(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state = {"local": {"name": "lab", "config": {}, "apps": {}}}
    (tmp_path / "t.json").write_text(json.dumps(state))
    argv = ["--sandbox", "device", "--name", "gateway-local", "--direct", "target-state"]
    code, out, _ = run(capsys, *argv, "--set", str(tmp_path / "t.json"), "--json")
    assert code == 0
    assert json.loads(out) == state


@pytest.mark.parametrize(
    "extra",
    [[], ["--hostname-template", "b-{n}", "--boot-address", "{name}.local"]],
    ids=["no-hostnames", "placeholder"],
)
def test_bench_check_boot_settings_are_refused_before_any_io(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str]
) -> None:
    argv = ["--json", "--sandbox", "bench", "--device-type", "raspberrypi4-64", "--check-boot"]
    code, out, _ = run(capsys, *argv, *extra, "--yes", "--report", str(tmp_path / "r.jsonl"))
    assert code == 2
    assert json.loads(out)["details"]["field"] == "boot_address"
    assert not (tmp_path / "r.jsonl").exists()


def test_a_full_uuid_goes_to_the_proxy_without_a_device_lookup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flasher.balena.session import BalenaSession
    from flasher.sandbox.devices import sandbox_uuid

    asked: list[str] = []
    original = BalenaSession.pine_get

    def recording(self: BalenaSession, resource: str, *a: Any, **k: Any) -> Any:
        asked.append(resource)
        return original(self, resource, *a, **k)

    monkeypatch.setattr(BalenaSession, "pine_get", recording)
    code, out, _ = run(capsys, "--sandbox", "device", "--uuid", sandbox_uuid("hall-pi"), "name")
    assert (code, out.strip(), asked) == (0, "hall-pi", [])


def test_fleet_action_reports_each_device_and_fails_if_one_did(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--sandbox", "device", "--fleet", DEMO, "identify", "--json")
    result = json.loads(out)
    assert code == 1  # attic-pi is online for the API but does not answer
    assert result["status"] == 207
    assert sorted(r["status"] for r in result["replies"]) == [200, 200, 200, 502]


def test_fleet_is_refused_for_one_device_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "--sandbox", "device", "--fleet", DEMO, "info")
    assert code == 2
    assert json.loads(out)["details"]["field"] == "--fleet"


def test_whole_app_stop_on_a_multi_container_app_points_at_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _out, err = run(capsys, "--sandbox", "device", "--name", "gateway-multi", "stop", GATEWAY)
    assert code == 1
    assert "multi-container" in err and "--service" in err
