"""Eject when verified, in the desktop app: a file target is never powered off and the window
does not say it can be removed. udisks cannot power off anything here, so a stand-in
`udisksctl` on PATH answers like the real one (flasher.drives.eject is tested in
tests/unit/test_drive_eject.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.gui.conftest import MakeApp


@pytest.fixture
def fake_udisksctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Records every call, so a test can show it was never made."""
    tool = tmp_path / "udisksctl"
    log = tmp_path / "calls"
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return log


def test_a_file_target_is_never_ejected(
    make_app: MakeApp, tmp_path: Path, fake_udisksctl: Path
) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    assert app.window.targets_page.eject_check.isChecked()
    app.add_file_target(tmp_path / "card.img")
    app.flash()
    assert app.controller.ejected == []
    assert not fake_udisksctl.exists()
    assert "You can remove" not in app.window.progress_page.banner.message.text()
