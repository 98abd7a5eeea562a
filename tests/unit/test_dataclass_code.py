"""The code dataclasses generate, kept from one run to the next (flasher.dataclass_code)."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import marshal
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from flasher import dataclass_code
from tests.support.keptcode import forget_kept_code


@pytest.fixture
def kept_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kept code's file, in the test's own folder (a `__pycache__` not made yet), written
    as bytecode is (whatever PYTHONDONTWRITEBYTECODE says where the tests run)."""
    path = tmp_path / "__pycache__" / "kept.marshal"
    monkeypatch.setattr(dataclass_code, "cache_path", lambda: str(path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    return path


def _make() -> type:
    @dataclass(frozen=True)
    class Record:
        LIMIT: ClassVar[int] = 3
        name: str
        size: int = 0
        tags: tuple[str, ...] = field(default_factory=tuple)

    return Record


def _behaviour(cls: type) -> tuple[Any, ...]:
    a, b = cls("a", 1, ("x",)), cls("a", 1, ("x",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.size = 2
    return (
        repr(a),
        a == b,
        a == cls("b"),
        hash(cls("c")) == hash(cls("c")),
        cls("d").tags,
        str(inspect.signature(cls)),
        cls.__init__.__annotations__,  # types, as exec makes them: not strings
    )


def test_classes_made_from_kept_code_behave_as_compiled_ones(kept_at: Path) -> None:
    plain = _behaviour(_make())
    dataclass_code.start()  # nothing kept yet: every method compiled, and noted
    assert _behaviour(_make()) == plain
    compiled = len(dataclass_code._new)
    assert compiled >= 5  # __init__, __repr__, __eq__, __hash__, __setattr__, __delattr__
    dataclass_code.save()
    assert kept_at.read_bytes().startswith(importlib.util.MAGIC_NUMBER)

    forget_kept_code()
    dataclass_code.start()
    assert len(dataclass_code._kept) == compiled
    assert _behaviour(_make()) == plain
    assert dataclass_code._new == {}  # nothing compiled: every text was kept


def test_a_texts_kept_code_is_what_runs(kept_at: Path) -> None:
    dataclass_code.start()
    _make()
    texts = dict(dataclass_code._new)
    (repr_text,) = [t for t in texts if " def __repr__(" in t]
    texts[repr_text] = compile(
        "def __create_fn__(__dataclass_builtins_object__=None):\n"
        " def __repr__(self):\n  return 'kept'\n return __repr__",
        "<string>",
        "exec",
    )
    kept_at.parent.mkdir()
    kept_at.write_bytes(importlib.util.MAGIC_NUMBER + marshal.dumps(texts))

    forget_kept_code()
    dataclass_code.start()
    assert repr(_make()("a")) == "kept"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not the header",
        importlib.util.MAGIC_NUMBER + b"\xff\x00 truncated",
        importlib.util.MAGIC_NUMBER + marshal.dumps(["a list"]),
        importlib.util.MAGIC_NUMBER + marshal.dumps({"a text": "no code", 1: b"bytes"}),
        b"\x00\x00\r\n" + marshal.dumps({}),  # another interpreter's header
    ],
    ids=["empty", "no-header", "truncated", "no-table", "no-code", "other-interpreter"],
)
def test_a_file_holding_anything_else_is_ignored(kept_at: Path, content: bytes) -> None:
    kept_at.parent.mkdir()
    kept_at.write_bytes(content)
    dataclass_code.start()
    assert dataclass_code._kept == {}
    assert repr(_make()("a")).endswith("Record(name='a', size=0, tags=())")


def test_nothing_is_written_when_bytecode_is_not(
    kept_at: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    dataclass_code.start()
    _make()
    dataclass_code.save()
    assert not kept_at.exists()


def test_a_run_that_compiled_nothing_new_leaves_the_file_alone(kept_at: Path) -> None:
    dataclass_code.start()
    _make()
    dataclass_code.save()
    os.utime(kept_at, ns=(0, 0))
    forget_kept_code()
    dataclass_code.start()
    _make()
    dataclass_code.save()
    assert kept_at.stat().st_mtime_ns == 0


def test_too_many_texts_are_kept_as_this_runs_alone(
    kept_at: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = {f"def gone{n}(): pass": compile("pass", "<string>", "exec") for n in range(3)}
    kept_at.parent.mkdir()
    kept_at.write_bytes(importlib.util.MAGIC_NUMBER + marshal.dumps(stale))
    monkeypatch.setattr(dataclass_code, "MOST_TEXTS", 4)
    dataclass_code.start()
    _make()
    new = set(dataclass_code._new)
    dataclass_code.save()
    table = marshal.loads(kept_at.read_bytes()[len(importlib.util.MAGIC_NUMBER) :])
    assert set(table) == new


def test_a_folder_that_cannot_be_written_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setattr(dataclass_code, "cache_path", lambda: str(blocker / "kept.marshal"))
    dataclass_code.start()
    _make()
    dataclass_code.save()  # no error: nothing kept, as Python does with bytecode
    assert blocker.read_text() == ""


def test_a_link_planted_at_the_new_files_name_is_not_followed(kept_at: Path) -> None:
    victim = kept_at.parent.parent / "victim"
    victim.write_bytes(b"untouched")
    kept_at.parent.mkdir()
    (kept_at.parent / f"{kept_at.name}.{os.getpid()}").symlink_to(victim)
    dataclass_code.start()
    _make()
    dataclass_code.save()
    assert victim.read_bytes() == b"untouched"
    assert not kept_at.exists()


def test_the_file_lives_beside_the_packages_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real cache_path, not the one tests/conftest.py sets
    path = dataclass_code.cache_path()
    assert path is not None
    package = Path(dataclass_code.__file__).parent
    expected = Path(importlib.util.cache_from_source(str(package / "_dc.py")))
    assert Path(path) == expected.with_suffix(".marshal")
    assert sys.implementation.cache_tag in Path(path).name


def test_a_folder_others_may_write_is_neither_read_nor_written(kept_at: Path) -> None:
    dataclass_code.start()
    _make()
    dataclass_code.save()
    kept = kept_at.read_bytes()
    kept_at.parent.chmod(0o777)
    forget_kept_code()
    dataclass_code.start()
    assert dataclass_code._kept == {}  # not taken from a folder anyone may write
    _make()
    kept_at.unlink()
    dataclass_code.save()
    assert not kept_at.exists()
    assert kept  # what the trusted folder held before


def test_a_linked_folder_or_file_is_not_followed(kept_at: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    kept_at.parent.symlink_to(real, target_is_directory=True)
    dataclass_code.start()
    _make()
    dataclass_code.save()
    assert list(real.iterdir()) == []  # nothing written through the linked folder

    kept_at.parent.unlink()
    kept_at.parent.mkdir()
    source = tmp_path / "kept elsewhere"
    dataclass_code.save()
    kept_at.rename(source)
    kept_at.symlink_to(source)
    forget_kept_code()
    dataclass_code.start()
    assert dataclass_code._kept == {}  # the file is a link: not read
