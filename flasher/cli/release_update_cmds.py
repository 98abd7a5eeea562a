"""`flasher release-update` and the `balena-release-update` command: describe or prepare the
update between two releases of a fleet, as balena-release-update does.

Same arguments (flasher.cli.release_update_args), the update's JSON on stdout (two-space
indent, the original's keys and order), `ERROR: <message>` on stderr with exit code 1 for every
failure (with flasher's --json, the structured error with its code instead), and the original's
`[DEBUG]` progress lines on stderr; on a terminal a spinner also shows which services are still
being prepared while waiting. With --sandbox the sandbox's own delta server is used, checks come
every second, and the sandbox user is logged in.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from flasher.balena.session import BalenaSession
from flasher.cli.context import CliContext
from flasher.cli.output import Output
from flasher.cli.release_update_args import (
    VERSION,
    Action,
    ReleaseUpdateArgs,
    UsageProblem,
    parse_arguments,
    usage,
)
from flasher.errors import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    AuthError,
    CatalogError,
    ConfigError,
    FlasherError,
)
from flasher.models import Secret
from flasher.release_update import (
    POLL_INTERVAL_S,
    DeltaRequested,
    UpdateEvent,
    UpdateInfo,
    UpdateNotReady,
    UpdatePreparing,
    UpdateStatus,
    UpdateWaiting,
    get_update_info,
    prepare_update,
)

SANDBOX_POLL_INTERVAL_S = 1.0
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPIN_STEP_S = 0.1
_SPIN_WIDTH = 100


def register(groups: dict[str, Any]) -> None:
    # The original's rules (help anywhere, values taken whatever they look like, its messages)
    # are not argparse's: every word after the command goes to parse_arguments untouched.
    parser = groups[""].add_parser(
        "release-update",
        help="what updating a fleet between two releases costs; build its deltas ahead",
        add_help=False,
        prefix_chars="\0",
    )
    parser.add_argument("arguments", nargs="*")
    parser.set_defaults(handler=release_update)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _pending_summary(info: UpdateInfo) -> str:
    waiting = [s for s in info.services if s.status is not UpdateStatus.READY]
    return ", ".join(f"{s.service_name} {s.status.value}" for s in waiting) or "checking"


class Progress:
    """The original's [DEBUG] lines; on a terminal, a spinner between the checks."""

    def __init__(self, stream: TextIO, *, spinner: bool) -> None:
        self._stream = stream
        self._spinner = spinner
        self._frames = itertools.cycle(_SPINNER)
        self._status = "waiting for the first check"
        self._drawn = False

    def _line(self, text: str) -> None:
        self._clear()
        print(f"[DEBUG] {text}", file=self._stream, flush=True)

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[2K")
            self._drawn = False

    def on_event(self, event: UpdateEvent) -> None:
        if isinstance(event, UpdatePreparing):
            self._line("Preparing update...")
        elif isinstance(event, DeltaRequested):
            self._line(
                f"Triggering delta between images {event.source_image_id} and "
                f"{event.target_image_id}"
            )
        elif isinstance(event, UpdateWaiting):
            self._line("Waiting for update to become ready...")
        elif isinstance(event, UpdateNotReady):
            self._status = _pending_summary(event.info)
            self._line(
                "The update is not ready yet; will repoll in "
                f"{_seconds(event.next_poll_s)} seconds..."
            )

    def sleep(self, duration_s: float) -> None:
        if not self._spinner:
            time.sleep(duration_s)
            return
        end = time.monotonic() + duration_s
        while (left_s := end - time.monotonic()) > 0:
            self._clear()
            line = f"{next(self._frames)} {self._status} (next check in {math.ceil(left_s)} s)"
            self._stream.write(line[:_SPIN_WIDTH])
            self._stream.flush()
            self._drawn = True
            time.sleep(min(_SPIN_STEP_S, left_s))
        self._clear()
        self._stream.flush()


def original_message(err: FlasherError, *, authenticated: bool) -> str:
    """The words balena-release-update uses for an API failure; the error's own otherwise.
    An answer with an empty body reads as balena-request words it."""
    if isinstance(err, AuthError) and not authenticated:
        return "You have to log in"
    if isinstance(err, CatalogError) and "status" in err.fields:
        server = err.fields.get("server_message") or "The request was unsuccessful"
        return f"Request error: {server}"
    return err.message


def run(
    argv: Sequence[str],
    *,
    session: Callable[[], BalenaSession],
    prog: str,
    stdout: TextIO,
    stderr: TextIO,
    with_delta_url: bool = False,
    delta_at_api_url: bool = False,
    poll_interval_s: float = POLL_INTERVAL_S,
    json_errors: Output | None = None,
) -> int:
    """One run: parse `argv`, open the session only when needed, print, return the exit code.
    `delta_at_api_url`: the API's server is also the delta server (the sandbox).
    `json_errors`: report failures there as structured JSON instead of `ERROR:` lines."""
    try:
        parsed = parse_arguments(argv, with_delta_url=with_delta_url)
    except UsageProblem as problem:
        if json_errors is not None:
            json_errors.error(ConfigError("arguments", str(problem)))
        else:
            print(f"ERROR: {problem}", file=stderr)
        return EXIT_ERROR
    if parsed is Action.HELP:
        stdout.write(usage(prog, with_delta_url=with_delta_url))
        return EXIT_OK
    if parsed is Action.VERSION:
        print(VERSION, file=stdout)
        return EXIT_OK
    assert isinstance(parsed, ReleaseUpdateArgs)
    api = session()
    try:
        delta_url = parsed.delta_url or (api.api_url if delta_at_api_url else None)
        info = _update(parsed, api, stderr, delta_url, poll_interval_s)
    except FlasherError as err:
        if json_errors is not None:
            json_errors.error(err)
        else:
            print(f"ERROR: {original_message(err, authenticated=api.authenticated)}", file=stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ERROR: Interrupted", file=stderr)
        return EXIT_CANCELLED
    print(json.dumps(info.to_json(), indent=2, ensure_ascii=False), file=stdout)
    return EXIT_OK


def _update(
    args: ReleaseUpdateArgs,
    session: BalenaSession,
    stderr: TextIO,
    delta_url: str | None,
    poll_interval_s: float,
) -> UpdateInfo:
    if not args.prepare:
        return get_update_info(args.from_release, args.to_release, session=session)
    progress = Progress(stderr, spinner=stderr.isatty())
    return prepare_update(
        args.from_release,
        args.to_release,
        session=session,
        wait=args.wait,
        timeout_s=args.timeout_s,
        poll_interval_s=poll_interval_s,
        delta_url=delta_url,
        on_event=progress.on_event,
        sleep=progress.sleep,
    )


def release_update(args: argparse.Namespace, ctx: CliContext) -> int:
    """`flasher [--sandbox] release-update …`."""
    sandbox = bool(getattr(args, "sandbox", False))
    own: list[BalenaSession] = []

    def session() -> BalenaSession:
        base = ctx.session()
        if not sandbox or base.authenticated:
            return base
        # The sandbox takes any token as its one user, whose fleets hold the releases.
        own.append(BalenaSession(base.api_url, Secret("sandbox-user-token")))
        return own[0]

    try:
        return run(
            args.arguments,
            session=session,
            prog="flasher release-update",
            stdout=ctx.out.stdout,
            stderr=ctx.out.stderr,
            with_delta_url=True,
            delta_at_api_url=sandbox,
            poll_interval_s=SANDBOX_POLL_INTERVAL_S if sandbox else POLL_INTERVAL_S,
            json_errors=ctx.out if ctx.out.json_mode else None,
        )
    finally:
        for opened in own:
            opened.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The `balena-release-update` command (API and login as in flasher's other commands)."""
    opened: list[BalenaSession] = []

    def session() -> BalenaSession:
        opened.append(BalenaSession.from_environment())
        return opened[0]

    try:
        return run(
            sys.argv[1:] if argv is None else argv,
            session=session,
            prog="balena-release-update",
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
    finally:
        for each in opened:
            each.close()


if __name__ == "__main__":
    raise SystemExit(main())
