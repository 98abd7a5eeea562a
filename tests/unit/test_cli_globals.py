"""Global options (--json, -v, --sandbox, --api-url, --token) before or after the command."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flasher.cli import main as cli_main

GLOBAL_OPTIONS = ("--json", "-v", "--sandbox", "--api-url", "--token")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("BALENA_API_KEY", "BALENA_TOKEN", "FLASHER_API_URL", "BALENARC_BALENA_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BALENARC_DATA_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))


def parse(*argv: str) -> argparse.Namespace:
    return cli_main.build_parser(list(argv)).parse_args(list(argv))


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield sub.prog, sub
                yield from all_parsers(sub)


@pytest.mark.parametrize(
    "argv",
    [
        ("--json", "flash", "card.img", "--target", "out.img"),
        ("flash", "--json", "card.img", "--target", "out.img"),
        ("flash", "card.img", "--target", "out.img", "--json"),
        ("os", "versions", "raspberrypi4-64", "--json"),
        ("os", "--json", "versions", "raspberrypi4-64"),
        ("--json", "os", "versions", "raspberrypi4-64"),
        ("config", "generate", "--device-type", "raspberrypi4-64", "--json"),
        ("cache", "list", "--json"),
        ("drives", "--json"),
    ],
)
def test_json_is_accepted_anywhere(argv: tuple[str, ...]) -> None:
    assert parse(*argv).json is True


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--api-url", "http://127.0.0.1:1", "os", "versions", "x"), "http://127.0.0.1:1"),
        (("os", "versions", "x", "--api-url", "http://127.0.0.1:2"), "http://127.0.0.1:2"),
        (("os", "--api-url", "http://127.0.0.1:3", "versions", "x"), "http://127.0.0.1:3"),
        (("os", "versions", "x"), None),
    ],
)
def test_api_url_is_accepted_anywhere(argv: tuple[str, ...], expected: str | None) -> None:
    assert parse(*argv).api_url == expected


def test_an_option_given_before_the_command_is_not_reset_by_the_subcommand() -> None:
    args = parse("--sandbox", "--token", "T", "--json", "os", "versions", "x")
    assert (args.sandbox, args.token, args.json) == (True, "T", True)


def test_an_option_after_the_subcommand_sets_the_value() -> None:
    args = parse("flash", "card.img", "--target", "o.img", "--sandbox", "--token", "T")
    assert (args.sandbox, args.token) == (True, "T")


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (("os", "versions", "x"), 0),
        (("-v", "os", "versions", "x"), 1),
        (("os", "versions", "x", "-v"), 1),
        (("-v", "os", "versions", "x", "-v"), 2),
    ],
)
def test_verbosity_adds_up_across_positions(argv: tuple[str, ...], level: int) -> None:
    assert cli_main._verbosity(parse(*argv)) == level


def test_every_command_and_group_accepts_the_global_options() -> None:
    missing = [
        (prog, option)
        for prog, sub in all_parsers(cli_main.build_parser())
        if "-" in sub.prefix_chars  # release-update parses its words by the original's rules
        for option in GLOBAL_OPTIONS
        if option not in sub._option_string_actions
    ]
    assert missing == []


def test_json_after_the_subcommand_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main.main(["os", "versions", "raspberrypi4-64", "--sandbox", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 0
    assert body["device_type"] == "raspberrypi4-64"
