"""Reading a command's code files ahead: which files, only regular files reached without a link,
and the flash's list kept to modules that exist."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flasher import preload
from flasher.cli import entry

ROOT = Path(__file__).resolve().parents[2]


def test_a_flasher_module_is_looked_for_beside_this_package() -> None:
    roots = preload.Roots()
    tag = sys.implementation.cache_tag
    files = preload.candidate_files("flasher.image.sparse", roots)
    assert files[0] == str(ROOT / "flasher" / "image" / "__pycache__" / f"sparse.{tag}.pyc")
    assert files[1] == str(
        ROOT / "flasher" / "image" / "sparse" / "__pycache__" / f"__init__.{tag}.pyc"
    )
    assert len(files) == 2  # no extension modules of its own


def test_a_standard_library_module_may_be_an_extension_in_lib_dynload() -> None:
    roots = preload.Roots()
    files = preload.candidate_files("_hashlib", roots)
    assert files[0].startswith(os.path.dirname(os.__file__))
    assert files[-1].startswith(os.path.join(os.path.dirname(os.__file__), "lib-dynload"))
    found = [f for f in preload.candidate_files("json", roots) if os.path.isfile(f)]
    assert found == [json.__cached__]


def test_a_module_found_in_no_folder_has_no_files() -> None:
    assert preload.candidate_files("no_such_package_here.mod", preload.Roots()) == []


def test_only_regular_files_reached_without_a_link_are_advised(tmp_path: Path) -> None:
    regular = tmp_path / "mod.pyc"
    regular.write_bytes(b"x" * 8192)
    link = tmp_path / "link.pyc"
    link.symlink_to(regular)
    fifo = tmp_path / "fifo.pyc"
    os.mkfifo(fifo)
    assert preload.advise(str(regular)) is True
    assert preload.advise(str(link)) is False  # O_NOFOLLOW: the link is never followed
    assert preload.advise(str(fifo)) is False  # opened without blocking, then left alone
    assert preload.advise(str(tmp_path / "missing.pyc")) is False
    assert preload.advise(str(tmp_path)) is False


def test_a_device_planted_as_a_module_is_never_advised(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    node = tmp_path / "dev.pyc"
    os.mknod(node, 0o600 | 0o020000, os.makedev(1, 3))  # a character device (/dev/null's)
    assert preload.advise(str(node)) is False


def test_preload_advises_one_file_per_module_not_yet_loaded() -> None:
    roots = preload.Roots()
    absent = [
        m for m in ("json.tool", "tabnanny", "flasher.sandbox.images") if m not in sys.modules
    ]
    names = [*absent, "os", "no_such_package_here"]
    assert preload.preload(names, roots) == len(absent)  # os is loaded; the last has no file


def test_the_flash_list_names_only_modules_that_exist() -> None:
    names = preload.module_names("flash")
    assert len(names) > 50 and len(set(names)) == len(names)
    assert "flasher.writer.protocol" in names and "flasher.image.sparse" in names
    ours = [n for n in names if n.split(".")[0] == "flasher"]
    missing = [n for n in ours if importlib.util.find_spec(n) is None]
    assert missing == []
    stdlib = [n for n in names if n.split(".")[0] in sys.stdlib_module_names]
    assert len(stdlib) > 20


def test_a_command_without_a_list_preloads_nothing() -> None:
    assert preload.module_names("device-types") == []


def test_the_entry_preloads_for_a_command_not_for_help(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    monkeypatch.setattr(entry, "start_preload", started.append)
    monkeypatch.setattr("flasher.cli.main.main", lambda: 0)
    for argv, want in (
        (["--json", "flash", "x.img", "--target", "y"], ["flash"]),
        (["--api-url", "flash", "drives"], ["drives"]),  # the option's value is no command
        (["flash", "--help"], []),
        (["--version"], []),
    ):
        started.clear()
        monkeypatch.setattr(sys, "argv", ["flasher", *argv])
        assert entry.main() == 0
        assert started == want, argv


def test_start_preload_reads_on_a_thread_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str]]] = []
    done = threading.Event()

    def record(names: list[str], roots: preload.Roots) -> int:
        seen.append((threading.current_thread().name, names))
        done.set()
        return 0

    monkeypatch.setattr(preload, "preload", record)
    preload.start_preload("flash")
    assert done.wait(10)
    assert seen == [("flasher-preload", preload.module_names("flash"))]


def test_the_flash_command_still_runs_with_the_preload(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flasher", "flash", "--target", str(tmp_path / "x.img")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode != 0 and "Name an image to flash" in done.stderr
