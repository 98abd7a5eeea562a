#!/usr/bin/env python3
"""Where a flash spends its time: one cold-cache `flasher flash` with each phase's start time.

    sudo python3 benchmarks/flash_timeline.py SOURCE [--targets 1] [--runs 3] [--no-verify]

Attaches its own loop devices (1536 MiB, blank), drops the page cache, runs flasher with --json
and timestamps every phase event as it arrives; prints, per run, the seconds spent from the
start to the first phase (interpreter start and imports), then in each phase, then in the
trailing sync. Needs root; removes its loop devices and scratch files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchlib.cases import BENCH_DIR
from benchlib.system import drop_caches, loop_devices, require_root

REPO = BENCH_DIR.parent
LOOP_BYTES = 1536 * 1024 * 1024
STARTUP = "start → first event"


def one_run(argv: list[str], env: dict[str, str]) -> list[tuple[str, float]]:
    """(step, seconds) in order: start-up, each job-level or first-target phase, sync."""
    marks: list[tuple[str, float]] = []
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout is not None
    first_target: str | None = None
    for line in proc.stdout:
        now = time.perf_counter() - started
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") != "phase" or event.get("phase") == "done":
            continue
        target = event.get("target")
        if target is not None:
            first_target = first_target or target
            if target != first_target:
                continue
        marks.append((event["phase"], now))
    code = proc.wait()
    ended = time.perf_counter() - started
    os.sync()
    synced = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"flasher exited with {code}")
    steps = [(STARTUP, marks[0][1] if marks else ended)]
    for (name, at), (_next, until) in zip(marks, [*marks[1:], ("end", ended)], strict=True):
        steps.append((name, until - at))
    steps.append(("sync after exit", synced - ended))
    steps.append(("total", synced))
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--targets", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--flasher", default=f"{sys.executable} -m flasher")
    args = parser.parse_args(argv)
    require_root()
    scratch = Path(tempfile.mkdtemp(prefix="flasher-timeline-", dir="/var/tmp"))
    runs: list[list[tuple[str, float]]] = []
    try:
        with loop_devices(scratch, args.targets, LOOP_BYTES) as devices:
            for _ in range(args.runs):
                cache = scratch / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir()
                env = dict(os.environ, PYTHONPATH=str(REPO), FLASHER_CACHE_DIR=str(cache))
                cmd = [*args.flasher.split(), "--json", "flash", str(args.source), "--yes"]
                for dev in devices:
                    dev.reset()
                    cmd += ["--target", dev.path]
                if args.no_verify:
                    cmd.append("--no-verify")
                drop_caches()
                runs.append(one_run(cmd, env))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    names = [name for name, _ in runs[0]]
    print(f"| step | {' | '.join(f'run {n + 1} s' for n in range(len(runs)))} | median s |")
    print("|---|" + "---:|" * (len(runs) + 1))
    for i, name in enumerate(names):
        values = [r[i][1] for r in runs if i < len(r) and r[i][0] == name]
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {cells} | {statistics.median(values):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
