"""The allocation map of a local raw image, computed on a thread while the rest of a flash starts.

The first tenths of a second of a flash go to loading code and finding the drives, while the
disk that holds the image sits idle; the map reads that image's partition table and filesystem
metadata (about 9 MB for the 1.2 GB test image; clean journals are not read). `EarlyMap`
starts that work at once on a thread of its own; `prepare` takes the result only if it maps the
very file it opened, unchanged since (same device, inode, size, modification and change
times), and maps the image itself otherwise. A file that cannot be mapped here leaves the error
to `prepare`, which raises it as it always does.

Core: never prints, imports no Qt.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from flasher.errors import FlasherError

if TYPE_CHECKING:  # the image engine loads on the map's thread, beside the rest of the flash
    from flasher.image.byteio import FileReader
    from flasher.image.sparse import AllocationMap

FileIdentity = tuple[int, int, int, int, int]


def file_identity(fd: int) -> FileIdentity:
    """What tells one version of a file from another: device, inode, size, mtime, ctime."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class EarlyMap:
    """`allocation_map` of the raw image at `path` (nothing written whole), started now; a
    compressed file is left alone after a look at its magic (sniffing it whole, or decoding its
    head, is the job's to do once), and so is a path that opens no file (a URL). With
    `bmap_path` the map is that .bmap's, its range checksums checked when it has them all (what
    proves a raw image): the longest part of a flash with `--bmap` before the first write."""

    def __init__(
        self, path: str | os.PathLike[str], *, bmap_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path).resolve()
        self.bmap_path = None if bmap_path is None else Path(bmap_path).resolve()
        self._verified = False
        self._map: AllocationMap | None = None
        self._identity: FileIdentity | None = None
        self._thread = threading.Thread(target=self._run, name="flasher-early-map", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from flasher.image.bmap import read_bmap
        from flasher.image.byteio import FileReader
        from flasher.image.partitions import read_partition_table
        from flasher.image.sources import packed_kind
        from flasher.image.sparse import allocation_map

        try:
            io = FileReader(self.path)
            try:
                if packed_kind(io.pread(16, 0)) is not None:
                    return  # its map comes from the decoded image
                identity = file_identity(io.fd)
                name = str(self.path)
                bmap = self.bmap_path
                verify = bmap is not None and read_bmap(bmap).checksummed
                self._map = allocation_map(
                    io,
                    read_partition_table(io, name=name),
                    bmap_path=bmap,
                    verify_bmap_checksums=verify,
                    name=name,
                )
                self._identity, self._verified = identity, verify
            finally:
                io.close()
        except (FlasherError, OSError):
            return  # prepare maps the image itself and says what is wrong

    def take(
        self,
        path: Path,
        io: FileReader,
        *,
        bmap_path: str | os.PathLike[str] | None = None,
        verified: bool = False,
    ) -> AllocationMap | None:
        """The map, if it was made of the file `io` has open at `path`, unchanged since, from
        the same .bmap (`bmap_path`) and with its checksums checked if `verified` is asked for;
        else None (the caller maps it)."""
        self._thread.join()
        if self._map is None or path.resolve() != self.path:
            return None
        if (None if bmap_path is None else Path(bmap_path).resolve()) != self.bmap_path:
            return None
        if verified and not self._verified:
            return None
        if file_identity(io.fd) != self._identity:
            return None
        return self._map
