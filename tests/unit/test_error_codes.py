"""The JSON error codes and problem values are one closed list, documented in the README; core
hints are neutral and every action has words in each face."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from flasher.cli.hints import CLI_ACTIONS, cli_error_dict, cli_hint
from flasher.error_codes import Action, ErrorCode, ProblemCode
from flasher.errors import DriveRejected, FlasherError
from flasher.gui.wording import DESKTOP_ACTIONS, desktop_hint

ROOT = Path(__file__).resolve().parents[2]
FLASHER = ROOT / "flasher"
ERROR_MODULES = (
    "flasher.errors",
    "flasher.supervisor.errors",
    "flasher.release_update.errors",
    "flasher.balena.hup",
)
# A flag (--yes, "run with -v") or a flasher command ('flasher drives'): command-line words.
CLI_WORDS = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*|\bflasher [a-z]|\b[Rr]un with -[a-z]\b")


def _error_classes() -> list[type[FlasherError]]:
    for name in ERROR_MODULES:
        importlib.import_module(name)
    found: list[type[FlasherError]] = [FlasherError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return found


def _readme_table(header: str) -> list[list[str]]:
    """The rows of the README table whose header row starts with `header`."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def test_every_error_code_is_one_class() -> None:
    codes = [cls.code for cls in _error_classes()]
    assert sorted(codes) == sorted(ErrorCode)


def test_the_readme_lists_exactly_the_error_codes_with_their_exit_codes() -> None:
    documented = {row[0]: int(row[1]) for row in _readme_table("code")}
    actual = {cls.code.value: cls.exit_code for cls in _error_classes()}
    assert documented == actual


def test_the_readme_lists_exactly_the_problem_values() -> None:
    documented = [row[0] for row in _readme_table("problem")]
    assert sorted(documented) == sorted(p.value for p in ProblemCode)


def _core_modules() -> list[Path]:
    return [
        p
        for p in sorted(FLASHER.rglob("*.py"))
        if p.relative_to(FLASHER).parts[0] not in ("cli", "gui")
    ]


def _words_for_people(tree: ast.AST) -> list[ast.Constant]:
    """The strings of every hint (a `hint=` argument, a `*hint*` name) and of every argument
    given to an error class: what a person reads when something fails."""
    error_names = {cls.__name__ for cls in _error_classes()}
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.keyword) and node.arg == "hint") or (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and "hint" in t.id.lower() for t in node.targets)
        ):
            roots.append(node.value)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in error_names:
                roots.extend([*node.args, *(k.value for k in node.keywords)])
    return [
        node
        for root in roots
        for node in ast.walk(root)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_hint_or_error_names_a_cli_flag_or_command(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [
        f"{node.lineno}: {node.value!r}"
        for node in _words_for_people(tree)
        if CLI_WORDS.search(node.value)
    ]
    assert found == []


@pytest.mark.parametrize(
    "path", sorted(FLASHER.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_problem_values_are_never_spelled_as_strings(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    spelled = [
        f"{node.lineno}: {kw.value.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "problem" and isinstance(kw.value, ast.Constant)
    ]
    assert spelled == []


@pytest.mark.parametrize("action", list(Action))
def test_every_action_has_words_in_each_face(action: Action) -> None:
    assert CLI_ACTIONS[action].endswith(".")
    assert DESKTOP_ACTIONS[action].endswith(".")
    assert not CLI_WORDS.search(DESKTOP_ACTIONS[action])


def test_the_cli_words_an_action_after_the_neutral_hint() -> None:
    err = DriveRejected(
        "A warning needs confirmation.",
        hint="The drive is large.",
        action=Action.CONFIRM_DRIVE_WARNINGS,
    )
    assert cli_hint(err) == "The drive is large. Re-run with --yes to accept these warnings."
    assert cli_error_dict(err)["hint"] == cli_hint(err)
    assert err.to_dict()["hint"] == "The drive is large."


def test_the_desktop_words_an_action_without_a_flag() -> None:
    err = FlasherError("No target.", action=Action.NAME_TARGET)
    assert desktop_hint(err) == "Choose at least one drive on the Targets page."
