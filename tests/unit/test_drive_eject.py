"""Powering off verified cards (flasher.drives.eject, shared by the desktop app and the bench):
which cards are powered off (verified removable drives only, never files or loop devices) and
the tool used. udisks cannot power off anything here, so a stand-in `udisksctl` on PATH answers
like the real one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flasher.drives.eject import eject, eject_command, ejectable
from flasher.errors import WriteFailed
from flasher.models import Drive
from flasher.writer.job import TargetResult
from tests.support.envspy import environment_spy

USB = Drive("/dev/sdx", 32 * 10**9, bus="usb")
LOOP = Drive("/dev/loop9", 32 * 10**9, bus="loop")
FILE = Drive("/tmp/card.img", 0, is_file=True)
DRIVES = {d.path: d for d in (USB, LOOP, FILE)}


@pytest.mark.parametrize(
    ("result", "ejected"),
    [
        (TargetResult("/dev/sdx", True, verified=True), ["/dev/sdx"]),
        (TargetResult("/dev/sdx", True, verified=False), []),
        (TargetResult("/dev/sdx", False, error=WriteFailed("I/O error")), []),
        (TargetResult("/dev/loop9", True, verified=True), []),
        (TargetResult("/tmp/card.img", True, verified=True), []),
    ],
    ids=["verified-usb", "unverified", "failed", "loop", "file"],
)
def test_only_verified_removable_drives_are_ejected(
    result: TargetResult, ejected: list[str]
) -> None:
    assert ejectable(DRIVES, [result]) == ejected


@pytest.fixture
def fake_udisksctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Powers off /dev/sdx and refuses anything else, as udisksctl does for a busy drive."""
    tool = tmp_path / "udisksctl"
    log = tmp_path / "calls"
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$4" = /dev/sdx ]\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return log


def test_udisksctl_powers_the_card_off(fake_udisksctl: Path) -> None:
    assert eject_command("/dev/sdx") == [
        "udisksctl",
        "power-off",
        "--no-user-interaction",
        "-b",
        "/dev/sdx",
    ]


def test_only_the_cards_that_powered_off_are_reported(fake_udisksctl: Path) -> None:
    assert eject(["/dev/sdx", "/dev/sdy"]) == ["/dev/sdx"]
    assert fake_udisksctl.read_text().splitlines() == [
        "power-off --no-user-interaction -b /dev/sdx",
        "power-off --no-user-interaction -b /dev/sdy",
    ]


def test_the_tool_never_gets_the_callers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = environment_spy(tmp_path, "udisksctl", monkeypatch)
    secrets = {"wifi-k3y-1", "api-k3y-2", "db-pa55-3"}
    monkeypatch.setenv("FLASHER_WIFI_KEY", "wifi-k3y-1")
    monkeypatch.setenv("BALENA_API_KEY", "api-k3y-2")
    monkeypatch.setenv("FLASHER_BENCH_REPORT_DB", "postgresql://u:db-pa55-3@host/cards")
    assert eject(["/dev/sdx"]) == ["/dev/sdx"]
    environment = seen.read_text()
    assert f"PATH={tmp_path}" in environment  # the caller's environment, otherwise
    assert not [value for value in secrets if value in environment]
