"""What the CLI prints and accepts from outside: terminal control sequences stripped from
foreign text, the saved login kept to its own API, and malformed inputs refused cleanly."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.cli import main as cli_main
from flasher.cli.output import Output, printable
from flasher.errors import EXIT_USAGE, FlasherError
from tests.support.fakeapi import Answer, FakeApi

TOKEN = "tok_0123456789abcdef-safety"
HOSTILE = "Bad\x1b]0;owned\x07 news\x1b[2J\x1b[31m!\x9b1m\r\x08\x00done"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "BALENA_API_KEY",
        "BALENA_TOKEN",
        "FLASHER_API_URL",
        "BALENARC_API_URL",
        "BALENARC_BALENA_URL",
        "FLASHER_WIFI_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BALENARC_DATA_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as server:
        yield server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- control sequences --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text, é and 日本", "plain text, é and 日本"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b]0;new title\x07after", "after"),
        ("\x1b]8;;https://x.example\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1bPdevice control\x1b\\x", "x"),
        ("c1 \x9b2J csi", "c1  csi"),
        ("carriage\rreturn", "carriagereturn"),
        ("back\x08space del\x7f nul\x00", "backspace del nul"),
        ("dangling escape\x1b", "dangling escape"),
        ("lone \udc80 surrogate", "lone \\udc80 surrogate"),
    ],
)
def test_printable_strips_control_sequences(text: str, expected: str) -> None:
    assert printable(text) == expected


def test_text_results_and_errors_are_printed_without_control_sequences() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(stdout=stdout, stderr=stderr)
    out.result({"name": HOSTILE}, f"name: {HOSTILE}")
    out.info(HOSTILE)
    out.error(FlasherError(HOSTILE, hint=HOSTILE))
    printed = stdout.getvalue() + stderr.getvalue()
    assert not any(c in printed for c in "\x1b\x9b\r\x08\x00\x07")
    assert "Bad news!done" in printed


def test_a_servers_message_reaches_the_terminal_without_control_sequences(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.reply("GET", "/v7/device_type", Answer(400, {"message": HOSTILE}))
    code, out, err = run(capsys, "--api-url", api.url, "device-types")
    assert code != 0
    assert "Bad news!" in err
    assert not any(c in out + err for c in "\x1b\x9b\r\x08\x00\x07")


def test_json_output_escapes_control_characters(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.reply("GET", "/v7/device_type", Answer(400, {"message": HOSTILE}))
    code, out, _ = run(capsys, "--api-url", api.url, "device-types", "--json")
    assert code != 0
    assert "\x1b" not in out
    assert "\x1b]0;owned" in json.loads(out)["message"]


# --- the saved login and plain http -------------------------------------------------------------


def test_the_saved_login_is_not_sent_to_another_api_url(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    api.reply("GET", "/v7/device_type", Answer(200, {"d": []}))
    code, _, _ = run(capsys, "device-types", "--api-url", api.url)
    assert code == 0
    assert all("authorization" not in r.headers for r in api.requests)


def test_an_explicit_token_is_sent_to_the_api_url(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.reply("GET", "/v7/device_type", Answer(200, {"d": []}))
    code, _, _ = run(capsys, "device-types", "--api-url", api.url, "--token", TOKEN)
    assert code == 0
    assert api.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_token_for_a_plain_http_host_is_refused_before_any_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ("--json", "device-types", "--api-url", "http://api.example.org", "--token", TOKEN)
    code, out, _ = run(capsys, *argv)
    error = json.loads(out)
    assert code == EXIT_USAGE
    assert (error["code"], error["details"]["field"]) == ("invalid_config", "api_url")
    assert TOKEN not in out


# --- inputs that used to crash ------------------------------------------------------------------


def _error_of(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, _ = run(capsys, "--json", *argv)
    assert code == EXIT_USAGE
    error: dict[str, Any] = json.loads(out)
    assert error["code"] == "invalid_config"
    return error


def test_a_keyfile_whose_name_is_not_utf8_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = os.fsdecode(b"lab\xff")
    (tmp_path / name).write_text("[connection]\nid=lab\ntype=ethernet\n")
    image = tmp_path / "balena.img"
    image.write_bytes(b"\0" * 512)
    argv = ("os", "configure", str(image), "--device-type", "raspberrypi4-64", "-c", name)
    error = _error_of(capsys, *argv)
    assert error["details"]["field"] == "keyfile:lab\\xff"
    assert image.read_bytes() == b"\0" * 512


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        ('{"deviceType": "raspberrypi4-64", "hostname": "\\udc80"}', "lone surrogate"),
        ('{"deviceType": "raspberrypi4-64", "\\ud800x": 1}', "lone surrogate"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nests deeper"),
        ('{"deviceType": "raspberrypi4-64", "x": ' + "[" * 40 + "]" * 40 + "}", "nests deeper"),
    ],
    ids=["surrogate value", "surrogate key", "nested past the parser", "nested 40 deep"],
)
def test_a_malformed_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, rule: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    error = _error_of(capsys, "config", "generate", "--config", str(path))
    assert error["details"]["field"] == "config"
    assert rule in error["details"]["rule"]
