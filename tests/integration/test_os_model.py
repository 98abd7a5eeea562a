"""OsModel and DeviceTypes against the sandbox balena API over real HTTP on 127.0.0.1.

The expected answers are those a faithful API gives for the sandbox catalog (the fixture data of
the balena OS API research): version order, lines, recommendations, sizes and update targets.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from flasher.balena.hup import OsUpdateError
from flasher.balena.os_model import OsModel
from flasher.balena.session import BalenaSession
from flasher.errors import CatalogError, ConfigError
from flasher.models import OsVersion, Secret
from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer

RPI4_AVAILABLE = [
    "2025.7.0",
    "2025.4.1",
    "2025.1.3",
    "2024.10.2",
    "6.5.50+rev8",
    "6.5.50+rev7",
    "6.5.44+rev1",
    "6.0.50+rev3",
    "5.3.21+rev3",
    "2.114.18+rev3",
    "2.88.4",
    "2.80.3+rev1.prod",
    "2.80.3+rev1.dev",
]
RPI4_DRAFT = "6.5.53-1740412345678"
RPI4_INVALIDATED = "6.5.39"


class CountingSession(BalenaSession):
    """Counts the HTTP requests made, to see what is remembered."""

    calls: list[str]

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        self.calls.append(path_or_url.split("?")[0])
        return super().request(method, path_or_url, **kwargs)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer.start(image_scale=ImageScale.tiny()) as server:
        yield server


@pytest.fixture
def session(sandbox: SandboxServer) -> Iterator[CountingSession]:
    with CountingSession(sandbox.url, None, max_retries=0) as s:
        s.calls = []
        yield s


@pytest.fixture
def logged_in(sandbox: SandboxServer) -> Iterator[BalenaSession]:
    with BalenaSession(sandbox.url, Secret("sandbox-token"), max_retries=0) as s:
        yield s


@pytest.fixture
def model(session: CountingSession) -> OsModel:
    return OsModel(session)


def raw(items: list[OsVersion]) -> list[str]:
    return [v.raw_version for v in items]


def by_version(items: list[OsVersion]) -> dict[str, OsVersion]:
    return {v.raw_version: v for v in items}


# --- listing ----------------------------------------------------------------------------------


def test_available_versions_newest_first(model: OsModel) -> None:
    assert raw(model.get_available_os_versions("raspberrypi4-64")) == RPI4_AVAILABLE


def test_all_versions_include_draft_and_invalidated(model: OsModel) -> None:
    everything = model.get_all_os_versions("raspberrypi4-64")
    assert raw(everything) == [
        *RPI4_AVAILABLE[:4],
        RPI4_DRAFT,
        *RPI4_AVAILABLE[4:7],
        RPI4_INVALIDATED,
        *RPI4_AVAILABLE[7:],
    ]
    found = by_version(everything)
    assert not found[RPI4_DRAFT].is_final
    assert found[RPI4_INVALIDATED].is_invalidated


def test_include_draft_adds_drafts_only(model: OsModel) -> None:
    listed = raw(model.get_available_os_versions("raspberrypi4-64", include_draft=True))
    assert RPI4_DRAFT in listed
    assert RPI4_INVALIDATED not in listed
    assert [v for v in listed if v != RPI4_DRAFT] == RPI4_AVAILABLE


def test_one_recommended_version_per_os_type(model: OsModel) -> None:
    recommended = [
        (v.os_type, v.raw_version)
        for v in model.get_available_os_versions("raspberrypi4-64")
        if v.is_recommended
    ]
    assert recommended == [("esr", "2025.7.0"), ("default", "6.5.50+rev8")]


def test_generic_amd64_excludes_failed_and_draft(model: OsModel) -> None:
    listed = raw(model.get_available_os_versions("generic-amd64"))
    assert listed[0] == "6.8.1"
    assert "6.8.0" not in listed
    assert not any(v.startswith("6.8.2") for v in listed)


@pytest.mark.parametrize(
    ("version", "os_type", "line"),
    [
        ("2025.7.0", "esr", "next"),
        ("2025.4.1", "esr", "current"),
        ("2025.1.3", "esr", "sunset"),
        ("2024.10.2", "esr", "outdated"),
        ("6.5.50+rev8", "default", None),
    ],
)
def test_os_type_and_line(model: OsModel, version: str, os_type: str, line: str | None) -> None:
    found = by_version(model.get_available_os_versions("raspberrypi4-64"))[version]
    assert (found.os_type, found.line) == (os_type, line)


@pytest.mark.parametrize(
    ("version", "variant", "stripped", "based_on"),
    [
        ("6.5.50+rev8", None, "6.5.50+rev8", "6.5.50"),
        ("2.80.3+rev1.prod", "prod", "2.80.3+rev1", "2.80.3+rev1"),
        ("2.80.3+rev1.dev", "dev", "2.80.3+rev1", "2.80.3+rev1"),
        ("2.88.4", None, "2.88.4", "2.88.4"),
    ],
)
def test_variant_stripped_and_based_on_versions(
    model: OsModel, version: str, variant: str | None, stripped: str, based_on: str
) -> None:
    found = by_version(model.get_available_os_versions("raspberrypi4-64"))[version]
    assert (found.variant, found.stripped_version, found.based_on_version) == (
        variant,
        stripped,
        based_on,
    )
    assert found.device_type == "raspberrypi4-64"


def test_known_issue_is_reported(model: OsModel) -> None:
    found = by_version(model.get_available_os_versions("raspberrypi4-64"))["6.5.44+rev1"]
    assert found.known_issue == "Boot may hang on CM4 boards with NVMe storage attached"
    assert not found.is_recommended


def test_list_of_slugs_gives_a_dict(model: OsModel) -> None:
    found = model.get_available_os_versions(["raspberrypi4-64", "generic-amd64", "nope"])
    assert sorted(found) == ["generic-amd64", "raspberrypi4-64"]
    assert raw(found["raspberrypi4-64"]) == RPI4_AVAILABLE


@pytest.mark.parametrize("slug", ["no-such-board", "raspberrypi"])
def test_listing_takes_canonical_slugs_only(model: OsModel, slug: str) -> None:
    assert model.get_available_os_versions(slug) == []


def test_extra_pine_options_filter_releases(model: OsModel) -> None:
    found = model.get_all_os_versions(
        ["raspberrypi4-64", "generic-amd64"], {"$filter": {"raw_version": "6.8.1"}}
    )
    assert raw(found["generic-amd64"]) == ["6.8.1"]
    assert found["raspberrypi4-64"] == []


def test_unfiltered_listings_are_remembered(model: OsModel, session: CountingSession) -> None:
    first = model.get_available_os_versions("raspberrypi4-64")
    again = model.get_available_os_versions("raspberrypi4-64")
    assert first == again
    assert session.calls.count("/v7/application") == 1
    model.clear_cache()
    model.get_available_os_versions("raspberrypi4-64")
    assert session.calls.count("/v7/application") == 2


# --- max satisfying ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_type", "wanted", "os_type", "expected"),
    [
        ("raspberrypi4-64", "latest", None, "2025.7.0"),
        ("raspberrypi4-64", "latest", "default", "6.5.50+rev8"),
        ("raspberrypi4-64", "latest", "esr", "2025.7.0"),
        ("raspberrypi4-64", "recommended", "default", "6.5.50+rev8"),
        ("raspberrypi4-64", "default", "any", "2025.7.0"),
        ("raspberrypi4-64", "^6.0.0", None, "6.5.50+rev8"),
        ("raspberrypi4-64", "6.5.50", None, "6.5.50+rev8"),
        ("raspberrypi4-64", "~2.80.3", None, "2.80.3+rev1.prod"),
        ("raspberrypi4-64", "2.80.3+rev1.dev", None, "2.80.3+rev1.dev"),
        ("raspberrypi4-64", "^2.999.0", None, None),
        ("raspberrypi4-64", "^2025.0.0", "default", None),
        ("raspberrypi4-64", RPI4_DRAFT, None, None),
        ("generic-amd64", "latest", None, "6.8.1"),
    ],
)
def test_max_satisfying_version(
    model: OsModel, device_type: str, wanted: str, os_type: Any, expected: str | None
) -> None:
    assert model.get_max_satisfying_version(device_type, wanted, os_type) == expected


def test_max_satisfying_resolves_aliases(model: OsModel) -> None:
    by_alias = model.get_max_satisfying_version("raspberrypi", "latest")
    assert by_alias is not None
    assert by_alias == model.get_max_satisfying_version("raspberry-pi", "latest")


def test_unknown_device_type_is_invalid(model: OsModel) -> None:
    with pytest.raises(CatalogError, match="Invalid device type: foo-bar-baz"):
        model.get_max_satisfying_version("foo-bar-baz")


def test_alias_resolution_is_remembered(model: OsModel, session: CountingSession) -> None:
    for _ in range(3):
        model.get_max_satisfying_version("nuc", "latest")
    assert session.calls.count("/v7/device_type") == 1


# --- images -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_type", "version", "size_bytes"),
    [
        ("raspberrypi4-64", "6.5.50+rev8", 371515392),
        ("generic-amd64", "6.8.1", 577393095),
    ],
)
def test_download_size(model: OsModel, device_type: str, version: str, size_bytes: int) -> None:
    assert model.get_download_size(device_type, version) == size_bytes


def test_download_size_of_esr_is_not_known(model: OsModel) -> None:
    with pytest.raises(CatalogError, match="No download size known"):
        model.get_download_size("raspberrypi4-64", "2025.7.0")


def test_download_latest_takes_the_recommended_default_version(logged_in: BalenaSession) -> None:
    with OsModel(logged_in).download("raspberrypi4-64") as download:
        data = b"".join(download.iter_bytes(1 << 16))
        assert download.version == "6.5.50+rev8"
        assert download.device_type == "raspberrypi4-64"
        assert download.filename == "balena-cloud-raspberrypi4-64-6.5.50+rev8.img"
    assert len(data) == download.size_bytes
    assert data[510:512] == b"\x55\xaa"


def test_download_gz_file_type(model: OsModel) -> None:
    with model.download("nuc", "v6.5.39", file_type=".gz") as download:
        head = next(download.iter_bytes(1 << 16))
    assert download.device_type == "intel-nuc"
    assert download.version == "6.5.39"
    assert head[:2] == b"\x1f\x8b"
    assert zlib.decompressobj(wbits=31).decompress(head)[510:512] == b"\x55\xaa"


def test_download_of_unknown_version_is_not_found(model: OsModel) -> None:
    with pytest.raises(CatalogError, match=r"No image found for device type raspberrypi4-64"):
        model.download("raspberrypi4-64", "1.2.3")


@pytest.mark.parametrize("version", ["balenaOS 2.88.4", "newest", "2.9.6.7"])
def test_download_rejects_bad_versions_before_any_request(
    model: OsModel, session: CountingSession, version: str
) -> None:
    with pytest.raises(ConfigError) as info:
        model.download("raspberrypi4-64", version)
    assert info.value.field == "version"
    assert session.calls == []


# --- config.json ------------------------------------------------------------------------------


@pytest.mark.parametrize("fleet", ["sandbox/demo-fleet", "SANDBOX/Demo-Fleet", 1958513, "1958513"])
def test_get_config_resolves_the_fleet(logged_in: BalenaSession, fleet: int | str) -> None:
    config = OsModel(logged_in).get_config(fleet, version="6.5.50+rev8")
    assert config["applicationId"] == 1958513
    assert config["deviceType"] == "raspberrypi4-64"
    assert len(config["apiKey"]) == 32


def test_get_config_passes_options(logged_in: BalenaSession) -> None:
    config = OsModel(logged_in).get_config(
        "sandbox/demo-fleet",
        version="6.5.50+rev8",
        network="wifi",
        wifi_ssid="bench",
        wifi_key=Secret("hunter22"),
        app_update_poll_interval_min=72,
        development_mode=True,
    )
    assert (config["wifiSsid"], config["wifiKey"]) == ("bench", "hunter22")
    assert config["appUpdatePollInterval"] == 4320000
    assert config["developmentMode"] is True


def test_get_config_needs_a_version(logged_in: BalenaSession) -> None:
    with pytest.raises(ConfigError, match="version"):
        OsModel(logged_in).get_config("sandbox/demo-fleet", version="")


def test_get_config_of_unknown_fleet(logged_in: BalenaSession) -> None:
    with pytest.raises(CatalogError, match="Fleet not found: sandbox/nope"):
        OsModel(logged_in).get_config("sandbox/nope", version="6.5.50+rev8")


def test_private_fleet_without_login_hints_at_logging_in(model: OsModel) -> None:
    with pytest.raises(CatalogError, match="Fleet not found: 1958513") as info:
        model.get_config(1958513, version="6.5.50+rev8")
    assert info.value.hint is not None and "balena login" in info.value.hint


# --- updates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_type", "current", "target", "expected"),
    [
        ("raspberrypi4-64", "2.88.4", "6.5.50+rev8", "balenahup"),
        ("raspberrypi4-64", "5.3.21+rev3", "2025.7.0", "balenahup"),
    ],
)
def test_os_update_type(
    model: OsModel, device_type: str, current: str, target: str, expected: str
) -> None:
    assert model.get_os_update_type(device_type, current, target) == expected
    assert model.is_supported_os_update(device_type, current, target)


def test_os_update_type_refuses_downgrades(model: OsModel) -> None:
    with pytest.raises(OsUpdateError, match="OS downgrades are not allowed"):
        model.get_os_update_type("raspberrypi4-64", "6.5.50+rev8", "6.5.50+rev7")
    assert not model.is_supported_os_update("raspberrypi4-64", "6.5.50+rev8", "6.5.50+rev7")


def test_os_update_on_unknown_device_type(model: OsModel) -> None:
    with pytest.raises(CatalogError, match="Invalid device type: foo-bar-baz"):
        model.is_supported_os_update("foo-bar-baz", "2.88.4", "6.5.50+rev8")


@pytest.mark.parametrize(
    ("current", "os_type", "versions", "recommended", "listed"),
    [
        (
            "2.88.4",
            "default",
            [
                "6.5.50+rev8",
                "6.5.50+rev7",
                "6.5.44+rev1",
                "6.0.50+rev3",
                "5.3.21+rev3",
                "2.114.18+rev3",
            ],
            "6.5.50+rev8",
            "2.88.4",
        ),
        # 6.5.50+rev8 is based on meta-balena 6.5.50, which is below 6.5.50+rev7.
        ("6.5.50+rev7", "default", [], None, "6.5.50+rev7"),
        (
            "v6.5.50+rev8",
            "esr",
            ["2025.7.0", "2025.4.1", "2025.1.3", "2024.10.2"],
            "2025.7.0",
            "6.5.50+rev8",
        ),
        (
            "v6.5.50+rev8",
            "any",
            ["2025.7.0", "2025.4.1", "2025.1.3", "2024.10.2"],
            "2025.7.0",
            "6.5.50+rev8",
        ),
        # Without an OS type a device stays on the line it is on, as the JS SDK keeps it.
        ("v6.5.50+rev8", None, [], None, "6.5.50+rev8"),
        ("2.83.18", None, [*RPI4_AVAILABLE[4:11]], "6.5.50+rev8", None),
        ("2025.4.1", None, ["2025.7.0"], "2025.7.0", "2025.4.1"),
        ("2025.4.1", "esr", ["2025.7.0"], "2025.7.0", "2025.4.1"),
        # Unified (variant-less) releases follow development images too; .prod ones do not.
        (
            "2.80.3+rev1.dev",
            "default",
            [*RPI4_AVAILABLE[4:11]],
            "6.5.50+rev8",
            "2.80.3+rev1.dev",
        ),
    ],
)
def test_supported_os_update_versions(
    model: OsModel,
    current: str,
    os_type: Any,
    versions: list[str],
    recommended: str | None,
    listed: str | None,
) -> None:
    targets = model.get_supported_os_update_versions("raspberrypi4-64", current, os_type=os_type)
    assert (list(targets.versions), targets.recommended, targets.current) == (
        versions,
        recommended,
        listed,
    )


def test_supported_os_update_versions_with_drafts(model: OsModel) -> None:
    targets = model.get_supported_os_update_versions(
        "raspberrypi4-64", "6.5.50+rev8", os_type="default", include_draft=True
    )
    assert targets.versions == (RPI4_DRAFT,)
    assert targets.recommended is None


def test_supported_os_update_versions_rejects_bad_current(model: OsModel) -> None:
    with pytest.raises(ConfigError) as info:
        model.get_supported_os_update_versions("raspberrypi4-64", "latest")
    assert info.value.field == "current_version"


# --- supervisors ------------------------------------------------------------------------------


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
    model: OsModel, arch: str | int, expected: list[str]
) -> None:
    rows = model.get_supervisor_releases_for_cpu_architecture(arch)
    assert [r["raw_version"] for r in rows] == expected


def test_supervisor_releases_take_extra_options(model: OsModel) -> None:
    rows = model.get_supervisor_releases_for_cpu_architecture(
        "aarch64", {"$filter": {"raw_version": "16.12.9"}, "$select": "created_at"}
    )
    assert [(r["id"], r["raw_version"]) for r in rows] == [(3288811, "16.12.9")]
    assert "created_at" in rows[0]


def test_download_never_logs_the_wifi_key(model: OsModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with model.download(
        "raspberrypi4-64", network="wifi", wifi_ssid="bench", wifi_key=Secret("hunter2-wifi-key")
    ) as download:
        next(download.iter_bytes(4096))
    # The client side: this process's HTTP stack and session (the server logs on its own).
    client_lines = [
        r.getMessage() for r in caplog.records if r.name.startswith(("urllib3", "flasher.balena"))
    ]
    assert any("/download" in line for line in client_lines)
    assert not any("hunter2-wifi-key" in line for line in client_lines)
