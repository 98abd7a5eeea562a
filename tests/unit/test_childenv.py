"""The environment of the tools Flasher starts for itself keeps everything but the secrets."""

from __future__ import annotations

import pytest

from flasher.bench.report import REPORT_ENV
from flasher.childenv import SECRET_VARIABLES, child_environment, is_secret_variable
from flasher.cli.bench_extras import REPORT_DB_ENV
from flasher.cli.config_opts import API_URL_ENV, PROVISIONING_KEY_ENV, WIFI_KEY_ENV


def test_every_variable_flasher_reads_a_secret_from_is_held_back() -> None:
    # the names flasher.balena.session and flasher.supervisor.transport read keys from
    read_by_code = {"BALENA_API_KEY", "BALENA_TOKEN", "BALENA_SUPERVISOR_API_KEY"}
    read_by_code |= {"RESIN_SUPERVISOR_API_KEY", WIFI_KEY_ENV, PROVISIONING_KEY_ENV, REPORT_DB_ENV}
    assert read_by_code <= SECRET_VARIABLES
    assert all(is_secret_variable(name) for name in read_by_code)


@pytest.mark.parametrize(
    "name", ["AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "PGPASSWORD", "GOOGLE_CREDENTIALS", "my_key"]
)
def test_a_variable_named_for_a_secret_is_held_back(name: str) -> None:
    assert name not in child_environment({name: "s3cret", "PATH": "/usr/bin"})


def test_everything_else_is_kept() -> None:
    kept = {
        "PATH": "/usr/bin:/bin",
        "DISPLAY": ":0",
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
        "XDG_RUNTIME_DIR": "/run/user/1000",
        "LANG": "C.UTF-8",
        API_URL_ENV: "https://api.balena-cloud.com",
        REPORT_ENV: "/var/lib/flasher/cards.jsonl",
    }
    secrets = {name: "s3cret" for name in SECRET_VARIABLES}
    assert child_environment({**kept, **secrets}) == kept
