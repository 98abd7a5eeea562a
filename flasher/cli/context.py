"""Per-invocation state for CLI commands: output, the API session and the in-process sandbox."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flasher.cli.output import Output

if TYPE_CHECKING:
    from flasher.balena.session import BalenaSession
    from flasher.sandbox.server import SandboxServer


@dataclass
class CliContext:
    args: argparse.Namespace
    out: Output
    _sandbox: SandboxServer | None = field(default=None, init=False)
    _session: BalenaSession | None = field(default=None, init=False)

    def session(self) -> BalenaSession:
        """The balena API session: the in-process sandbox with --sandbox, else the real API."""
        if self._session is None:
            from flasher.balena.session import BalenaSession

            api_url = getattr(self.args, "api_url", None)
            token = getattr(self.args, "token", None)
            if getattr(self.args, "sandbox", False):
                from flasher.sandbox.server import SANDBOX_TOKEN, SandboxServer

                self._sandbox = SandboxServer.start()
                api_url = self._sandbox.url
                # The sandbox accepts any token; never send it the user's real one.
                token = SANDBOX_TOKEN
            self._session = BalenaSession.from_environment(api_url=api_url, token=token)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
