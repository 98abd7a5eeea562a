"""The catalog commands end to end: `flasher --sandbox ...` through main(), text and --json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.cli import main as cli_main
from flasher.cli.catalog_cmds import table
from flasher.sandbox.server import SandboxServer

DEFAULT_LINE = [
    "6.5.50+rev8",
    "6.5.50+rev7",
    "6.5.44+rev1",
    "6.0.50+rev3",
    "5.3.21+rev3",
    "2.114.18+rev3",
    "2.88.4",
    "2.80.3+rev1.prod",
    "2.80.3+rev1.dev",
]
ESR_LINE = ["2025.7.0", "2025.4.1", "2025.1.3", "2024.10.2"]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No credentials from the machine running the tests.
    for name in ("BALENA_API_KEY", "BALENA_TOKEN", "FLASHER_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BALENARC_DATA_DIRECTORY", str(tmp_path))


pytestmark = pytest.mark.usefixtures("api_url")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    # One server for the module; `--api-url` points each command at it.
    with SandboxServer.start() as server:
        yield server


@pytest.fixture
def api_url(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, isolated: None) -> str:
    monkeypatch.setenv("FLASHER_API_URL", sandbox.url)
    return sandbox.url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_table_aligns_columns() -> None:
    text = table(("A", "LONGER"), [("xyz", "1"), ("", "22")])
    assert text.splitlines() == ["A    LONGER", "xyz  1", "     22"]


def test_device_types_json(capsys: pytest.CaptureFixture[str]) -> None:
    found = {d["slug"]: d for d in run_json(capsys, "device-types")["device_types"]}
    assert found["intel-nuc"] == {
        "slug": "intel-nuc",
        "name": "Intel NUC",
        "arch": "amd64",
        "aliases": ["nuc"],
        "is_private": False,
        "installer_media": True,
    }
    assert found["raspberrypi4-64"]["aliases"] == []


def test_device_types_text_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "device-types")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SLUG", "NAME", "ARCH", "ALIASES", "MEDIA"]
    nuc = next(line for line in lines if line.startswith("intel-nuc "))
    assert nuc.split() == ["intel-nuc", "Intel", "NUC", "amd64", "nuc", "installer"]


def test_global_json_flag_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main.main(["--json", "device-types"])
    assert code == 0
    assert "device_types" in json.loads(capsys.readouterr().out)


def test_sandbox_flag_serves_the_built_in_catalog(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHER_API_URL", "http://127.0.0.1:9")
    code, out, _ = run(capsys, "--sandbox", "os", "latest", "generic-amd64")
    assert (code, out) == (0, "6.8.1\n")


def test_os_versions_lists_the_default_line(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "os", "versions", "raspberrypi4-64")
    assert data["device_type"] == "raspberrypi4-64"
    assert data["os_type"] == "default"
    assert [v["version"] for v in data["versions"]] == DEFAULT_LINE
    first = data["versions"][0]
    assert first == {
        "version": "6.5.50+rev8",
        "os_type": "default",
        "line": None,
        "variant": None,
        "recommended": True,
        "known_issue": None,
        "stripped_version": "6.5.50+rev8",
        "based_on_version": "6.5.50",
        "is_final": True,
        "invalidated": False,
        "id": 3352101,
    }


def test_os_versions_esr_line(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "os", "versions", "raspberrypi4-64", "--esr")
    assert [(v["version"], v["line"]) for v in data["versions"]] == list(
        zip(ESR_LINE, ["next", "current", "sunset", "outdated"], strict=True)
    )


def test_os_versions_include_draft(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "os", "versions", "raspberrypi4-64", "--include-draft")
    assert code == 0
    draft = next(line for line in out.splitlines() if line.startswith("6.5.53-"))
    assert draft.split()[-1] == "draft"


def test_os_versions_text_marks_recommended_and_known_issues(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "os", "versions", "raspberrypi4-64")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert list(rows) == DEFAULT_LINE
    assert rows["6.5.50+rev8"].endswith("recommended")
    assert "known issue: Boot may hang" in rows["6.5.44+rev1"]


def test_os_versions_accepts_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "os", "versions", "nuc")
    assert data["device_type"] == "intel-nuc"
    assert data["versions"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "6.5.50+rev8"),
        (("--esr",), "2025.7.0"),
        (("^2025.4",), "2025.7.0"),
        (("~2.80.3",), "2.80.3+rev1.prod"),
        (("2.80.3+rev1.dev",), "2.80.3+rev1.dev"),
        (("recommended", "--esr"), "2025.7.0"),
    ],
)
def test_os_latest(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    code, out, _ = run(capsys, "os", "latest", "raspberrypi4-64", *args)
    assert code == 0
    assert out == f"{expected}\n"


def test_os_latest_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "os", "latest", "generic-amd64")
    assert data == {
        "device_type": "generic-amd64",
        "range": "latest",
        "os_type": "default",
        "version": "6.8.1",
    }


def test_os_latest_without_match_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "os", "latest", "raspberrypi4-64", "^9")
    assert code == 1
    assert out == ""
    assert "No balenaOS version of raspberrypi4-64 matches '^9'" in err


def test_os_latest_without_match_json_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "os", "latest", "raspberrypi4-64", "^9", "--json")
    assert code == 1
    event = json.loads(out)
    assert (event["event"], event["code"]) == ("error", "catalog")
    assert event["details"] == {"device_type": "raspberrypi4-64", "range": "^9"}


def test_download_size_defaults_to_the_download_version(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "os", "download-size", "raspberrypi4-64")
    assert data == {
        "device_type": "raspberrypi4-64",
        "version": "6.5.50+rev8",
        "size_bytes": 371515392,
    }


def test_download_size_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "os", "download-size", "generic-amd64", "--version", "6.8.1")
    assert code == 0
    assert out == "generic-amd64 6.8.1: 577.4 MB (577393095 bytes)\n"


def test_download_size_unknown_version_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "os", "download-size", "raspberrypi4-64", "--version", "2025.7.0")
    assert code == 1
    assert "No download size known" in err


def test_update_type(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "os", "update-type", "raspberrypi4-64", "2.88.4", "6.5.50+rev8")
    assert data == {
        "device_type": "raspberrypi4-64",
        "from": "2.88.4",
        "to": "6.5.50+rev8",
        "update_type": "balenahup",
    }


def test_update_type_refusal_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "os", "update-type", "raspberrypi4-64", "6.5.50+rev8", "2.88.4")
    assert code == 1
    assert out == ""
    assert "OS downgrades are not allowed" in err


def test_update_targets_stay_on_the_current_line(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "os", "update-targets", "raspberrypi4-64", "2.88.4")
    assert data == {
        "device_type": "raspberrypi4-64",
        "from": "2.88.4",
        "os_type": "default",
        "versions": DEFAULT_LINE[:6],
        "recommended": "6.5.50+rev8",
        "current": "2.88.4",
    }


def test_update_targets_esr(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "os", "update-targets", "raspberrypi4-64", "6.5.50+rev8", "--esr")
    assert data["versions"] == ESR_LINE
    assert data["recommended"] == "2025.7.0"


def test_update_targets_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "os", "update-targets", "raspberrypi4-64", "6.0.51")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "From: 6.0.51 (not an available version of raspberrypi4-64)"
    assert lines[1].split() == ["VERSION", "NOTES"]
    assert lines[2].split() == ["6.5.50+rev8", "recommended"]
    assert [line.split()[0] for line in lines[2:]] == DEFAULT_LINE[:3]


def test_unknown_device_type_exits_1_with_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "os", "versions", "toaster")
    assert code == 1
    assert "error: Invalid device type: toaster" in err
    assert "hint: Run 'flasher device-types'" in err


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main.main(["os", "update-type", "raspberrypi4-64", "2.88.4"])
    assert info.value.code == 2


def test_os_versions_all_adds_drafts_and_invalidated(capsys: pytest.CaptureFixture[str]) -> None:
    found = run_json(capsys, "os", "versions", "raspberrypi4-64", "--all")["versions"]
    listed = {v["version"]: v for v in found}
    assert [v["version"] for v in found] == [
        "6.5.53-1740412345678",
        *DEFAULT_LINE[:3],
        "6.5.39",
        *DEFAULT_LINE[3:],
    ]
    assert (listed["6.5.39"]["invalidated"], listed["6.5.53-1740412345678"]["is_final"]) == (
        True,
        False,
    )
    assert listed["6.5.50+rev8"]["invalidated"] is False


def test_os_versions_all_text_marks_invalidated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "os", "versions", "raspberrypi4-64", "--all")
    assert code == 0
    assert any(line.startswith("6.5.39") and "invalidated" in line for line in out.splitlines())


def test_os_versions_all_with_include_draft_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main.main(["os", "versions", "raspberrypi4-64", "--all", "--include-draft"])
    assert info.value.code == 2


@pytest.mark.parametrize("arch", ["aarch64", "3"])
def test_supervisor_releases_for_an_architecture(
    capsys: pytest.CaptureFixture[str], arch: str
) -> None:
    body = run_json(capsys, "os", "supervisor-releases", arch)
    assert body == {
        "architecture": arch,
        "releases": [
            {"id": 3301234, "version": "17.0.1", "known_issue": None},
            {"id": 3288811, "version": "16.12.9", "known_issue": None},
        ],
    }


def test_supervisor_releases_for_an_unknown_architecture(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_json(capsys, "os", "supervisor-releases", "sparc")["releases"] == []


@pytest.mark.parametrize(
    ("os_arch", "app_arch", "compatible"),
    [
        ("aarch64", "aarch64", True),
        ("aarch64", "armv7hf", True),
        ("aarch64", "rpi", True),
        ("armv7hf", "rpi", True),
        ("armv7hf", "aarch64", False),
        ("rpi", "armv7hf", False),
        ("amd64", "i386", False),
    ],
)
def test_arch_compatible(
    capsys: pytest.CaptureFixture[str], os_arch: str, app_arch: str, compatible: bool
) -> None:
    body = run_json(capsys, "os", "arch-compatible", os_arch, app_arch)
    assert body == {"os_arch": os_arch, "app_arch": app_arch, "compatible": compatible}
