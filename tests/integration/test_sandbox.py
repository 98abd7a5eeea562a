"""The sandbox balena API over real HTTP on 127.0.0.1: shapes, status codes, headers, messages."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer

AUTH = {"Authorization": "Bearer sandbox-token"}
RPI4 = {"deviceType": "raspberrypi4-64", "version": "6.5.50+rev8"}
HOST_APPS_JS = (
    "$select=is_for__device_type&$expand=application_tag($select=tag_key,value),"
    "is_for__device_type($select=slug),owns__release($select=id,known_issue_list,raw_version,"
    "variant,phase;$expand=release_tag($select=tag_key,value);$filter=is_final eq true and "
    "is_invalidated eq false and status eq 'success')&$filter=is_host eq true and "
    "is_for__device_type/any(dt:dt/slug in ('raspberrypi4-64'))"
)
HOST_APPS_PY = (
    "$select=is_for__device_type&$expand=application_tag($select=tag_key,value),"
    "is_for__device_type($select=slug),owns__release($select=id,known_issue_list,raw_version,"
    "variant,phase;$expand=release_tag($select=tag_key,value);$filter=(is_final eq true) and "
    "(is_invalidated eq false) and (status eq 'success'))&$filter=(is_host eq true) and "
    "(is_for__device_type/any(dt:dt/slug in ('raspberrypi4-64')))"
)
SUPERVISOR = (
    "$select=id,raw_version,known_issue_list&$filter=(status eq 'success') and (is_final eq true)"
    " and (is_invalidated eq false) and (semver_major gt 0) and (belongs_to__application/any(a:"
    "(startswith(a/slug,'balena_os%2F') and endswith(a/slug,'-supervisor')) and ((a/is_public eq"
    " true) and (a/is_host eq false) and (a/is_for__device_type/any(dt:{arch})))))"
    "&$orderby=semver_major desc,semver_minor desc,semver_patch desc,revision desc"
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    cache = tmp_path_factory.mktemp("sandbox-cache")
    with SandboxServer.start(image_scale=ImageScale.tiny(), cache_dir=cache, seed=7) as server:
        yield server


def get(sandbox: SandboxServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(sandbox.url + path, timeout=30, **kwargs)


def pine(sandbox: SandboxServer, resource: str, query: str, **kwargs: Any) -> Any:
    response = get(sandbox, f"/v7/{resource}?{query}", **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["d"]


def strip_metadata(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_metadata(v) for k, v in value.items() if k != "__metadata"}
    if isinstance(value, list):
        return [strip_metadata(v) for v in value]
    return value


# -- plain endpoints -----------------------------------------------------------------------------


def test_ping_answers_ok(sandbox: SandboxServer) -> None:
    response = get(sandbox, "/ping")
    assert (response.status_code, response.text) == (200, "OK")


def test_public_config_has_the_sdk_keys(sandbox: SandboxServer) -> None:
    config = get(sandbox, "/config").json()
    assert {"deployment", "deviceUrlsBase", "mixpanelToken", "supportedSocialProviders"} <= set(
        config
    )


@pytest.mark.parametrize(("headers", "status"), [({}, 401), (AUTH, 200)])
def test_whoami_needs_a_token(sandbox: SandboxServer, headers: dict[str, str], status: int) -> None:
    response = get(sandbox, "/actor/v1/whoami", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.json()["actorType"] == "user"


# -- pine ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [HOST_APPS_JS, HOST_APPS_PY], ids=["js-style", "python-style"])
def test_host_app_query_lists_both_os_lines(sandbox: SandboxServer, query: str) -> None:
    apps = strip_metadata(pine(sandbox, "application", query))
    assert [a["is_for__device_type"] for a in apps] == [[{"slug": "raspberrypi4-64"}]] * 2
    default, esr = sorted(apps, key=lambda a: len(a["application_tag"]))
    assert esr["application_tag"][0] == {"tag_key": "release-policy", "value": "esr"}
    versions = [r["raw_version"] for r in default["owns__release"]]
    assert "6.5.53-1740412345678" not in versions and "6.5.39" not in versions
    assert default["owns__release"][0] == {
        "id": 3352101, "known_issue_list": None, "raw_version": "6.5.50+rev8", "variant": "",
        "phase": None, "release_tag": [{"tag_key": "meta-balena-base", "value": "6.5.50"}],
    }  # fmt: skip


def test_both_filter_syntaxes_give_identical_answers(sandbox: SandboxServer) -> None:
    assert pine(sandbox, "application", HOST_APPS_JS) == pine(sandbox, "application", HOST_APPS_PY)


def test_percent_encoded_query_is_decoded(sandbox: SandboxServer) -> None:
    encoded = quote("$filter=slug eq 'raspberrypi3'&$select=slug", safe="=&$")
    assert strip_metadata(pine(sandbox, "device_type", encoded)) == [{"slug": "raspberrypi3"}]


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("dt/is_of__cpu_architecture/any(c:c/slug eq 'aarch64')", ["17.0.1", "16.12.9"]),
        ("dt/is_of__cpu_architecture eq 3", ["17.0.1", "16.12.9"]),
        ("dt/is_of__cpu_architecture/any(c:c/slug eq 'amd64')", ["17.0.1"]),
        ("dt/is_of__cpu_architecture/any(c:c/slug eq 'i386')", []),
    ],
)
def test_supervisor_release_filter(sandbox: SandboxServer, arch: str, expected: list[str]) -> None:
    releases = pine(sandbox, "release", SUPERVISOR.format(arch=arch))
    assert [r["raw_version"] for r in releases] == expected


@pytest.mark.parametrize(
    ("alias", "slug"), [("raspberrypi", "raspberry-pi"), ("nuc", "intel-nuc"), ("x", None)]
)
def test_alias_resolution(sandbox: SandboxServer, alias: str, slug: str | None) -> None:
    query = (
        "$top=1&$select=slug&$orderby=name asc&$filter=device_type_alias/any(dta:"
        f"dta/is_referenced_by__alias eq '{alias}')"
    )
    assert [d["slug"] for d in pine(sandbox, "device_type", query)] == ([slug] if slug else [])


def test_device_type_listing_expands_arch_and_sorted_aliases(sandbox: SandboxServer) -> None:
    query = (
        "$select=slug,name&$orderby=name asc&$expand=is_of__cpu_architecture($select=slug),"
        "device_type_alias($select=is_referenced_by__alias;$orderby=is_referenced_by__alias asc)"
    )
    types = strip_metadata(pine(sandbox, "device_type", query))
    assert [t["name"] for t in types] == sorted(t["name"] for t in types)
    bbb = next(t for t in types if t["slug"] == "beaglebone-black")
    assert bbb["is_of__cpu_architecture"] == [{"slug": "armv7hf"}]
    assert bbb["device_type_alias"] == [
        {"is_referenced_by__alias": "beaglebone"}, {"is_referenced_by__alias": "beaglebone-black"}
    ]  # fmt: skip


def test_unexpanded_navigation_is_deferred(sandbox: SandboxServer) -> None:
    (dt,) = pine(sandbox, "device_type", "$filter=slug eq 'raspberrypi4-64'")
    assert dt["is_of__cpu_architecture"] == {
        "__id": 3, "__deferred": {"uri": "/resin/cpu_architecture(@id)?@id=3"}
    }  # fmt: skip
    assert dt["contract"]["data"]["media"]["defaultBoot"] == "sdcard"
    assert dt["logo"].startswith("data:image/svg+xml;base64,")


def test_slug_or_name_filter_and_top(sandbox: SandboxServer) -> None:
    query = "$top=1&$filter=(name eq 'Intel NUC') or (slug eq 'Intel NUC')&$select=slug"
    assert [d["slug"] for d in pine(sandbox, "device_type", query)] == ["intel-nuc"]


def test_string_functions_and_not(sandbox: SandboxServer) -> None:
    query = "$select=slug&$filter=startswith(slug,'raspberry') and not(endswith(slug,'-64'))"
    slugs = {d["slug"] for d in pine(sandbox, "device_type", query)}
    assert slugs == {"raspberrypi5", "raspberrypi3", "raspberry-pi"}


def test_v6_answers_like_v7(sandbox: SandboxServer) -> None:
    v6 = get(sandbox, "/v6/cpu_architecture?$orderby=id asc").json()
    assert v6 == get(sandbox, "/v7/cpu_architecture?$orderby=id asc").json()
    assert [a["slug"] for a in v6["d"]][:3] == ["rpi", "armv7hf", "aarch64"]


@pytest.mark.parametrize(("headers", "count"), [({}, 0), (AUTH, 1)])
def test_fleets_are_visible_only_to_authenticated_callers(
    sandbox: SandboxServer, headers: dict[str, str], count: int
) -> None:
    by_id = pine(sandbox, "application(1958513)", "$select=id", headers=headers)
    by_slug = pine(
        sandbox,
        "application",
        "$filter=(slug eq 'sandbox%2Fdemo-fleet') or (uuid eq 'sandbox%2Fdemo-fleet')",
        headers=headers,
    )
    assert (len(by_id), len(by_slug)) == (count, count)


def test_single_entity_by_id_is_still_a_list(sandbox: SandboxServer) -> None:
    assert strip_metadata(pine(sandbox, "device_type(58)", "$select=slug")) == [
        {"slug": "raspberrypi4-64"}
    ]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v7/nonexistent", 404, "Unknown resource: nonexistent"),
        ("/v7/device_type?$filter=slug eq", 400, "Malformed $filter"),
        ("/v7/device_type?$filter=(slug eq 'a'", 400, "Malformed $filter"),
        ("/v7/device_type?$select=nope", 400, "Unknown property 'nope' of 'device_type'"),
        ("/v7/device_type?$expand=slug", 400, "Cannot $expand 'slug'"),
        ("/v7/device_type?$top=x", 400, "$top must be a non-negative integer"),
        ("/v7/device_type?$frobnicate=1", 400, "Unknown query option"),
    ],
)
def test_pine_errors(sandbox: SandboxServer, path: str, status: int, message: str) -> None:
    response = get(sandbox, path)
    assert response.status_code == status
    assert message in response.text


def test_pine_is_read_only(sandbox: SandboxServer) -> None:
    response = requests.post(sandbox.url + "/v7/device_type", json={}, headers=AUTH, timeout=30)
    assert response.status_code == 405


# -- device-types/v1 and download-size ------------------------------------------------------------


def test_device_types_v1_carry_build_id(sandbox: SandboxServer) -> None:
    manifests = get(sandbox, "/device-types/v1").json()
    by_slug = {m["slug"]: m for m in manifests}
    assert by_slug["raspberrypi4-64"]["buildId"] == "6.5.50+rev8"
    assert by_slug["generic-amd64"]["yocto"]["deployFlasherArtifact"] == (
        "balena-image-flasher-generic-amd64.balenaos-img"
    )
    one = get(sandbox, "/device-types/v1/nuc").json()
    assert (one["slug"], one["buildId"], one["yocto"]["image"]) == (
        "intel-nuc", "6.8.1", "balena-image-flasher"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("raspberrypi4-64/images/6.5.50+rev8", 200, {"size": 371515392}),
        ("generic-amd64/images/latest", 200, {"size": 577393095}),
        ("raspberrypi4-64/images/2025.7.0", 404,
         "Device raspberrypi4-64 not found for 2025.7.0 version"),
        ("raspberrypi4-64/images/9.9.9", 404,
         "Device raspberrypi4-64 not found for 9.9.9 version"),
        ("foo/images/6.5.50", 404, "Unknown device type foo"),
        ("foo.bar/images/6.5.50", 400, "Invalid device type"),
    ],
)  # fmt: skip
def test_download_size(sandbox: SandboxServer, path: str, status: int, body: Any) -> None:
    response = get(sandbox, f"/device-types/v1/{path}/download-size")
    assert response.status_code == status
    assert (response.json() if status == 200 else response.text) == body


def test_download_size_without_a_published_number_is_the_image_size(
    sandbox: SandboxServer,
) -> None:
    size = get(sandbox, "/device-types/v1/raspberrypi3/images/6.5.44+rev2/download-size").json()
    head = requests.head(
        sandbox.url + "/download",
        params={"deviceType": "raspberrypi3", "version": "6.5.44+rev2"},
        timeout=30,
    )
    assert size == {"size": int(head.headers["Content-Length"])}


# -- /download -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_rpi4(sandbox: SandboxServer) -> bytes:
    response = get(sandbox, "/download", params=RPI4)
    assert response.status_code == 200
    return response.content


@pytest.mark.parametrize(
    ("file_type", "content_type", "suffix"),
    [(".img", "application/octet-stream", ".img"), (".gz", "application/octet-stream", ".img.gz"),
     (".zip", "application/zip", ".img.zip")],
)  # fmt: skip
def test_download_headers(
    sandbox: SandboxServer, file_type: str, content_type: str, suffix: str
) -> None:
    response = get(sandbox, "/download", params={**RPI4, "fileType": file_type})
    assert response.status_code == 200
    headers = response.headers
    assert headers["Content-Type"] == content_type
    assert headers["Content-Length"] == str(len(response.content))
    assert headers["Content-Disposition"] == (
        f'attachment; filename="balena-cloud-raspberrypi4-64-6.5.50+rev8{suffix}"'
    )
    assert headers["ETag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
    assert headers["Accept-Ranges"] == "bytes"


def test_gz_and_zip_hold_the_raw_image(sandbox: SandboxServer, raw_rpi4: bytes) -> None:
    gz = get(sandbox, "/download", params={**RPI4, "fileType": ".gz"}).content
    assert gzip.decompress(gz) == raw_rpi4
    packed = zipfile.ZipFile(
        io.BytesIO(get(sandbox, "/download", params={**RPI4, "fileType": ".zip"}).content)
    )
    assert packed.namelist() == ["balena-cloud-raspberrypi4-64-6.5.50+rev8.img"]
    assert packed.read(packed.namelist()[0]) == raw_rpi4


def test_latest_alias_and_post_body_give_the_same_image(
    sandbox: SandboxServer, raw_rpi4: bytes
) -> None:
    latest = get(
        sandbox, "/download", params={"deviceType": "raspberrypi4-64", "version": "latest"}
    )
    posted = requests.post(
        sandbox.url + "/download", json={**RPI4, "fileType": ".img", "imageType": "raw"}, timeout=30
    )
    assert latest.content == raw_rpi4 and posted.content == raw_rpi4
    alias = get(sandbox, "/download", params={"deviceType": "nuc", "version": "6.8.1"})
    assert alias.headers["Content-Disposition"].endswith('intel-nuc-6.8.1.img"')


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [("bytes=0-511", 0, 511), ("bytes=1000-1999", 1000, 1999), ("bytes=-100", None, None),
     ("bytes=4194304-", 4194304, None)],
)  # fmt: skip
def test_range_requests_return_slices(
    sandbox: SandboxServer, raw_rpi4: bytes, range_header: str, start: int | None, end: int | None
) -> None:
    size = len(raw_rpi4)
    first = size - 100 if start is None else start
    last = size - 1 if end is None else end
    response = get(sandbox, "/download", params=RPI4, headers={"Range": range_header})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert response.content == raw_rpi4[first : last + 1]


def test_unsatisfiable_range_is_416(sandbox: SandboxServer, raw_rpi4: bytes) -> None:
    response = get(sandbox, "/download", params=RPI4, headers={"Range": f"bytes={len(raw_rpi4)}-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(raw_rpi4)}"


def test_if_range_with_a_stale_etag_sends_everything(
    sandbox: SandboxServer, raw_rpi4: bytes
) -> None:
    headers = {"Range": "bytes=0-9", "If-Range": '"stale"'}
    response = get(sandbox, "/download", params=RPI4, headers=headers)
    assert (response.status_code, len(response.content)) == (200, len(raw_rpi4))


def test_same_parameters_give_the_same_bytes_from_a_fresh_server(
    raw_rpi4: bytes, tmp_path: Path
) -> None:
    with SandboxServer.start(image_scale=ImageScale.tiny(), cache_dir=tmp_path) as other:
        assert get(other, "/download", params=RPI4).content == raw_rpi4


@pytest.mark.parametrize(
    ("params", "headers", "status", "message"),
    [
        ({"deviceType": "raspberrypi4-64", "version": "9.9.9"}, {}, 404,
         "No image found for device type raspberrypi4-64, version 9.9.9, and image type raw"),
        ({"deviceType": "foo", "version": "1.0.0"}, {}, 404, "No image found for device type foo"),
        ({"deviceType": "intel-nuc", "version": "6.8.1", "imageType": "raw"}, {}, 404,
         "and image type raw"),
        ({**RPI4, "fileType": ".tar"}, {}, 400, "Invalid fileType"),
        ({**RPI4, "imageType": "usb"}, {}, 400, "Invalid imageType"),
        ({"version": "6.5.50+rev8"}, {}, 400, "A deviceType is required."),
        ({"deviceType": "raspberrypi4-64", "version": "2025.7.0"}, {}, 401, "ESR"),
        ({**RPI4, "appId": "1958513"}, {}, 401, "Unauthorized"),
        ({**RPI4, "appId": "1667442"}, AUTH, 404, "Application not found"),
    ],
)  # fmt: skip
def test_download_errors(
    sandbox: SandboxServer,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = get(sandbox, "/download", params=params, headers=headers)
    assert response.status_code == status
    assert message in response.text


def test_esr_download_works_with_a_token(sandbox: SandboxServer) -> None:
    params = {"deviceType": "raspberrypi4-64", "version": "2025.7.0"}
    assert get(sandbox, "/download", params=params, headers=AUTH).status_code == 200


def _mtype(image: Path, offset: int, path: str) -> str:
    return subprocess.run(
        ["mtype", "-i", f"{image}@@{offset}", f"::{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.mark.skipif(shutil.which("mtype") is None, reason="mtools not installed")
def test_configured_download_holds_fleet_config_and_wifi_profile(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    params = {**RPI4, "appId": "1958513", "network": "wifi", "wifiSsid": "Office",
              "wifiKey": "s3cretpass", "appUpdatePollInterval": "15"}  # fmt: skip
    response = get(sandbox, "/download", params=params, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="balena-cloud-demo-fleet-raspberrypi4-64-6.5.50+rev8-v17.0.1.img"'
    )
    image = tmp_path / "configured.img"
    image.write_bytes(response.content)
    boot_offset = ImageScale.tiny().alignment_bytes
    config = json.loads(_mtype(image, boot_offset, "/config.json"))
    assert (config["applicationId"], config["appUpdatePollInterval"]) == (1958513, 900000)
    assert re.fullmatch(r"[A-Za-z0-9]{32}", config["apiKey"])
    assert "wifiKey" not in config and "wifiSsid" not in config
    profile = _mtype(image, boot_offset, "/system-connections/resin-wifi")
    assert "ssid=Office" in profile and "psk=s3cretpass" in profile


# -- /download-config ----------------------------------------------------------------------------

EXAMPLE_KEYS = [
    "applicationId", "deviceType", "userId", "appUpdatePollInterval", "listenPort", "vpnPort",
    "apiEndpoint", "vpnEndpoint", "registryEndpoint", "deltaEndpoint", "mixpanelToken", "apiKey",
]  # fmt: skip


def download_config(sandbox: SandboxServer, body: dict[str, Any], **kwargs: Any) -> Any:
    headers = kwargs.pop("headers", AUTH)
    return requests.post(sandbox.url + "/download-config", json=body, headers=headers, timeout=30)


def test_download_config_matches_the_api_example(sandbox: SandboxServer) -> None:
    body = {"version": "6.5.50+rev8", "network": "wifi", "wifiSsid": "Office",
            "wifiKey": "s3cretpass", "appUpdatePollInterval": 10, "developmentMode": True,
            "provisioningKeyName": "ci-key", "appId": 1958513}  # fmt: skip
    config = download_config(sandbox, body).json()
    assert list(config) == [*EXAMPLE_KEYS, "wifiSsid", "wifiKey", "developmentMode"]
    assert config["appUpdatePollInterval"] == 600000
    assert config["deviceType"] == "raspberrypi4-64"
    assert (config["wifiSsid"], config["wifiKey"], config["developmentMode"]) == (
        "Office", "s3cretpass", True
    )  # fmt: skip


def test_ethernet_config_has_the_twelve_base_keys(sandbox: SandboxServer) -> None:
    config = download_config(sandbox, {"version": "6.5.50+rev8", "appId": 1958513}).json()
    assert list(config) == EXAMPLE_KEYS
    assert config["appUpdatePollInterval"] == 60000


def test_download_config_accepts_get_with_query(sandbox: SandboxServer) -> None:
    params = {"version": "6.8.1", "appId": "1958514"}
    config = get(sandbox, "/download-config", params=params, headers=AUTH).json()
    assert config["deviceType"] == "generic-amd64"


@pytest.mark.parametrize(
    ("version", "dev_param", "expected"),
    [("2.80.3+rev1.dev", None, True), ("2.80.3+rev1.prod", None, False),
     ("6.5.50+rev8", "on", True), ("2.80.3+rev1.dev", False, False)],
)  # fmt: skip
def test_development_mode_rules(
    sandbox: SandboxServer, version: str, dev_param: Any, expected: bool
) -> None:
    body: dict[str, Any] = {"version": version, "appId": 1958513}
    if dev_param is not None:
        body["developmentMode"] = dev_param
    config = download_config(sandbox, body).json()
    assert config.get("developmentMode", False) is expected


def test_secureboot_and_os1_additions(sandbox: SandboxServer) -> None:
    secure = download_config(sandbox, {"version": "6.8.1", "appId": 1958514, "secureboot": "true"})
    assert secure.json()["installer"] == {"secureboot": True}
    old = download_config(sandbox, {"version": "1.26.0", "appId": 1958513, "ip": "192.168.1.50",
                                    "gateway": "192.168.1.1"}).json()  # fmt: skip
    assert old["connectivity"] == "connman"
    assert "IPv4 = 192.168.1.50/255.255.255.0/192.168.1.1" in old["files"]["network/network.config"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        ({"version": "6.5.50+rev8"}, AUTH, 400, "An appId is required."),
        ({"appId": 1958513}, AUTH, 400, "A version is required."),
        ({"appId": 1958513, "version": "1.2.0"}, AUTH, 400,
         "balenaOS versions <= 1.2.0 are no longer supported, please update"),
        ({"appId": 999999, "version": "6.5.50+rev8"}, AUTH, 404, "Application not found"),
        ({"appId": 1958513, "version": "6.5.50+rev8"}, {}, 401, "Unauthorized"),
        ({"appId": 1958513, "version": "1.26.0", "ip": "10.0.0.2"}, AUTH, 400,
         "Missing network gateway"),
    ],
)  # fmt: skip
def test_download_config_errors(
    sandbox: SandboxServer,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = download_config(sandbox, body, headers=headers)
    assert (response.status_code, response.text) == (status, message)


def test_provisioning_keys_follow_the_seed(tmp_path: Path) -> None:
    def first_keys(seed: int) -> list[str]:
        with SandboxServer.start(
            image_scale=ImageScale.tiny(), cache_dir=tmp_path, seed=seed
        ) as server:
            body = {"version": "6.5.50+rev8", "appId": 1958513}
            return [download_config(server, body).json()["apiKey"] for _ in range(2)]

    same = first_keys(1)
    assert same == first_keys(1)
    assert same[0] != same[1]
    assert first_keys(2) != same
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", key) for key in same)


# -- the CLI -------------------------------------------------------------------------------------


def test_sandbox_serve_prints_the_url_and_stops_on_interrupt() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flasher", "sandbox", "serve", "--image-scale", "tiny"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    watchdog = threading.Timer(60, proc.kill)  # a hung server must not hang the suite
    watchdog.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        assert requests.get(url.group(0) + "/ping", timeout=10).text == "OK"
        assert f"--api-url {url.group(0)}" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
        watchdog.cancel()
    assert proc.returncode == 0, err
