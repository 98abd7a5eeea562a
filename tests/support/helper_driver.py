"""Drive the real writer helper (`python -m flasher.writer`, BlockDevicePolicy) as a subprocess
with hand-made request lines, the way an attacker or a broken client would.

The helper gets one end of a socketpair as its stdin, exactly as the launchers give it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]


def running_helpers() -> list[psutil.Process]:
    """This process's descendants that run the writer helper (`python -m flasher.writer`)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # it may end while looked at
            if "flasher.writer" in " ".join(child.cmdline()):
                found.append(child)
    return found


class HelperProcess:
    """One helper subprocess and the client end of its socket."""

    def __init__(self, *, memory_limit_bytes: int | None = None) -> None:
        """Started in a process group of its own (as a terminal's foreground job would be),
        optionally with its address space capped."""

        def limit() -> None:
            if memory_limit_bytes is not None:
                resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))

        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flasher.writer"],
            stdin=theirs.fileno(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            process_group=0,
            preexec_fn=limit,
        )
        theirs.close()
        self._buffer = b""
        hello = self.event()
        assert hello == {"event": "hello", "v": 2}, hello

    def send(self, line: bytes, fds: Sequence[int] = ()) -> None:
        sent = socket.send_fds(self.sock, [line], list(fds)) if fds else 0
        self.sock.sendall(line[sent:])

    def request(self, data: dict[str, Any], fds: Sequence[int]) -> None:
        self.send((json.dumps(data) + "\n").encode(), fds)

    def event(self, timeout_s: float = 60.0) -> dict[str, Any] | None:
        """The next event, or None once the helper closed its end."""
        self.sock.settimeout(timeout_s)
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        value: dict[str, Any] = json.loads(line)
        return value

    def events_until_end(self) -> list[dict[str, Any]]:
        out = []
        while (event := self.event()) is not None:
            out.append(event)
            if event["event"] == "end":
                break
        return out

    def finish(self, timeout_s: float = 60.0) -> tuple[int, str]:
        """Close the client end; the helper's exit code and stderr."""
        self.sock.close()
        _out, err = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, err.decode("utf-8", "replace")


def target_entry(path: str, dev: str, size_bytes: int, serial: str = "") -> dict[str, Any]:
    return {"path": path, "dev": dev, "size": size_bytes, "serial": serial}


def write_request(
    targets: list[dict[str, Any]],
    size_bytes: int,
    *,
    source: str = "fd",
    chunk_bytes: int = 4 * 1024 * 1024,
) -> dict[str, Any]:
    return {
        "v": 2,
        "op": "write",
        "targets": targets,
        "image": {"size": size_bytes, "source": source, "sha256": None},
        "ranges": None,
        "overlay": [],
        "options": {"verify": True, "write_all": False, "chunk_bytes": chunk_bytes},
    }
