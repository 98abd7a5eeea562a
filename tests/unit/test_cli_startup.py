"""Start-up of the `flasher` command: help is built without loading the commands' machinery."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from flasher.cli.main import build_parser

HEAVY = ("requests", "flasher.image", "flasher.pipeline", "flasher.writer", "flasher.balena")


def _modules_after(argv: list[str]) -> list[str]:
    code = (
        "import sys\n"
        "from flasher.cli.main import build_parser\n"
        f"build_parser({argv!r})\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("argv", [["--help"], [], ["--json"], ["bogus"]])
def test_top_level_parser_lists_the_same_commands_as_the_full_one(argv: list[str]) -> None:
    assert build_parser(argv).format_help() == build_parser(None).format_help()


def test_top_level_help_loads_no_command_module() -> None:
    loaded = _modules_after(["--help"])
    assert [m for m in loaded if m.startswith("flasher.cli.") and m.endswith("_cmds")] == []
    assert [m for m in loaded if m.startswith(HEAVY)] == []


def test_flash_help_loads_no_image_writer_or_network_module() -> None:
    loaded = _modules_after(["flash", "--help"])
    assert "flasher.cli.flash_cmds" in loaded
    assert [m for m in loaded if m.startswith(HEAVY)] == []


def test_the_command_entry_returns_mains_code_and_skips_the_last_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`flasher` and `python -m flasher` run flasher.cli.entry: main's exit code, with what is
    alive at exit frozen out of the interpreter's final garbage collection."""
    from flasher.cli import entry
    from flasher.cli import main as cli_main

    monkeypatch.setattr(cli_main, "main", lambda: 3)
    monkeypatch.setattr(sys, "argv", ["flasher", "--version"])
    gc.unfreeze()
    try:
        assert entry.main() == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_python_dash_m_flasher_exits_with_mains_code() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flasher", "flash"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2  # a usage error: no --target
    assert "--target" in done.stderr
