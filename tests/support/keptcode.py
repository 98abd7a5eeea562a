"""A process's kept dataclass code (flasher.dataclass_code) as a new process starts with it."""

from __future__ import annotations

import dataclasses

from flasher import dataclass_code


def forget_kept_code() -> None:
    """Nothing kept in memory, nothing noted, and `dataclasses` executing as it does unhooked."""
    vars(dataclasses).pop("exec", None)
    dataclass_code._kept.clear()
    dataclass_code._new.clear()
