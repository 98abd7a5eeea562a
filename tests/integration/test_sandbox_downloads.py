"""The sandbox's /download and /download-config over real HTTP: bytes, headers, Range, errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer

AUTH = {"Authorization": "Bearer sandbox-token"}
RPI4 = {"deviceType": "raspberrypi4-64", "version": "6.5.50+rev8"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    cache = tmp_path_factory.mktemp("sandbox-download-cache")
    with SandboxServer.start(image_scale=ImageScale.tiny(), cache_dir=cache, seed=7) as server:
        yield server


def get(sandbox: SandboxServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(sandbox.url + path, timeout=30, **kwargs)


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
