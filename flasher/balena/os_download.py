"""A streaming OS image download from the balena API's /download endpoint.

Imports requests; no other I/O of its own. flasher.download stores these bytes in the cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import TracebackType

import requests


class OsDownload:
    """A streaming /download answer. Iterate `iter_bytes()`, then close (or use `with`).

    `size_bytes` is how many bytes `iter_bytes()` yields when the server says so (None when the
    body is content-encoded, since the decoded size is then unknown).
    """

    def __init__(self, response: requests.Response, *, device_type: str, version: str) -> None:
        self.response = response
        self.device_type = device_type
        self.version = version
        self.content_type = response.headers.get("Content-Type", "")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        length = response.headers.get("Content-Length", "")
        self.size_bytes = int(length) if length.isdigit() and encoding == "identity" else None

    @property
    def filename(self) -> str | None:
        """The file name from Content-Disposition, when the server names one."""
        disposition = self.response.headers.get("Content-Disposition", "")
        match = re.search(r'filename="?([^";]+)"?', disposition)
        return match.group(1) if match else None

    def iter_bytes(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The body, decoded from any Content-Encoding, in chunks of up to `chunk_size`."""
        yield from self.response.iter_content(chunk_size)

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> OsDownload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
