"""Start-up of the `flasher` command: help is built without loading the commands' machinery."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def test_the_entry_runs_the_command_on_kept_dataclass_code_and_keeps_what_is_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command's classes take the code earlier runs kept (flasher.dataclass_code); what the
    run compiled anew is kept once the command has ended, even one that exits (--version)."""
    import dataclasses

    from flasher import dataclass_code
    from flasher.cli import entry
    from flasher.cli import main as cli_main

    seen: list[str] = []

    def run() -> int:
        seen.append("kept" if vars(dataclasses).get("exec") is dataclass_code._exec else "not")
        raise SystemExit(0)

    monkeypatch.setattr(cli_main, "main", run)
    monkeypatch.setattr(dataclass_code, "save", lambda: seen.append("saved"))
    monkeypatch.setattr(sys, "argv", ["flasher", "--version"])
    with pytest.raises(SystemExit):
        entry.main()
    assert seen == ["kept", "saved"]
    gc.unfreeze()


def test_python_dash_m_flasher_exits_with_mains_code() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flasher", "flash"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2  # a usage error: no --target
    assert "--target" in done.stderr


@pytest.fixture
def paused_collector() -> Iterator[None]:
    """The collector paused as `flasher` pauses it; afterwards running and unfrozen again."""
    from flasher.cli import entry

    entry._pause_collector()
    try:
        yield
    finally:
        entry._collector_paused = False
        gc.enable()
        gc.unfreeze()


def test_the_collector_is_paused_while_the_command_loads_and_runs_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flasher.cli import entry
    from flasher.cli import main as cli_main

    seen: list[bool] = []

    def run() -> int:
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(cli_main, "main", run)
    monkeypatch.setattr(sys, "argv", ["flasher", "--version"])
    assert gc.isenabled()
    try:
        assert entry.main() == 0
        assert seen == [False]
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_handler_runs_with_the_collector_running_and_what_loaded_frozen(
    monkeypatch: pytest.MonkeyPatch, paused_collector: None
) -> None:
    from flasher.cli import drives_cmds
    from flasher.cli import main as cli_main

    seen: list[tuple[bool, int]] = []

    def handler(_args: object, _ctx: object) -> int:
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return 0

    monkeypatch.setattr(drives_cmds, "cmd_drives", handler)
    assert not gc.isenabled()
    assert cli_main.main(["drives"]) == 0
    assert len(seen) == 1
    assert seen[0][0] is True
    assert seen[0][1] > 0


def test_flash_resumes_the_collector_once_its_machinery_has_loaded(
    monkeypatch: pytest.MonkeyPatch, paused_collector: None, tmp_path: Path
) -> None:
    """`flash` loads its machinery in its handler, so the collector stays paused there and
    runs again before the job does."""
    import flasher.pipeline
    from flasher.cli import flash_cmds
    from flasher.cli import main as cli_main
    from flasher.errors import FlasherError

    states: dict[str, bool] = {}
    early_map = flash_cmds._early_map

    def record_early_map(args: Any) -> Any:
        states["handler"] = gc.isenabled()
        return early_map(args)

    def record_job(*_args: Any, **_kwargs: Any) -> Any:
        states["job"] = gc.isenabled()
        raise FlasherError("stopped here")

    monkeypatch.setattr(flash_cmds, "_early_map", record_early_map)
    monkeypatch.setattr(flasher.pipeline, "run_flash", record_job)
    image = tmp_path / "in.img"
    image.write_bytes(b"\0" * 4096)
    assert cli_main.main(["flash", str(image), "--target", str(tmp_path / "out.img")]) == 1
    assert states == {"handler": False, "job": True}


def test_the_writer_helper_loads_with_the_collector_paused_and_runs_with_it() -> None:
    code = (
        "import gc, runpy\n"
        "ns = runpy.run_module('flasher.writer.__main__', run_name='not_main')\n"
        "seen = []\n"
        "gc.callbacks.append(lambda phase, info: seen.append(phase))\n"
        "main = ns['_load']()\n"
        "kept = 'exec' in vars(__import__('dataclasses'))\n"
        "print(main.__module__, gc.isenabled(), gc.get_freeze_count() > 0, kept, len(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    module, enabled, frozen, kept, passes = out.stdout.split()
    assert (module, enabled, frozen) == ("flasher.writer.helper", "True", "True")
    assert kept == "True"  # its classes take the code earlier runs kept
    assert int(passes) == 0  # no collection ran while the helper's code loaded
