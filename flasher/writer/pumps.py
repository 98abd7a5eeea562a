"""The client's feeder threads: what goes down the pipes to the helper besides the request.

`StreamPump` copies a decompressed stream into the helper's image pipe; `GrowthPump` tells the
helper what a decoder has written so far into the file it follows (flasher.writer.growing).
Each keeps the first decoding error, which the client reports in place of the helper's
"the stream ended early". Never prints; imports no Qt.
"""

from __future__ import annotations

import os
import threading

from flasher.errors import Cancelled, FlasherError, ImageError
from flasher.events import CancelToken
from flasher.writer.growing import Growth, pump_growth
from flasher.writer.job import StreamOpener, stream_readinto

PIPE_BYTES = 1024 * 1024


class _Pump(threading.Thread):
    """A thread that owns the write end of a pipe to the helper and keeps the first error."""

    def __init__(self, name: str, fd: int, cancel: CancelToken):
        super().__init__(name=name, daemon=True)
        self._fd = fd
        self._cancel = cancel
        self._lock = threading.Lock()
        self.error: FlasherError | None = None

    def close(self) -> None:
        """Release the pipe (once): when never started, or after the helper has ended."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class StreamPump(_Pump):
    """Copies a decompressed stream into the helper's pipe; keeps the first decoding error."""

    def __init__(self, open_stream: StreamOpener, size_bytes: int, fd: int, cancel: CancelToken):
        super().__init__("flasher-stream-pump", fd, cancel)
        self._open = open_stream
        self._size = size_bytes

    def run(self) -> None:
        buf = bytearray(PIPE_BYTES)
        view = memoryview(buf)
        left = self._size
        try:
            with self._open() as stream:
                readinto = stream_readinto(stream)
                while left > 0 and not self._cancel.cancelled:
                    n = readinto(view[: min(len(view), left)])
                    if n == 0:
                        break
                    done = 0
                    while done < n:
                        done += os.write(self._fd, view[done:n])
                    left -= n
        except FlasherError as err:
            self.error = err
        except BrokenPipeError:
            pass  # the helper stopped reading: every target already failed or was cancelled
        except OSError as err:
            self.error = ImageError("<stream>", f"reading the image failed: {err.strerror}")
        finally:
            # After a cancel the pipe stays open until the helper is done, so the helper learns
            # of the cancel from the socket rather than from a stream that merely ended early.
            if not self._cancel.cancelled:
                self.close()


class GrowthPump(_Pump):
    """Tells the helper, over a pipe, what the decoder has written; keeps the decoding error."""

    def __init__(self, growth: Growth, fd: int, cancel: CancelToken):
        super().__init__("flasher-growth-pump", fd, cancel)
        self._growth = growth

    def run(self) -> None:
        try:
            pump_growth(self._growth, self._fd, self._cancel)
        except Cancelled:
            return  # the pipe stays open: the helper learns of the cancel from the socket
        except FlasherError as err:
            self.error = err
        except OSError:
            pass  # the helper stopped reading: every target already failed or was cancelled
        self.close()
