"""Locate the repository's `resources/` directory (catalog, icons, desktop files, policies).

In a checkout or an editable install it sits next to the `flasher` package; an installed wheel
puts it under `<sys.prefix>/share/flasher/resources` (pyproject's data-files). Imports only the
standard library.
"""

from __future__ import annotations

import sys
from pathlib import Path

_CHECKOUT_DIR = Path(__file__).resolve().parent.parent / "resources"
_INSTALLED_DIR = Path(sys.prefix) / "share" / "flasher" / "resources"


def resources_dir() -> Path:
    """The directory holding Flasher's resource files; FileNotFoundError when neither exists."""
    for candidate in (_CHECKOUT_DIR, _INSTALLED_DIR):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"Flasher's resources directory is missing (looked in {_CHECKOUT_DIR} and {_INSTALLED_DIR})"
    )


def resource_path(name: str) -> Path:
    """The path of one resource file, e.g. `resource_path("sandbox-catalog.json")`."""
    path = resources_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"Flasher resource {name!r} is missing from {path.parent}")
    return path
