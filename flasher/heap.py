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
allocates: arenas already made stay. Does nothing off glibc (or where mallopt is missing).
Imports only the standard library (ctypes, when called).
"""

from __future__ import annotations

# mallopt's parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENAS = 1
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest dynamic threshold
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def tune_for_streaming() -> bool:
    """Set the allocator's options for large hand-over buffers; whether glibc took them all."""
    import ctypes  # not needed by --help and usage errors

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  # glibc's own function: not musl or another libc
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = (
        (_M_ARENA_MAX, ARENAS),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
    )
    return all(mallopt(option, value) == 1 for option, value in settings)
