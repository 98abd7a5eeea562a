"""Message framing on the writer socket: newline-terminated lines, with fds passed by SCM_RIGHTS.

Standard library plus flasher.errors and flasher.writer.protocol only (the root helper uses it).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from flasher.writer.protocol import WriteRequest, encode_request
from flasher.writer.strictjson import fail


class LineReader:
    """Reads newline-terminated messages from a stream socket, with any passed fds.

    File descriptors arriving with the bytes (SCM_RIGHTS) are collected in `fds`; the caller
    owns and closes them.
    """

    def __init__(self, sock: socket.socket, *, max_fds: int = 0) -> None:
        self._sock = sock
        self._max_fds = max_fds
        self._buf = bytearray()
        self.fds: list[int] = []

    def read_line(self, limit: int) -> bytes | None:
        """The next line without its newline; None at a clean EOF between lines."""
        while True:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                line = bytes(self._buf[:newline])
                del self._buf[: newline + 1]
                if len(line) > limit:
                    fail(f"message of {len(line)} bytes exceeds the {limit}-byte limit")
                return line
            if len(self._buf) > limit:
                fail(f"message exceeds the {limit}-byte limit")
            if self._max_fds - len(self.fds) > 0:
                data, fds, _flags, _addr = socket.recv_fds(
                    self._sock, 1024 * 1024, self._max_fds - len(self.fds)
                )
                self.fds.extend(fds)
            else:
                data = self._sock.recv(1024 * 1024)
            if not data:
                if self._buf:
                    fail("the stream ended in the middle of a message")
                return None
            self._buf += data


def send_request(sock: socket.socket, request: WriteRequest, fds: Sequence[int]) -> None:
    """Send the request line with its fds attached to the first bytes."""
    if len(fds) != request.fd_count:
        raise ValueError(f"the request needs {request.fd_count} fds, got {len(fds)}")
    line = encode_request(request)
    sent = socket.send_fds(sock, [line], list(fds))
    if sent < len(line):
        sock.sendall(line[sent:])
