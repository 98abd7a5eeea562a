"""Flasher's package data (the sandbox catalog, the app icon), read through importlib.resources.

The files live in the package (flasher/data/, installed as package data), so a checkout, a
wheel, `pip install --user` or `--prefix`, and a zipapp all find them the same way. The desktop
file, AppStream metainfo and theme icons in resources/ are for desktops (pyproject's
data-files); the code never reads them. Imports only the standard library.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def resource(name: str) -> Traversable:
    """One data file, e.g. `resource("sandbox-catalog.json")` or `resource("icons/x.svg")`;
    FileNotFoundError when the build left it out."""
    ref = files("flasher").joinpath("data", *name.split("/"))
    if not ref.is_file():
        raise FileNotFoundError(f"Flasher's package data {name!r} is missing")
    return ref
