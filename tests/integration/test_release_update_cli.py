"""`flasher release-update` and `balena-release-update`: JSON on stdout, ERROR lines, exit codes,
progress on stderr, against the sandbox (and a scripted API for the login case)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flasher.balena.session import BalenaSession
from flasher.cli import release_update_cmds
from flasher.cli.main import main as flasher_main
from flasher.errors import ApiError, AuthError, CatalogError, ReleaseNotFound
from flasher.models import Secret
from flasher.release_update import get_update_info
from flasher.sandbox.server import SandboxServer
from tests.support.fakeapi import Answer, FakeApi

REPO = Path(__file__).resolve().parents[2]
KEYS = [
    "originates_from__release",
    "produces__release",
    "is_produced_by__service_update",
    "overall_status",
    "estimated_total_payload_size",
]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer.start(delta_build_s=3600) as server:
        yield server


def run_against(
    server: SandboxServer, argv: list[str], *, poll_interval_s: float = 0.05
) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    opened: list[BalenaSession] = []

    def session() -> BalenaSession:
        opened.append(BalenaSession(server.url, Secret("test-token")))
        return opened[0]

    code = release_update_cmds.run(
        argv,
        session=session,
        prog="flasher release-update",
        stdout=stdout,
        stderr=stderr,
        with_delta_url=True,
        delta_at_api_url=True,
        poll_interval_s=poll_interval_s,
    )
    for each in opened:
        each.close()
    return code, stdout.getvalue(), stderr.getvalue()


def test_the_update_is_printed_as_two_space_indented_json_in_the_originals_key_order(
    sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = flasher_main(
        ["--sandbox", "release-update", "--from-release", "2100001", "--to-release", "2100002"]
    )
    out = capsys.readouterr().out
    with BalenaSession(sandbox.url, Secret("test-token")) as session:
        expected = get_update_info(2100001, 2100002, session=session).to_json()
    assert code == 0
    assert out == json.dumps(expected, indent=2) + "\n"
    assert list(json.loads(out)) == KEYS
    assert out.startswith('{\n  "originates_from__release": {\n    "id": 2100001,\n')


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--from-release", "c0ffee", "--to-release", "2100001"],
            "Release is ambiguous: There are multiple releases matching the release hash 'c0ffee'",
        ),
        (
            ["--from-release", "2100001", "--to-release", "2100101"],
            "Source and target release must be from the same application",
        ),
        (["--from-release", "999", "--to-release", "2100001"], "Release not found: 999"),
        (["--from-release", "deadbeef", "--to-release", "2100001"], "Release not found: deadbeef"),
        (["--from-release", "2100001", "--to-release", "2100008"], "Image not found: 2200051"),
        (["--from-release", "2100001"], "Must specify both a source and a target release"),
        (
            ["--from-release", "2100001", "--to-release", "0900"],
            "Invalid value for --to-release option: 0900",
        ),
        (["--from-release", "1", "--to-release", "2", "--wait", "now"], "invalid option: now"),
    ],
)
def test_failures_are_one_error_line_and_exit_code_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = flasher_main(["--sandbox", "release-update", *argv])
    captured = capsys.readouterr()
    assert (code, captured.out, captured.err) == (1, "", f"ERROR: {message}\n")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_goes_to_stdout_with_exit_code_0(
    capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    code = flasher_main(["release-update", "--from-release", flag])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Usage: flasher release-update [options]\n")
    assert "--timeout N   The maximum time in seconds to wait. Implies --wait." in out


@pytest.mark.parametrize("flag", ["--version", "-v"])
def test_version_is_the_originals(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    assert flasher_main(["release-update", flag]) == 0
    assert capsys.readouterr().out == "0.1.0\n"


def test_prepare_prints_the_originals_progress_and_the_snapshot(sandbox: SandboxServer) -> None:
    code, out, err = run_against(
        sandbox, ["--from-release", "2100002", "--to-release", "2100003", "--prepare"]
    )
    assert code == 0
    assert err.splitlines() == [
        "[DEBUG] Preparing update...",
        "[DEBUG] Triggering delta between images 2200012 and 2200022",
        "[DEBUG] Triggering delta between images 2200013 and 2200023",
    ]
    assert json.loads(out)["overall_status"] == "pending"


def test_timeout_is_an_error_line_after_the_progress(sandbox: SandboxServer) -> None:
    code, out, err = run_against(
        sandbox, ["--from-release", "2100003", "--to-release", "2100004", "--timeout", "0"]
    )
    assert (code, out) == (1, "")
    assert err.splitlines()[-2:] == [
        "[DEBUG] Waiting for update to become ready...",
        "ERROR: timeout",
    ]


def test_delta_server_errors_are_request_errors(sandbox: SandboxServer) -> None:
    code, _out, err = run_against(
        sandbox, ["--from-release", "2100002", "--to-release", "2100004", "--prepare"]
    )
    assert code == 1
    assert err.splitlines()[-1] == (
        "ERROR: Request error: Failed to generate delta: source image layers are missing"
    )


def test_wait_in_the_sandbox_finishes_in_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--from-release", "2100002", "--to-release", "2100003", "--wait"]
    code = flasher_main(["--sandbox", "release-update", *argv])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["overall_status"] == "ready"
    assert "[DEBUG] The update is not ready yet; will repoll in 1 seconds..." in captured.err


def test_balena_release_update_command_uses_the_environments_api_and_delta_server(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BALENARC_API_URL", sandbox.url)
    monkeypatch.setenv("BALENA_API_KEY", "key")
    monkeypatch.setenv("BALENARC_DELTA_URL", sandbox.url)
    code = release_update_cmds.main(
        ["--from-release", "2100002", "--to-release", "2100003", "--prepare"]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out)["produces__release"]["id"] == 2100003
    assert "[DEBUG] Triggering delta between images 2200012 and 2200022" in captured.err


def test_balena_release_update_command_has_no_delta_url_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = release_update_cmds.main(["--delta-url", "http://127.0.0.1:9"])
    assert (code, capsys.readouterr().err) == (1, "ERROR: invalid option: --delta-url\n")


def test_without_a_login_the_api_refusal_reads_you_have_to_log_in(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FakeApi() as api:
        api.reply("GET", "/v7/release(1)", Answer(401, "Unauthorized"))
        for name in ("BALENA_API_KEY", "BALENA_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("BALENARC_DATA_DIRECTORY", str(tmp_path))
        monkeypatch.setenv("FLASHER_API_URL", api.url)
        code = release_update_cmds.main(["--from-release", "1", "--to-release", "2"])
        assert "authorization" not in api.hits("/v7/release(1)")[0].headers
    assert (code, capsys.readouterr().err) == (1, "ERROR: You have to log in\n")


@pytest.mark.parametrize(
    ("error", "authenticated", "message"),
    [
        (
            AuthError("refused", status=401, server_message="Unauthorized"),
            False,
            "You have to log in",
        ),
        (
            AuthError("refused", status=401, server_message="Unauthorized"),
            True,
            "Request error: Unauthorized",
        ),
        (ApiError("failed", status=500, server_message="boom"), True, "Request error: boom"),
        (ApiError("Cannot reach the balena API."), True, "Cannot reach the balena API."),
        (
            ApiError("failed", status=500, server_message=""),
            True,
            "Request error: The request was unsuccessful",
        ),
        (ReleaseNotFound(5), True, "Release not found: 5"),
        (CatalogError("Not found", status=404, server_message="nope"), True, "Request error: nope"),
    ],
)
def test_api_failures_are_worded_as_the_original_words_them(
    error: Exception, authenticated: bool, message: str
) -> None:
    assert isinstance(error, CatalogError | ReleaseNotFound)
    assert release_update_cmds.original_message(error, authenticated=authenticated) == message


def test_python_dash_m_runs_the_balena_release_update_command() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "flasher.cli.release_update_cmds", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "0.1.0\n")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_spinner_between_checks_and_plain_output_none() -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    release_update_cmds.Progress(terminal, spinner=True).sleep(0.25)
    release_update_cmds.Progress(pipe, spinner=False).sleep(0.01)
    assert "next check in" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\x1b[2K")  # the spinner line is cleared after
    assert pipe.getvalue() == ""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--from-release", "999", "--to-release", "2100001"], "release_not_found"),
        (["--bogus"], "invalid_config"),
    ],
)
def test_flashers_json_mode_reports_failures_with_their_code(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: str
) -> None:
    assert flasher_main(["--sandbox", "--json", "release-update", *argv]) == 1
    event = json.loads(capsys.readouterr().out)
    assert (event["event"], event["code"]) == ("error", code)
