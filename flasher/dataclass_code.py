"""Keeps the code `dataclasses` generates for flasher's classes from one run to the next.

Python 3.11 builds every method a dataclass gets (`__init__`, `__repr__`, `__eq__`, and for a
frozen one `__hash__`, `__setattr__` and `__delattr__`) from source text, compiling each one
each time the class is created: for the ~70 classes a flash loads that is ~400 compiles, 25 of
the ~60 ms its modules take to load, on the path to its first write. The text of each method is
the same from run to run, so its compiled code can be kept, as Python keeps a module's
bytecode: `start` reads what earlier runs kept and has `dataclasses` execute the kept code for
every text it has seen before (any other text is compiled as `exec` would compile it, and
noted); `save` keeps what this run compiled anew.

The file lives where Python keeps this package's bytecode (`importlib.util.cache_from_source`),
is used only by the interpreter that wrote it (its header is `importlib.util.MAGIC_NUMBER`, its
name carries the cache tag and the optimization level), and is written as Python writes
bytecode: never with PYTHONDONTWRITEBYTECODE, only where the process may write, through a new
file renamed into place. It is trusted as the package's bytecode beside it is (whoever can
change it can change the modules themselves), and only in a folder that is no link, belongs to
this process's user or to root, and no one else may write: a root process (the writer helper)
never takes code from, or writes into, another user's folder, nor follows a link to one. A
file that cannot be read, or holds anything but texts and their code, is ignored.

Imports only the standard library.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.util
import marshal
import os
import stat
import sys
from types import CodeType
from typing import Any

# More texts than flasher's classes make (~1,060 for all its modules) means the file holds the
# methods of classes that are gone: it is then written with this run's new texts alone.
MOST_TEXTS = 4096

_kept: dict[str, CodeType] = {}
_new: dict[str, CodeType] = {}


def cache_path() -> str | None:
    """Where the kept code lives; None where this interpreter keeps no bytecode."""
    try:
        beside = importlib.util.cache_from_source(os.path.join(os.path.dirname(__file__), "_dc.py"))
    except NotImplementedError:  # sys.implementation.cache_tag is None
        return None
    return os.path.splitext(beside)[0] + ".marshal"


def _compiled(text: str) -> CodeType:
    code = _kept.get(text)
    if code is None:
        # As exec compiles a text: no flags inherited from this module (its `from __future__
        # import annotations` would turn the generated methods' annotations into strings).
        code = _new[text] = compile(text, "<string>", "exec", dont_inherit=True)
    return code


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    """`exec` for the dataclasses module: a text's kept code when there is some."""
    builtins.exec(_compiled(source) if isinstance(source, str) else source, globals, locals)


def _open_folder(folder: str) -> int | None:
    """`folder` opened, if it is a folder (not a link) of this process's user or root that no
    one else may write; its files are then reached through the descriptor, so the folder
    checked is the folder used."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid in (os.geteuid(), 0) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return fd
    os.close(fd)
    return None


def _read(path: str) -> dict[str, CodeType]:
    folder = _open_folder(os.path.dirname(path))
    if folder is None:
        return {}
    try:
        fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    finally:
        os.close(folder)
    magic = importlib.util.MAGIC_NUMBER
    if not data.startswith(magic):
        return {}
    try:
        table = marshal.loads(data[len(magic) :])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if isinstance(k, str) and isinstance(v, CodeType)}


def start() -> None:
    """From now on, dataclasses this process creates take the code kept by earlier runs."""
    import dataclasses  # here, not at the top: the entry starts its preloading first

    path = cache_path()
    if path is not None:
        _kept.update(_read(path))
    dataclasses.exec = _exec  # type: ignore[attr-defined]


def save() -> None:
    """Keep what this run compiled that the file did not hold (if it may be written)."""
    path = cache_path()
    if not _new or path is None or sys.dont_write_bytecode:
        return
    table = {**_kept, **_new}
    if len(table) > MOST_TEXTS:
        table = dict(_new)
    data = importlib.util.MAGIC_NUMBER + marshal.dumps(table)
    name = os.path.basename(path)
    temporary = f"{name}.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError:
        return  # a folder this process may not make: nothing is kept, as with bytecode
    folder = _open_folder(os.path.dirname(path))
    if folder is None:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, 0o644, dir_fd=folder)
    except OSError:  # not writable, or a name taken (never followed)
        os.close(folder)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        return  # a full disk: nothing is kept, as with bytecode
    finally:
        os.close(folder)
    _kept.update(_new)
    _new.clear()
