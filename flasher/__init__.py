"""Flasher: provision balenaOS devices. Version here; the core lives in the submodules.

Kept free of imports so that the root writer helper (flasher.writer) loads nothing it does not
need: importing `flasher` never pulls in requests, the pipeline or Qt.
"""

__version__ = "0.1.0"
