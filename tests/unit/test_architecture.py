"""Import rules: the core never imports Qt or the faces; the root helper stays small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flasher"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _package_of(rel: str) -> list[str]:
    """The package a module at `rel` (e.g. "flasher/bench/station.py") is in, as parts (for a
    package's __init__.py, that package)."""
    return rel.removesuffix(".py").split("/")[:-1]


def _module_imports(source: str, rel: str) -> set[str]:
    """Every module the code imports, relative imports resolved against `rel`'s package;
    `from . import x` counts both the package and `package.x` (x may be a submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module or "")
                continue
            package = _package_of(rel)
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.add(".".join([*base, node.module]))
            else:
                found.add(".".join(base))
                found.update(".".join([*base, alias.name]) for alias in node.names)
    return found


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _imports(path: Path) -> set[str]:
    return _module_imports(path.read_text(encoding="utf-8"), _relative(path))


@pytest.mark.parametrize(
    ("source", "rel", "expected"),
    [
        ("import PySide6.QtCore", "flasher/x.py", {"PySide6.QtCore"}),
        ("from flasher.gui import app", "flasher/x.py", {"flasher.gui"}),
        ("from .gui import app", "flasher/x.py", {"flasher.gui"}),
        ("from ..cli.main import run", "flasher/bench/x.py", {"flasher.cli.main"}),
        ("from . import gui", "flasher/__init__.py", {"flasher", "flasher.gui"}),
        ("from .. import cli", "flasher/image/fat/x.py", {"flasher.image", "flasher.image.cli"}),
        ("from .table import Fat", "flasher/image/fat/__init__.py", {"flasher.image.fat.table"}),
    ],
)
def test_relative_imports_are_read_as_the_modules_they_name(
    source: str, rel: str, expected: set[str]
) -> None:
    assert _module_imports(source, rel) == expected


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_core_never_imports_qt_or_faces(path: Path) -> None:
    rel = _relative(path)
    if rel.startswith(("flasher/gui/", "flasher/cli/")) or rel == "flasher/__main__.py":
        return
    bad = {m for m in _imports(path) if m.split(".")[0] == "PySide6"}
    bad |= {m for m in _imports(path) if m.startswith(("flasher.gui", "flasher.cli"))}
    assert not bad, f"{rel} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_only_gui_imports_pyside(path: Path) -> None:
    rel = _relative(path)
    if rel.startswith("flasher/gui/"):
        return
    assert not {m for m in _imports(path) if m.startswith("PySide6")}, rel


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_every_module_says_what_it_does(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and doc.strip(), f"{_relative(path)} has no module docstring"


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_no_module_grows_past_the_size_limit(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 550, f"{_relative(path)} has {lines} lines; split it"


def _printed_by(code: str) -> str:
    """What `code` prints in a fresh interpreter (a module list: nothing loaded before it)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_writer_helper_loads_only_stdlib_and_writer_modules() -> None:
    """Importing the root helper must not drag in requests, the pipeline, the API client or Qt."""
    helper = PACKAGE / "writer" / "helper.py"
    if not helper.exists():
        pytest.skip("the writer helper is not part of this build")
    code = (
        "import sys, flasher.writer.helper\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('requests', 'urllib3', 'PySide6', 'semver', 'pyudev', 'psutil', 'isal', 'zstandard')"
        " or m.startswith(('flasher.balena', 'flasher.pipeline', 'flasher.sandbox', "
        "'flasher.image', 'flasher.gui', 'flasher.cli', 'flasher.download', 'flasher.cache')))\n"
        "print(','.join(bad))\n"
    )
    out = _printed_by(code)
    assert out == "", f"the writer helper imports {out}"


def test_the_flash_machinery_loads_no_decoder_until_a_format_needs_one() -> None:
    """A raw image's flash starts without isal, zstandard or uuid (GPT only): each decoder's
    library loads in the function that decodes its format."""
    code = (
        "import sys\n"
        "import flasher.cli.flash_cmds, flasher.pipeline, flasher.image.earlymap, "
        "flasher.image.sparse, flasher.writer.client, flasher.cache, flasher.provider\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('isal', 'zstandard', 'uuid'))))\n"
    )
    out = _printed_by(code)
    assert out == "", f"loaded by the flash machinery: {out}"


def test_flashing_a_local_file_does_not_load_the_network_stack() -> None:
    """`flasher flash card.img …` starts fast: requests and the API client load only when an
    image is to be downloaded."""
    code = (
        "import sys\n"
        "from flasher.cli.main import build_parser\n"
        "build_parser(['flash', 'x.img', '--target', 'y.img'])\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'requests'"
        " or m.startswith('flasher.balena.os_model') or m.startswith('flasher.sandbox'))))\n"
    )
    out = _printed_by(code)
    assert out == "", f"loaded at start-up: {out}"
