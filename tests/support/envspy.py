"""A stand-in tool on PATH that saves the environment it was started with, for tests of what
Flasher passes to the programs it starts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def environment_spy(folder: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a `name` tool first on PATH that writes its environment to the returned file (whole,
    once it exits) and succeeds."""
    seen = folder / f"{name}.environment"
    tool = folder / name
    tool.write_text(f"#!/bin/sh\nenv > {seen}.part && mv {seen}.part {seen}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return seen
