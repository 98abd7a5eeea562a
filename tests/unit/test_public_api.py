"""The public API in `flasher/__init__.py`: every exported name resolves lazily to the object its
module defines, the typing imports match the export table, and importing `flasher` loads none
of it."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import flasher

INIT = Path(flasher.__file__)


def _typing_imports() -> dict[str, str]:
    """name → module of the `if TYPE_CHECKING:` block's imports."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    return {
        alias.name: node.module or ""
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_all_lists_every_export_once() -> None:
    assert len(flasher.__all__) == len(set(flasher.__all__))
    assert set(flasher.__all__) == {"__version__", *flasher._EXPORTS}


def test_typing_imports_match_the_export_table() -> None:
    assert _typing_imports() == flasher._EXPORTS


@pytest.mark.parametrize("name", sorted(flasher._EXPORTS))
def test_export_is_the_object_its_module_defines(name: str) -> None:
    module = importlib.import_module(flasher._EXPORTS[name])
    assert getattr(flasher, name) is getattr(module, name)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = flasher.no_such_thing  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "statement",
    [
        "import flasher; flasher.__version__",
        "from flasher import CancelToken, DeviceConfig, Secret",
    ],
)
def test_light_imports_load_no_network_pipeline_or_qt(statement: str) -> None:
    code = (
        f"import sys\n{statement}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'PySide6')"
        " or m.startswith(('flasher.pipeline', 'flasher.balena', 'flasher.gui')))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
