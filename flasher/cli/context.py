"""Per-invocation state for CLI commands: output, the API session and the in-process sandbox."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from flasher.cli.output import Output
from flasher.errors import Cancelled, FlasherError
from flasher.models import Secret

if TYPE_CHECKING:
    from flasher.balena.session import BalenaSession
    from flasher.sandbox.server import SandboxServer


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


@dataclass
class CliContext:
    args: argparse.Namespace
    out: Output
    _sandbox: SandboxServer | None = field(default=None, init=False)
    _session: BalenaSession | None = field(default=None, init=False)
    _owned: list[_Closable] = field(default_factory=list, init=False)

    @property
    def sandbox(self) -> SandboxServer | None:
        """The in-process sandbox, once `session()` started it."""
        return self._sandbox

    def own(self, thing: _C) -> _C:
        """Close `thing` with the context."""
        self._owned.append(thing)
        return thing

    def session(self) -> BalenaSession:
        """The balena API session: the in-process sandbox with --sandbox, else the real API."""
        if self._session is None:
            from flasher.balena.session import BalenaSession

            api_url = getattr(self.args, "api_url", None)
            token = getattr(self.args, "token", None)
            if getattr(self.args, "sandbox", False):
                from flasher.sandbox.server import SandboxServer

                self._sandbox = SandboxServer.start()
                # Only an explicit --token goes to the sandbox (any token logs in there); the
                # saved login and the environment's tokens are for the real API.
                self._session = BalenaSession(self._sandbox.url, Secret(token) if token else None)
            else:
                self._session = BalenaSession.from_environment(api_url=api_url, token=token)
        return self._session

    def require_typed_yes(self, refusal: str, question: str, declined: str) -> None:
        """Go on only after the user types "yes"; without a terminal (or with --json) refuse
        with `refusal` and point at --yes."""
        if self.out.json_mode or not sys.stdin.isatty():
            raise FlasherError(refusal, hint="Add --yes to confirm.")
        if input(question).strip().lower() != "yes":
            raise Cancelled(declined)

    @property
    def cache_origin(self) -> str | None:
        """How downloads from this API are keyed in the cache: the sandbox always serves the
        same images whatever port it listens on."""
        return "sandbox:" if getattr(self.args, "sandbox", False) else None

    def close(self) -> None:
        while self._owned:
            self._owned.pop().close()
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
