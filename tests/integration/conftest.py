"""Fixtures shared by integration tests: the bench's card-reader slots on loop devices, the
image they get and a filesystem whose writes can be held (the rig is tests/support/bench.py);
the sandbox's fake supervisors (the client helpers are tests/support/supervisor.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from flasher.sandbox.devices import SandboxDevices
from flasher.sandbox.supervisor_fake import FakeSupervisor
from tests.conftest import ImageFactory
from tests.support.bench import Freezer, Slots
from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevices, require_loop


@pytest.fixture
def slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Slots]:
    require_loop()
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    with LoopDevices(tmp_path) as loops:
        yield Slots(loops)


@pytest.fixture
def image(mbr_image: ImageFactory) -> BuiltImage:
    return mbr_image()


@pytest.fixture
def freezer(slots: Slots) -> Iterator[Freezer]:
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 not installed")
    held = Freezer(slots)
    try:
        yield held
    finally:
        held.close()


@pytest.fixture
def devices() -> Iterator[SandboxDevices]:
    devices = SandboxDevices()
    yield devices
    devices.close()


@pytest.fixture
def kitchen(devices: SandboxDevices) -> FakeSupervisor:
    return devices.supervisor("kitchen-pi")


@pytest.fixture
def multi(devices: SandboxDevices) -> FakeSupervisor:
    return devices.supervisor("gateway-multi")
