"""The sandbox balena API over real HTTP on 127.0.0.1: shapes, status codes, headers, messages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from flasher.resources import resource
from flasher.sandbox.catalog import load_catalog
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


def test_pine_is_read_only_and_the_connection_survives(sandbox: SandboxServer) -> None:
    with requests.Session() as session:
        response = session.post(sandbox.url + "/v7/device_type", json={"slug": "x"}, timeout=30)
        assert response.status_code == 405
        assert session.get(sandbox.url + "/ping", timeout=30).text == "OK"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("$filter=name eq 'Raspberry Pi (v1 / Zero / Zero W)'", ["raspberry-pi"]),
        ("$filter=id in (58, 72)&$orderby=id desc", ["raspberrypi5", "raspberrypi4-64"]),
        ("$filter=substringof('Pi 3',name)", ["raspberrypi3"]),
        ("$filter=tolower(name) eq 'intel nuc'", ["intel-nuc"]),
        ("$filter=device_type_alias/all(a:a/is_referenced_by__alias ne 'nuc') and "
         "is_of__cpu_architecture/slug eq 'amd64'&$orderby=slug asc",
         ["generic-amd64", "qemux86-64"]),
        ("$filter=logo ne null and is_private eq false&$orderby=slug asc&$skip=8",
         ["raspberrypi4-64", "raspberrypi5"]),
    ],
)  # fmt: skip
def test_filter_operators(sandbox: SandboxServer, query: str, expected: list[str]) -> None:
    assert [d["slug"] for d in pine(sandbox, "device_type", f"$select=slug,id&{query}")] == expected


def test_quotes_in_literals_are_doubled(sandbox: SandboxServer) -> None:
    assert pine(sandbox, "device_type", "$filter=name eq 'it''s not there'") == []


def test_supported_device_types_need_a_successful_host_release(tmp_path: Path) -> None:
    raw = json.loads(resource("sandbox-catalog.json").read_text())
    raw["releases"]["balena_os/fincm3"] = []
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(raw))
    query = (
        "$select=slug&$filter=is_default_for__application/any(idfa:(idfa/is_host eq true) and "
        "(idfa/is_archived eq false) and (idfa/owns__release/any(r:(r/status eq 'success') and "
        "(r/is_final eq true) and (r/is_invalidated eq false))))"
    )
    with SandboxServer.start(catalog=load_catalog(path), cache_dir=tmp_path) as server:
        slugs = {d["slug"] for d in pine(server, "device_type", query)}
    assert "fincm3" not in slugs
    assert {"raspberrypi4-64", "intel-nuc"} <= slugs


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


@pytest.mark.parametrize(
    ("slug", "status", "body"),
    [
        ("raspberrypi4-64", 200, {
            "versions": ["6.5.50+rev8", "6.5.50+rev7", "6.5.44+rev1", "6.0.50+rev3",
                         "5.3.21+rev3", "2.114.18+rev3", "2.88.4", "2.80.3+rev1.prod",
                         "2.80.3+rev1.dev"],
            "latest": "6.5.50+rev8",
        }),
        ("generic-amd64", 200, {
            "versions": ["6.8.1", "6.8.0+rev1", "6.5.39", "6.1.24", "6.0.50", "5.3.21",
                         "4.0.26", "2.115.7"],
            "latest": "6.8.1",
        }),
        ("foo", 404, "Unknown device type foo"),
        ("foo.bar", 400, "Invalid device type"),
    ],
)  # fmt: skip
def test_device_type_images(sandbox: SandboxServer, slug: str, status: int, body: Any) -> None:
    # The legacy listing the SDK's getSupportedVersions reads: the default line, newest first.
    response = get(sandbox, f"/device-types/v1/{slug}/images")
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
