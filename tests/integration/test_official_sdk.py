"""The official balena Python SDK (balena-sdk) driven against the sandbox: proof of fidelity.

The SDK hard-codes https://api.<balena_host>/ but keeps `api_endpoint` in its settings file, so
each test writes that file (as a user switching environments would) and builds a fresh client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer

balena = pytest.importorskip(
    "balena", reason="balena-sdk is not installed (pip install balena-sdk)"
)

# balena-semver's order, except that the Python SDK's compare puts `.dev` above `.prod` of the
# same version (it does not invert the dev rule, unlike the JS SDK).
AVAILABLE_RPI4 = [
    "2025.7.0", "2025.4.1", "2025.1.3", "2024.10.2", "6.5.50+rev8", "6.5.50+rev7", "6.5.44+rev1",
    "6.0.50+rev3", "5.3.21+rev3", "2.114.18+rev3", "2.88.4", "2.80.3+rev1.dev", "2.80.3+rev1.prod",
]  # fmt: skip


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    cache = tmp_path_factory.mktemp("sdk-sandbox-cache")
    with SandboxServer.start(image_scale=ImageScale.tiny(), cache_dir=cache) as server:
        yield server


def _client(sandbox: SandboxServer, data_dir: Path, token: str | None) -> Any:
    first = balena.Balena({"balena_host": "sandbox.invalid", "data_directory": str(data_dir)})
    first.settings.set("api_endpoint", sandbox.url + "/")
    sdk = balena.Balena({"balena_host": "sandbox.invalid", "data_directory": str(data_dir)})
    assert sdk.settings.get("api_endpoint") == sandbox.url + "/"
    if token:
        sdk.auth.login_with_token(token)
    return sdk


@pytest.fixture
def anonymous(sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("BALENA_API_KEY", raising=False)
    monkeypatch.delenv("RESIN_API_KEY", raising=False)
    return _client(sandbox, tmp_path / "anon", None)


@pytest.fixture
def logged_in(sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("BALENA_API_KEY", raising=False)
    return _client(sandbox, tmp_path / "user", "sandbox-token")


def test_available_os_versions_are_the_finalized_ones_newest_first(anonymous: Any) -> None:
    versions = anonymous.models.os.get_available_os_versions("raspberrypi4-64")
    assert [v["raw_version"] for v in versions] == AVAILABLE_RPI4


def test_all_os_versions_include_drafts_and_invalidated(anonymous: Any) -> None:
    raw = {v["raw_version"] for v in anonymous.models.os.get_all_os_versions("raspberrypi4-64")}
    assert raw == {*AVAILABLE_RPI4, "6.5.53-1740412345678", "6.5.39"}


def test_os_versions_for_several_types_are_keyed_by_slug(anonymous: Any) -> None:
    found = anonymous.models.os.get_available_os_versions(["raspberrypi4-64", "generic-amd64"])
    assert set(found) == {"raspberrypi4-64", "generic-amd64"}
    assert found["generic-amd64"][0]["raw_version"] == "6.8.1"
    assert "6.8.0" not in [v["raw_version"] for v in found["generic-amd64"]]


@pytest.mark.parametrize(
    ("os_type", "raw_version", "formatted"),
    [
        ("default", "6.5.50+rev8", "v6.5.50+rev8 (recommended)"),
        ("esr", "2025.7.0", "v2025.7.0 (next, recommended)"),
    ],
)
def test_recommended_version_per_os_line(
    anonymous: Any, os_type: str, raw_version: str, formatted: str
) -> None:
    versions = anonymous.models.os.get_available_os_versions("raspberrypi4-64")
    recommended = [v for v in versions if v.get("is_recommended") and v["os_type"] == os_type]
    assert [(v["raw_version"], v["formatted_version"]) for v in recommended] == [
        (raw_version, formatted)
    ]


@pytest.mark.parametrize(
    ("device_type", "version_or_range", "os_type", "expected"),
    [
        ("raspberrypi4-64", "latest", None, "2025.7.0"),
        ("raspberrypi4-64", "latest", "default", "6.5.50+rev8"),
        ("raspberrypi4-64", "6.5.50+rev7", None, "6.5.50+rev7"),
        ("raspberrypi4-64", "6.5.39", None, None),
        ("raspberrypi", "latest", None, "6.5.44+rev1"),
        ("generic-amd64", "latest", None, "6.8.1"),
    ],
)
def test_max_satisfying_version(
    anonymous: Any, device_type: str, version_or_range: str, os_type: str | None, expected: str
) -> None:
    found = anonymous.models.os.get_max_satisfying_version(device_type, version_or_range, os_type)
    assert found == expected


def test_download_size_needs_a_token_and_reports_the_catalog_size(
    anonymous: Any, logged_in: Any
) -> None:
    with pytest.raises(balena.exceptions.NotLoggedIn):
        anonymous.models.os.get_download_size("raspberrypi4-64", "6.5.50+rev8")
    size = logged_in.models.os.get_download_size("raspberrypi4-64", "6.5.50+rev8")
    assert size == 371515392.0


def test_download_streams_the_recommended_default_line_image(
    logged_in: Any, sandbox: SandboxServer
) -> None:
    response = logged_in.models.os.download("raspberrypi4-64")
    response.raise_for_status()
    digest = hashlib.sha256()
    for chunk in response.iter_content(chunk_size=1 << 20):
        digest.update(chunk)
    disposition = response.headers["Content-Disposition"]
    assert disposition == 'attachment; filename="balena-cloud-raspberrypi4-64-6.5.50+rev8.img"'
    assert response.headers["ETag"] == f'"{digest.hexdigest()}"'


def test_download_passes_options_through(logged_in: Any) -> None:
    response = logged_in.models.os.download("raspberrypi4-64", "6.5.44+rev1", {"fileType": ".zip"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    assert response.content[:4] == b"PK\x03\x04"


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("aarch64", ["17.0.1", "16.12.9"]),
        (3, ["17.0.1", "16.12.9"]),
        ("amd64", ["17.0.1"]),
        ("armv5e", []),
    ],
)
def test_supervisor_releases_for_cpu_architecture(
    anonymous: Any, arch: str | int, expected: list[str]
) -> None:
    releases = anonymous.models.os.get_supervisor_releases_for_cpu_architecture(arch)
    assert [r["raw_version"] for r in releases] == expected
    assert all(set(r) >= {"id", "raw_version", "known_issue_list"} for r in releases)


@pytest.mark.parametrize(
    ("os_arch", "app_arch", "compatible"),
    [("aarch64", "armv7hf", True), ("armv7hf", "amd64", False), ("amd64", "amd64", True)],
)
def test_architecture_compatibility_is_local(
    anonymous: Any, os_arch: str, app_arch: str, compatible: bool
) -> None:
    assert anonymous.models.os.is_architecture_compatible_with(os_arch, app_arch) is compatible


def test_supported_os_update_versions_from_an_old_release(anonymous: Any) -> None:
    found = anonymous.models.os.get_supported_os_update_versions("raspberrypi4-64", "2.88.4")
    assert found == {
        "versions": ["6.5.50+rev8", "6.5.50+rev7", "6.5.44+rev1", "6.0.50+rev3", "5.3.21+rev3",
                     "2.114.18+rev3"],
        "recommended": "6.5.50+rev8",
        "current": "2.88.4",
    }  # fmt: skip


def test_device_types_are_listed_by_name(anonymous: Any) -> None:
    names = [d["name"] for d in anonymous.models.device_type.get_all()]
    assert names == sorted(names)
    assert len(names) == 10


@pytest.mark.parametrize(
    ("alias", "slug"), [("nuc", "intel-nuc"), ("raspberrypi", "raspberry-pi"), ("fincm3", "fincm3")]
)
def test_device_type_aliases_resolve(anonymous: Any, alias: str, slug: str) -> None:
    assert anonymous.models.device_type.get(alias)["slug"] == slug


def test_unknown_device_type_raises_the_sdk_error(anonymous: Any) -> None:
    with pytest.raises(balena.exceptions.InvalidDeviceType):
        anonymous.models.device_type.get("foo-bar-baz")


def test_device_type_by_name_and_supported_list(anonymous: Any) -> None:
    assert anonymous.models.device_type.get_slug_by_name("Raspberry Pi 3") == "raspberrypi3"
    assert anonymous.models.device_type.get_name("raspberrypi5") == "Raspberry Pi 5 & CM5"
    supported = {d["slug"] for d in anonymous.models.device_type.get_all_supported()}
    assert "raspberrypi4-64" in supported


def test_fleet_lookup_and_config_with_a_token(logged_in: Any) -> None:
    app = logged_in.models.application.get("sandbox/demo-fleet")
    assert app["id"] == 1958513
    config = logged_in.models.os.get_config("sandbox/demo-fleet", {"version": "6.5.50+rev8"})
    assert config["applicationId"] == 1958513
    assert config["deviceType"] == "raspberrypi4-64"
    assert len(config["apiKey"]) == 32


def test_fleets_are_hidden_from_anonymous_callers(anonymous: Any) -> None:
    with pytest.raises(balena.exceptions.ApplicationNotFound):
        anonymous.models.application.get("sandbox/demo-fleet")
