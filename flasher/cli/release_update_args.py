"""The argument rules of balena-release-update, kept exactly, for `flasher release-update` and
the `balena-release-update` command.

`--help`/`-h` anywhere (even where a value belongs) wins, then `--version`/`-v`. Options are
read left to right; a value is the next word whatever it is; repeats overwrite. `--timeout N`
implies `--wait`, which implies `--prepare`. A release is an ID when the word is the canonical
decimal form of a JavaScript number (so `0900` and `12abc` are not), otherwise a commit prefix
when it contains 6 to 32 letters or digits in a row, otherwise invalid. `--timeout` takes the
canonical form of an integer. Messages are the original's. Flasher's own command also takes
`--delta-url URL`. Imports only the standard library.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

VERSION = "0.1.0"
USAGE = """\
Usage: {prog} [options]

Options:

  --from-release   The source release ID or commit hash (required).
  --to-release     The target release ID or commit hash (required).

  --prepare     Trigger any pending image deltas between service images.
  --wait        Wait until the update is ready. Implies --prepare.
  --timeout N   The maximum time in seconds to wait. Implies --wait.
{extra}
  --help, -h    Show this help text and exit.
  --version, -v Show program version and exit.

Example:

  $ {prog} --wait --from-release 900813 --to-release 900835
"""
EXTRA_USAGE = "  --delta-url URL  The delta server (default: from the balena settings).\n"

_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_COMMIT = re.compile(r"[a-zA-Z0-9]{6,32}")
_JS_EXPONENT_LIMIT = 10**21


class Action(enum.Enum):
    HELP = "help"
    VERSION = "version"


class UsageProblem(ValueError):
    """The arguments break a rule; the message is the original's."""


@dataclass(frozen=True)
class ReleaseUpdateArgs:
    from_release: int | str
    to_release: int | str
    prepare: bool = False
    wait: bool | None = None
    timeout_s: int | None = None
    delta_url: str | None = None


def _js_string(number: int) -> str:
    """How JavaScript writes `number` once parsed into a double (digits beyond 2^53 are lost)."""
    if abs(number) >= _JS_EXPONENT_LIMIT:
        return "" if number else "0"  # written with an exponent: never a canonical match
    text = repr(float(number))
    if "e" not in text:
        return str(int(float(number)))
    mantissa, exponent = text.split("e")
    sign = "-" if mantissa.startswith("-") else ""
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    digits = (whole + fraction).rstrip("0") or "0"
    length = len(whole) + int(exponent)
    return sign + digits.ljust(length, "0")


def canonical_integer(word: str) -> int | None:
    """`word` as a number when JavaScript's String(parseInt(word)) gives `word` back."""
    if not _CANONICAL_INT.fullmatch(word) or word == "-0":
        return None
    number = int(word)
    return number if _js_string(number) == word else None


def release_argument(word: str | None) -> int | str | None:
    """A release ID (int), a commit prefix (str), or None when the word is neither."""
    if word is None:
        return None
    number = canonical_integer(word)
    if number is not None:
        return number
    return word if _COMMIT.search(word) else None


def _invalid(option: str, word: str | None) -> UsageProblem:
    shown = "undefined" if word is None else word
    return UsageProblem(f"Invalid value for {option} option: {shown}")


def parse_arguments(
    argv: Sequence[str], *, with_delta_url: bool = False
) -> ReleaseUpdateArgs | Action:
    """The options in `argv`, or the action --help/--version asks for; UsageProblem if bad."""
    words = list(argv)
    if "--help" in words or "-h" in words:
        return Action.HELP
    if "--version" in words or "-v" in words:
        return Action.VERSION
    found_from: int | str | None = None
    found_to: int | str | None = None
    prepare, wait, timeout_s, delta_url = False, None, None, None
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if word in ("--from-release", "--to-release"):
            i += 1
            release = release_argument(value)
            if release is None:
                raise _invalid(word, value)
            if word == "--from-release":
                found_from = release
            else:
                found_to = release
        elif word == "--timeout":
            i += 1
            timeout_s = canonical_integer(value) if value is not None else None
            if timeout_s is None:
                raise _invalid(word, value)
            wait, prepare = True, True
        elif word == "--wait":
            wait, prepare = True, True
        elif word == "--prepare":
            prepare = True
        elif word == "--delta-url" and with_delta_url:
            i += 1
            if not value or not value.startswith(("http://", "https://")):
                raise _invalid(word, value)
            delta_url = value
        else:
            raise UsageProblem(f"invalid option: {word}")
        i += 1
    if found_from is None or found_to is None:
        raise UsageProblem("Must specify both a source and a target release")
    return ReleaseUpdateArgs(found_from, found_to, prepare, wait, timeout_s, delta_url)


def usage(prog: str, *, with_delta_url: bool = False) -> str:
    return USAGE.format(prog=prog, extra=EXTRA_USAGE if with_delta_url else "")
