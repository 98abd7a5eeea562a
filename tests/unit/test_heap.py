"""flasher.heap: after tuning, a thread's multi-MiB buffer comes from the one shared heap, and the
free heap kept for the next buffers goes back to the kernel when released."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter: the tuning must come before any thread allocates, and pytest's
# own threads would have made arenas already. mallinfo2 counts the main arena and the bytes of
# every mmapped chunk.
PROBE = textwrap.dedent(
    """
    import ctypes, json, sys, threading

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    tuned = None
    if sys.argv[1] == "tuned":
        from flasher.heap import tune_for_streaming
        tuned = tune_for_streaming()
    before = libc.mallinfo2()
    held = []
    worker = threading.Thread(target=lambda: held.append(bytearray(8 << 20)))
    worker.start()
    worker.join()
    after = libc.mallinfo2()
    print(json.dumps({
        "tuned": tuned,
        "mmapped": after.hblkhd - before.hblkhd,
        "main_arena": after.arena - before.arena,
    }))
    """
)
MiB = 1 << 20


def _probe(mode: str) -> dict[str, int | bool | None]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    result: dict[str, int | bool | None] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def glibc() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("needs glibc 2.33 or later (mallinfo2)")


@pytest.mark.usefixtures("glibc")
def test_untuned_threads_map_large_buffers_of_their_own() -> None:
    result = _probe("default")
    assert isinstance(result["mmapped"], int) and result["mmapped"] >= 8 * MiB
    assert isinstance(result["main_arena"], int) and result["main_arena"] < 8 * MiB


@pytest.mark.usefixtures("glibc")
def test_tuned_threads_take_large_buffers_from_the_shared_heap() -> None:
    result = _probe("tuned")
    assert result["tuned"] is True
    assert result["mmapped"] == 0
    assert isinstance(result["main_arena"], int) and result["main_arena"] >= 8 * MiB


# Tuned, a freed 48 MiB stays in the heap (under the 64 MiB trim threshold) until it is released.
RELEASE_PROBE = textwrap.dedent(
    """
    import json
    from pathlib import Path

    from flasher.heap import release_free_memory, tune_for_streaming

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    tuned = tune_for_streaming()
    pieces = [bytearray(1 << 20) for _ in range(48)]
    held = rss()
    del pieces
    freed = rss()
    released = release_free_memory()
    print(json.dumps({"tuned": tuned, "held": held, "freed": freed,
                      "released": released, "after": rss()}))
    """
)


@pytest.mark.usefixtures("glibc")
def test_releasing_gives_the_kept_free_heap_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    assert result["tuned"] is True
    assert result["held"] - result["freed"] < 8 * MiB  # freed, but kept for the next pieces
    assert result["released"] is True
    assert result["freed"] - result["after"] >= 40 * MiB
