"""The flash's preload list (flasher/data/preload-flash.txt) holds every flasher module that a
flash to a card and its writer helper load: recorded again by scripts/preload_list.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevices

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.root
def test_every_flasher_module_a_flash_loads_is_on_the_list(
    loops: LoopDevices, image: BuiltImage
) -> None:
    card = loops.create(image.size_bytes)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "preload_list.py"),
            "--image",
            str(image.path),
            "--target",
            card.path,
            "--check",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
