"""Station files: TOML keys are the bench's options, the command line wins, bad keys, types and
readable secrets are refused naming the key; the shipped example and service unit fit."""

from __future__ import annotations

import argparse
import configparser
import os
import shlex
from pathlib import Path

import pytest

from flasher.cli.main import build_parser
from flasher.cli.station_file import apply_station, load_station
from flasher.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _bench_args(*argv: str) -> argparse.Namespace:
    return build_parser(["bench"]).parse_args(["bench", *argv])


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _bench_args().bench_parser
    return parser


def _station(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_example_station_file_sets_bench_options() -> None:
    values = load_station(REPO / "packaging" / "station.example.toml", _parser())
    assert values["device_type"] == "raspberrypi4-64"
    assert values["os_version"] == "6.5.50+rev8"
    assert values["fleet"] == "1958513"
    assert values["slots"][0].startswith("left=pci-0000:00:14.0-usb-0:1.1")
    assert values["register"] is True and values["yes"] is True and values["eject"] is True
    assert values["station_id"] == "line1-bench-a"


def test_command_line_wins_over_the_station_file(tmp_path: Path) -> None:
    path = _station(tmp_path, 'device-type = "fincm3"\nonce = 3\nslot = ["sdb"]\n')
    args = _bench_args("--device-type", "raspberrypi4-64")
    defaults = vars(_parser().parse_args([]))
    apply_station(args, load_station(path, _parser()), defaults)
    assert args.device_type == "raspberrypi4-64"
    assert (args.once, args.slots) == (3, ["sdb"])


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        ("[image]\ncolour = 'red'\n", "station:image.colour", "is not a bench option"),
        ("once = 'three'\n", "station:once", "whole number"),
        ("register = 'yes'\n", "station:register", "true or false"),
        ("slot = [1, true]\n", "station:slot", "list of strings"),
        ("source = 'a.img'\n[image]\nurl = 'https://x/b.img'\n", "station:image.url", "repeats"),
        ("network = 'carrier-pigeon'\n", "station:network", "one of"),
        ("once = \n", "station", "not valid TOML"),
    ],
)
def test_bad_station_files_are_refused_naming_the_key(
    tmp_path: Path, text: str, field: str, rule: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_station(_station(tmp_path, text), _parser())
    assert caught.value.field == field
    assert rule in caught.value.message


def test_station_file_with_a_secret_must_be_private(tmp_path: Path) -> None:
    path = _station(tmp_path, 'wifi-key = "correct horse"\n', mode=0o644)
    with pytest.raises(ConfigError) as caught:
        load_station(path, _parser())
    assert "correct horse" not in str(caught.value.to_dict())
    os.chmod(path, 0o600)
    assert load_station(path, _parser())["wifi_key"] == "correct horse"


def test_service_unit_runs_a_station_file_and_restarts_on_failure() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(REPO / "packaging" / "systemd" / "flasher-bench@.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["StandardOutput"] == "journal"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/flasher/bin/flasher"  # the console script of a root-owned venv
    args = build_parser(argv[1:]).parse_args(argv[1:])
    assert args.station == "/etc/flasher/stations/%i.toml" and args.yes
