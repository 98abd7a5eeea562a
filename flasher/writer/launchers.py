"""How the unprivileged app starts the writer helper: pkexec, directly as root, or in-process.

Every launcher hands the helper one end of a socketpair as its stdin, which is all pkexec keeps
(it drops the environment and every other fd). Imports only the standard library and
flasher.errors; the protocol's modules load when a helper's hello is read, so `start_helper` can
start one before the rest of the writer's code has loaded.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from collections import deque
from typing import IO, TYPE_CHECKING, Protocol

from flasher.error_codes import Action
from flasher.errors import AuthorizationDenied, WriterError, WriterProtocolError

# Where packaging installs the helper; the polkit action's exec.path names this file.
INSTALLED_HELPER = "/usr/libexec/flasher/flasher-writer"
# pkexec and the helper are taken from these system places only, never from the user's PATH.
PKEXEC_PATHS = ("/usr/bin/pkexec", "/bin/pkexec")
SYSTEM_PREFIXES = ("/usr/", "/opt/")
# Everything the helper's environment holds: no tokens, keys or proxies reach the root process.
HELPER_PATH_ENV = "/usr/sbin:/usr/bin:/sbin:/bin"
POLKIT_ACTION = "io.balena.flasher.write"
# How an app already running as root starts the helper with its own interpreter: -P, because
# `-m` would otherwise import from the working folder first (root would run whatever
# `flasher/writer` the folder the command was started in holds); -S, no site-packages and none
# of their .pth hooks: the helper needs only the standard library and this package, whose
# folder is its PYTHONPATH (and it starts sooner). A frozen app recognises these arguments
# (packaging/pyinstaller).
DIRECT_HELPER_ARGS = ("-P", "-S", "-m", "flasher.writer")
PKEXEC_DISMISSED = 126
PKEXEC_NOT_AUTHORIZED = 127

if TYPE_CHECKING:  # the helper's engine is imported where a job runs in this process
    from flasher.events import CancelToken
    from flasher.writer.blockdev import TargetPolicy
    from flasher.writer.framing import LineReader


class WriterHandle(Protocol):
    def wait(self) -> int:
        """Wait for the helper to end and return its exit code."""
        ...

    def diagnostics(self) -> str:
        """The last lines the helper wrote to stderr, for error details."""
        ...


class Launcher(Protocol):
    def launch(self, sock: socket.socket) -> WriterHandle:
        """Start the helper on `sock` (its stdin); the launcher takes ownership of `sock`."""
        ...


def helper_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The helper's whole environment: a system PATH and the language, nothing the user set."""
    env = {"PATH": HELPER_PATH_ENV, "LANG": os.environ.get("LANG", "C.UTF-8")}
    env.update(extra or {})
    return env


def trusted_system_file(path: str, what: str) -> str:
    """`path` resolved, if it is a root-owned executable in a system location that no one but
    root can change (nor any folder above it); WriterError otherwise."""
    real = os.path.realpath(path)
    problem = None
    if not real.startswith(SYSTEM_PREFIXES) and os.path.dirname(real) not in ("/bin", "/sbin"):
        problem = "is not in a system location"
    else:
        node = real
        while problem is None:
            try:
                st = os.stat(node)
            except OSError:
                problem = "is not installed"
                break
            if st.st_uid != 0:
                problem = f"{node} is not owned by root"
            elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                problem = f"{node} can be changed by other users"
            if node == "/":
                break
            node = os.path.dirname(node)
    if problem is None and not os.access(real, os.X_OK):
        problem = "is not executable"
    if problem is not None:
        raise WriterError(
            f"The {what} at {path} cannot be trusted: {problem}.",
            hint="Reinstall Flasher from its package, or run the command as root.",
            path=path,
        )
    return real


class _ProcessHandle:
    def __init__(
        self,
        argv: list[str],
        sock: socket.socket,
        env: dict[str, str],
        *,
        new_session: bool = False,
        cwd: str | None = None,
    ) -> None:
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=sock.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                close_fds=True,
                start_new_session=new_session,
            )
        except OSError as err:
            raise WriterError(
                f"The writer helper could not be started: {err.strerror}.",
                hint="Reinstall Flasher.",
                argv0=argv[0],
            ) from err
        finally:
            sock.close()
        self._tail: deque[str] = deque(maxlen=20)
        stderr = self._proc.stderr
        if stderr is None:
            raise WriterError("The writer helper started without a stderr pipe.")
        self._drain = threading.Thread(target=self._read, args=(stderr,), daemon=True)
        self._drain.start()

    def _read(self, stream: IO[bytes]) -> None:
        # Drained on a thread so a chatty helper can never block on a full pipe.
        for raw in stream:
            self._tail.append(raw.decode("utf-8", "replace").rstrip())

    def wait(self) -> int:
        code = self._proc.wait()
        self._drain.join()
        return code

    def diagnostics(self) -> str:
        return "\n".join(self._tail)


class PkexecLauncher:
    """Runs the installed helper through pkexec, so polkit asks for the administrator.

    The helper is only ever the root-owned one installed in a system location (by default
    INSTALLED_HELPER, which the polkit action names); pkexec is the system's own. Neither is
    looked up on the user's PATH.
    """

    def __init__(self, helper_path: str = INSTALLED_HELPER, pkexec: str | None = None) -> None:
        self.helper_path = helper_path
        self.pkexec = pkexec

    def _pkexec(self) -> str:
        if self.pkexec is not None:
            return self.pkexec
        for candidate in PKEXEC_PATHS:
            if os.access(candidate, os.X_OK):
                return candidate
        raise WriterError(
            "pkexec is not installed, so Flasher cannot ask for permission to write drives.",
            hint="Install polkit (pkexec), or run the command as root (sudo).",
        )

    def launch(self, sock: socket.socket) -> WriterHandle:
        try:
            if not os.path.exists(self.helper_path):
                raise WriterError(
                    "The writer helper (flasher-writer) is not installed.",
                    hint="Reinstall Flasher, or run the command as root.",
                    path=self.helper_path,
                )
            helper_path = trusted_system_file(self.helper_path, "writer helper")
            pkexec = self._pkexec()
        except WriterError:
            sock.close()
            raise
        return _ProcessHandle([pkexec, helper_path], sock, helper_environment())


class DirectLauncher:
    """Runs the helper as a child process of an app that is already root (bench service)."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def launch(self, sock: socket.socket) -> WriterHandle:
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        # Its own session: a Ctrl-C or hangup of the terminal reaches only the app, which
        # cancels by closing the socket, so the helper still leaves unfinished cards unbootable.
        return _ProcessHandle(
            [self.python, *DIRECT_HELPER_ARGS],
            sock,
            helper_environment({"PYTHONPATH": package_parent}),
            new_session=True,
            cwd="/",
        )


class InProcessLauncher:
    """Runs `helper.run` on a thread with an injected policy: tests and regular files only."""

    def __init__(self, policy: TargetPolicy, *, cancel: CancelToken | None = None) -> None:
        self.policy = policy
        self.cancel = cancel

    def launch(self, sock: socket.socket) -> WriterHandle:
        return _ThreadHandle(sock, self.policy, self.cancel)


class _ThreadHandle:
    def __init__(
        self, sock: socket.socket, policy: TargetPolicy, cancel: CancelToken | None
    ) -> None:
        self._code = 1
        self._error = ""

        from flasher.writer import helper

        def serve() -> None:
            try:
                self._code = helper.run(sock, policy, cancel=cancel)
            except Exception as err:  # reported like a crashed subprocess
                self._error = f"{type(err).__name__}: {err}"
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name="flasher-writer", daemon=True)
        self._thread.start()

    def wait(self) -> int:
        self._thread.join()
        return self._code

    def diagnostics(self) -> str:
        return self._error


# A helper that `start_helper` started: our end of the socket it speaks on, and its process.
StartedHelper = tuple[socket.socket, WriterHandle]


def start_helper(launcher: Launcher) -> StartedHelper:
    """A helper started by `launcher` now, not yet greeted (`await_hello` reads its hello)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        return ours, launcher.launch(theirs)
    except BaseException:
        ours.close()
        raise


def end_started(started: StartedHelper) -> None:
    """End a helper that was started and never greeted (it exits when its socket closes)."""
    sock, handle = started
    sock.close()
    handle.wait()


def default_launcher() -> Launcher:
    """Directly when already root, else through pkexec."""
    return DirectLauncher() if os.geteuid() == 0 else PkexecLauncher()


def authorization_denied(code: int) -> AuthorizationDenied | None:
    """The error for pkexec's "dismissed" (126) and "not authorized" (127) exit codes."""
    if code == PKEXEC_DISMISSED:
        return AuthorizationDenied(
            "The request for administrator permission was dismissed.",
            hint="Run the command again and enter the administrator password.",
        )
    if code == PKEXEC_NOT_AUTHORIZED:
        return AuthorizationDenied(
            "Permission to write drives was refused.",
            hint="Ask an administrator, or run the command as root.",
        )
    return None


def await_hello(reader: LineReader, sock: socket.socket, handle: WriterHandle) -> None:
    """Read the started helper's first line: its hello, in this app's protocol version.

    A helper that ends before saying it (closing `sock`) raises why: authorization refused,
    or its exit code and diagnostics; one that speaks another version, WriterProtocolError.
    """
    from flasher.writer.protocol import MAX_EVENT_BYTES, PROTOCOL_VERSION, Hello, decode_event

    first = reader.read_line(MAX_EVENT_BYTES)
    if first is None:
        sock.close()
        code = handle.wait()
        raise authorization_denied(code) or WriterError(
            f"The writer helper exited before starting (exit code {code}).",
            hint="Reinstall Flasher if this happens again.",
            action=Action.SHOW_DETAILS,
            helper_exit_code=code,
            stderr=handle.diagnostics(),
        )
    hello = decode_event(first)
    if not isinstance(hello, Hello) or hello.v != PROTOCOL_VERSION:
        raise WriterProtocolError(
            f"The writer helper speaks protocol {getattr(hello, 'v', '?')}, "
            f"this app speaks {PROTOCOL_VERSION}.",
            hint="Reinstall Flasher so the app and its helper match.",
        )
