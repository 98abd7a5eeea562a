"""Tunes glibc's allocator for a process that streams large decoded buffers through its threads.

Decoders hand their output over in new multi-MiB `bytes` objects, made on one thread and freed
on another. With glibc's defaults each thread allocates from an arena of its own and a
multi-MiB allocation is a fresh mmap, or heap memory trimmed back to the kernel once freed: the
kernel then maps, zeroes and faults in every page of every piece again. For a parallel .xz
decode of the 1.2 GB test image that was ~300,000 page faults and ~1 s of system time, and the
arenas held freed pieces besides. One arena, pieces up to 32 MiB taken from the heap, and up to
64 MiB of free heap kept make the pieces reuse the same memory: about 10 times fewer faults,
a faster decode and a lower peak (see docs/performance.md).

Called once at the start of the command-line and desktop entry points, before any thread
allocates: arenas already made stay. The free heap kept for the next pieces outlives the
stream: `release_free_memory` gives it back once no more come (a bench station's image is
prepared once, then every card is written from the file, so those 64 MiB would sit idle beside
the writer's buffers all day). Both do nothing off glibc. Imports only the standard library
(ctypes, when called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

# mallopt's parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENAS = 1
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest dynamic threshold
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    import ctypes  # not needed by --help and usage errors

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  # glibc's own function: not musl or another libc
    except (OSError, AttributeError):
        return None
    return libc


def tune_for_streaming() -> bool:
    """Set the allocator's options for large hand-over buffers; whether glibc took them all."""
    import ctypes

    libc = _glibc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = (
        (_M_ARENA_MAX, ARENAS),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
    )
    return all(mallopt(option, value) == 1 for option, value in settings)


def release_free_memory() -> bool:
    """Give the heap's free memory back to the kernel (glibc's malloc_trim); whether any was."""
    import ctypes

    libc = _glibc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return bool(trim(0))
