"""DeviceTypes against the sandbox balena API, and the OS/application architecture table."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flasher.balena.device_types import DeviceTypes
from flasher.balena.os_model import OsModel
from flasher.balena.session import BalenaSession
from flasher.errors import CatalogError
from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer


@pytest.fixture(scope="module")
def session() -> Iterator[BalenaSession]:
    with (
        SandboxServer.start(image_scale=ImageScale.tiny()) as server,
        BalenaSession(server.url, None, max_retries=0) as s,
    ):
        yield s


@pytest.mark.parametrize(
    ("os_arch", "app_arch", "compatible"),
    [
        ("aarch64", "aarch64", True),
        ("aarch64", "armv7hf", True),
        ("aarch64", "rpi", True),
        ("armv7hf", "rpi", True),
        ("armv7hf", "aarch64", False),
        ("rpi", "armv7hf", False),
        ("amd64", "i386", False),
        ("armv7hf", "amd64", False),
        ("i386-nlp", "i386-nlp", True),
    ],
)
def test_architecture_compatibility(os_arch: str, app_arch: str, compatible: bool) -> None:
    assert OsModel.is_architecture_compatible_with(os_arch, app_arch) is compatible


def test_device_types_listing(session: BalenaSession) -> None:
    found = {d.slug: d for d in DeviceTypes(session).list_all()}
    assert found["raspberrypi4-64"].arch == "aarch64"
    assert found["raspberrypi4-64"].name == "Raspberry Pi 4 (using 64bit OS)"
    assert found["raspberrypi4-64"].aliases == ()
    assert found["intel-nuc"].aliases == ("nuc",)
    assert found["raspberry-pi"].aliases == ("raspberrypi",)
    assert [d for d, t in found.items() if t.flasher] == sorted(
        ["beaglebone-black", "generic-amd64", "intel-nuc"], key=lambda s: found[s].name
    )


def test_device_types_are_listed_by_name(session: BalenaSession) -> None:
    names = [d.name for d in DeviceTypes(session).list_all()]
    assert names == sorted(names)


@pytest.mark.parametrize(
    ("name", "slug"), [("nuc", "intel-nuc"), ("raspberrypi", "raspberry-pi"), ("fincm3", "fincm3")]
)
def test_device_type_get_resolves_aliases(session: BalenaSession, name: str, slug: str) -> None:
    device_types = DeviceTypes(session)
    assert device_types.get(name).slug == slug
    assert device_types.resolve_slug(name) == slug


def test_device_type_by_display_name(session: BalenaSession) -> None:
    assert DeviceTypes(session).get_by_slug_or_name("Intel NUC").slug == "intel-nuc"


def test_unknown_device_type_lookup(session: BalenaSession) -> None:
    with pytest.raises(CatalogError, match="Invalid device type: toaster"):
        DeviceTypes(session).get("toaster")
