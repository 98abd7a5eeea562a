"""The argument rules of `flasher release-update` / `balena-release-update` (the original's)."""

from __future__ import annotations

import pytest

from flasher.cli.release_update_args import (
    Action,
    ReleaseUpdateArgs,
    UsageProblem,
    canonical_integer,
    parse_arguments,
    release_argument,
)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("900813", 900813),
        ("0", 0),
        ("-5", -5),
        ("84d3d8f", "84d3d8f"),
        ("84d3d8f43eddd81b1699552dd39338f8dbf8b11e", "84d3d8f43eddd81b1699552dd39338f8dbf8b11e"),
        ("0900", None),  # not canonical and only 4 characters: neither an ID nor a commit
        ("012345", "012345"),  # not a canonical number, but six digits: a commit prefix
        ("12abc", None),
        ("123456", 123456),  # all digits and canonical: an ID, never a commit prefix
        ("abc-defghi", "abc-defghi"),  # the commit pattern is searched, not anchored
        ("abcde", None),
        ("", None),
        ("+5", None),
        ("-0", None),
        ("12345678901234567890", "12345678901234567890"),  # loses digits as a JS number
        ("9007199254740993", "9007199254740993"),
        ("9007199254740992", 9007199254740992),
        (None, None),
    ],
)
def test_release_argument_is_an_id_a_commit_prefix_or_invalid(
    word: str | None, expected: int | str | None
) -> None:
    assert release_argument(word) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [("30", 30), ("-5", -5), ("0", 0), ("30s", None), ("1.5", None), ("030", None), ("", None)],
)
def test_timeout_must_be_a_canonical_integer(word: str, expected: int | None) -> None:
    assert canonical_integer(word) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--from-release", "1", "--to-release", "2"], ReleaseUpdateArgs(1, 2)),
        (
            ["--from-release", "1", "--to-release", "abcdef", "--prepare"],
            ReleaseUpdateArgs(1, "abcdef", prepare=True),
        ),
        (
            ["--wait", "--from-release", "1", "--to-release", "2"],
            ReleaseUpdateArgs(1, 2, prepare=True, wait=True),
        ),
        (
            ["--from-release", "1", "--to-release", "2", "--timeout", "30"],
            ReleaseUpdateArgs(1, 2, prepare=True, wait=True, timeout_s=30),
        ),
        (
            [
                "--from-release",
                "1",
                "--from-release",
                "7",
                "--to-release",
                "2",
                "--to-release",
                "3",
            ],
            ReleaseUpdateArgs(7, 3),
        ),
        (
            ["--timeout", "5", "--timeout", "9", "--from-release", "1", "--to-release", "2"],
            ReleaseUpdateArgs(1, 2, prepare=True, wait=True, timeout_s=9),
        ),
        # a value is the next word whatever it looks like
        (
            ["--from-release", "--prepare", "--to-release", "2"],
            ReleaseUpdateArgs("--prepare", 2),
        ),
    ],
)
def test_options_are_read_in_order_and_repeats_overwrite(
    argv: list[str], expected: ReleaseUpdateArgs
) -> None:
    assert parse_arguments(argv) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from-release", "1"], "Must specify both a source and a target release"),
        ([], "Must specify both a source and a target release"),
        (["--from-release", "1", "--to-release", "2", "extra"], "invalid option: extra"),
        (["-x"], "invalid option: -x"),
        (["--from-release=1"], "invalid option: --from-release=1"),
        (["--from-release", "12abc"], "Invalid value for --from-release option: 12abc"),
        (["--to-release"], "Invalid value for --to-release option: undefined"),
        (
            ["--from-release", "1", "--to-release", "2", "--timeout", "30s"],
            "Invalid value for --timeout option: 30s",
        ),
        (["--timeout"], "Invalid value for --timeout option: undefined"),
        # the first bad word wins, before the missing-release check
        (["--bogus", "--from-release", "x"], "invalid option: --bogus"),
    ],
)
def test_bad_arguments_give_the_original_messages(argv: list[str], message: str) -> None:
    with pytest.raises(UsageProblem) as caught:
        parse_arguments(argv)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("argv", "action"),
    [
        (["--help"], Action.HELP),
        (["-h"], Action.HELP),
        (["--from-release", "-h"], Action.HELP),  # even in a value position
        (["--bogus", "--help"], Action.HELP),
        (["--version", "--help"], Action.HELP),
        (["--version"], Action.VERSION),
        (["-v", "--bogus"], Action.VERSION),
    ],
)
def test_help_then_version_win_wherever_they_are(argv: list[str], action: Action) -> None:
    assert parse_arguments(argv) is action


def test_delta_url_is_an_option_of_flashers_command_only() -> None:
    argv = ["--from-release", "1", "--to-release", "2", "--delta-url", "http://127.0.0.1:9"]
    parsed = parse_arguments(argv, with_delta_url=True)
    assert isinstance(parsed, ReleaseUpdateArgs)
    assert parsed.delta_url == "http://127.0.0.1:9"
    with pytest.raises(UsageProblem, match=r"^invalid option: --delta-url$"):
        parse_arguments(argv)


def test_delta_url_must_be_an_http_url() -> None:
    with pytest.raises(UsageProblem, match=r"^Invalid value for --delta-url option: ftp://x$"):
        parse_arguments(["--delta-url", "ftp://x"], with_delta_url=True)
