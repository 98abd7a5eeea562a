#!/usr/bin/env python3
"""Cards, not one disk: flasher on sets of throttled loop devices that behave like SD cards.

    sudo python3 benchmarks/cards_bench.py --image DIR/small.img [--source FILE]
        [--set 4x40 --set 1x10+3x40 …] [--runs 3] [--mode flash|bench|both]

Each card is a loop device limited to its own write and read speed with the cgroup v1 blkio
throttle (see benchlib/cards.py); the flasher process and its writer helper run inside that
group. Every set is compared with one card alone at each of its speeds, in the same run.
`flash` mode times `flasher --json flash SOURCE --target … --yes` from cold cache until a
trailing `sync`: each card's own time (its target_result), the total, the peak RSS of the
process tree, and every card checked partition by partition against the image with sfdisk
offsets. `bench` mode starts `flasher --json bench SOURCE --slot … --bus loop --once N`
with empty slots, inserts all the cards when the station is ready, and reports cards per hour
(from each card's time in the station) against what the cards' own speeds allow (each card
writes and reads back its mapped bytes). Results go to a new folder under --results
(runs.json, results.md). Needs root; touches only the loop devices, scratch files and the
cgroup it creates, and removes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from benchlib import checks
from benchlib.cards import MB, BlkioGroup, CardSet, CardSlot, alone_sets, blkio_group
from benchlib.cases import BENCH_DIR
from benchlib.system import (
    SECTOR_BYTES,
    LoopDevice,
    TreeRss,
    compile_package,
    drop_caches,
    flasher_environ,
    loop_devices,
    require_root,
    run_measured,
)

REPO = BENCH_DIR.parent
DEFAULT_SETS = ("4x40", "8x30", "16x15", "1x10+3x40")
CARD_SLACK_BYTES = 16 * 1024 * 1024
BENCH_TIMEOUT_S = 1800


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="the raw image (for checks)")
    parser.add_argument("--source", type=Path, help="what is flashed (default: --image)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        metavar="SET",
        help=f"COUNTxMBPS[+COUNTxMBPS…], repeatable (default: {' '.join(DEFAULT_SETS)})",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of every set (default 3)")
    parser.add_argument("--mode", choices=("flash", "bench", "both"), default="both")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--scratch", type=Path, help="folder for the cards' backing files")
    parser.add_argument(
        "--flasher",
        default=f"{sys.executable} -m flasher",
        help="how to run flasher (default: %(default)s, from this checkout)",
    )
    args = parser.parse_args(argv)
    try:
        args.card_sets = [CardSet.parse(s) for s in (args.sets or DEFAULT_SETS)]
    except ValueError as err:
        parser.error(str(err))
    args.source = args.source or args.image
    return args


def flasher_env(scratch: Path, tag: str) -> dict[str, str]:
    env = flasher_environ()
    for var, sub in (("FLASHER_CACHE_DIR", "cache"), ("FLASHER_CONFIG_DIR", "config")):
        folder = scratch / f"{sub}-{tag}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env[var] = str(folder)
    return env


def json_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


class CardsBench:
    def __init__(self, args: argparse.Namespace, scratch: Path, group: BlkioGroup) -> None:
        self.args = args
        self.scratch = scratch
        self.group = group
        self.flasher = args.flasher.split()
        self.image_bytes = args.image.stat().st_size
        self.regions = checks.partition_regions(args.image)
        self.expected = checks.digests(args.image, self.regions, self.image_bytes)
        # The bench refuses a source without a checksum of its own unless given its SHA-256.
        with open(args.source, "rb") as f:
            self.source_sha256 = hashlib.file_digest(f, "sha256").hexdigest()

    def _throttle(self, devices: Sequence[LoopDevice], cards: CardSet) -> None:
        self.group.clear()
        for dev, speed in zip(devices, cards.speeds_mb_s, strict=True):
            self.group.limit(dev.path, speed * MB)

    def _check(self, devices: Sequence[LoopDevice]) -> list[dict[str, object]]:
        drop_caches()
        return [
            checks.compare_target(d.path, self.regions, self.expected, self.image_bytes)
            for d in devices
        ]

    def flash(self, devices: list[LoopDevice], cards: CardSet, run: int) -> dict[str, Any]:
        used = devices[: cards.cards]
        for dev in used:
            dev.reset()
        self._throttle(used, cards)
        env = flasher_env(self.scratch, "flash")
        argv = [*self.flasher, "--json", "flash", str(self.args.source), "--yes"]
        for dev in used:
            argv += ["--target", dev.path]
        drop_caches()
        before = [d.sectors_written() for d in used]
        m = run_measured(self.group.wrap(argv), env=env, cwd=REPO)
        after = [d.sectors_written() for d in used]
        results = {e["target"]: e for e in json_events(m.stdout) if e["event"] == "target_result"}
        row: dict[str, Any] = {
            "mode": "flash",
            "set": cards.name,
            "run": run,
            "seconds": m.seconds,
            "returncode": m.returncode,
            "peak_tree_rss_bytes": m.peak_tree_rss_bytes,
            "sampled_tree_rss_bytes": m.sampled_tree_rss_bytes,
            "max_process_rss_bytes": m.max_process_rss_bytes,
            "cpu_seconds": m.cpu_seconds,
            "load_avg_1min": os.getloadavg()[0],
            "cards": [
                {
                    "device": d.path,
                    "speed_mb_s": speed,
                    "seconds": results.get(d.path, {}).get("seconds"),
                    "ok": bool(results.get(d.path, {}).get("ok")),
                    "verified": bool(results.get(d.path, {}).get("verified")),
                    "bytes_written": (a - b) * SECTOR_BYTES,
                }
                for d, speed, a, b in zip(used, cards.speeds_mb_s, after, before, strict=True)
            ],
        }
        if m.returncode != 0:
            row["stderr"] = m.stderr[-3000:]
        else:
            for card, check in zip(row["cards"], self._check(used), strict=True):
                card["check_ok"] = check["ok"]
        return row

    def bench(self, devices: list[LoopDevice], cards: CardSet, run: int) -> dict[str, Any]:
        used = devices[: cards.cards]
        slots = [CardSlot(d.path, d.backing) for d in used]
        for slot in slots:
            slot.empty()
        self._throttle(used, cards)
        env = flasher_env(self.scratch, "bench")
        report_path = self.scratch / "bench-report.jsonl"
        report_path.unlink(missing_ok=True)
        argv = [*self.flasher, "--json", "bench", str(self.args.source), "--bus", "loop"]
        for dev in used:
            argv += ["--slot", dev.path]
        argv += ["--once", str(cards.cards), "--yes", "--report", str(report_path)]
        argv += ["--sha256", self.source_sha256]
        drop_caches()
        proc = subprocess.Popen(
            self.group.wrap(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
            text=True,
        )
        rss = TreeRss(proc.pid)
        rss.start()
        stderr: list[str] = []
        drain = threading.Thread(target=lambda: stderr.extend(proc.stderr or ()), daemon=True)
        drain.start()
        events: list[tuple[float, dict[str, Any]]] = []
        inserted_at: float | None = None
        card_bytes = devices[0].size_bytes
        watchdog = threading.Timer(BENCH_TIMEOUT_S, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout or ():
                found = json_events(line)
                if not found:
                    continue
                events.append((time.perf_counter(), found[0]))
                if found[0]["event"] == "station_ready" and inserted_at is None:
                    inserted_at = time.perf_counter()
                    for slot in slots:
                        slot.insert(card_bytes)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            watchdog.cancel()
            rss.stop()
            drain.join(timeout=5)
        results = [e for _, e in events if e["event"] == "card_result"]
        phases: dict[str, dict[str, float]] = {}  # per card: first time of each phase
        for at, e in events:
            if e["event"] in ("card_inserted", "phase", "card_result") and e.get("device"):
                name = e.get("phase") or e["event"]
                since = at - inserted_at if inserted_at else 0.0
                phases.setdefault(e["device"], {}).setdefault(name, round(since, 3))
        ends = [t for t, e in events if e["event"] == "card_result"]
        by_device = {r.get("device"): r for r in results}
        row: dict[str, Any] = {
            "mode": "bench",
            "set": cards.name,
            "run": run,
            "returncode": proc.returncode,
            "seconds": (max(ends) - inserted_at) if ends and inserted_at else None,
            "peak_tree_rss_bytes": rss.peak_bytes,
            "sampled_tree_rss_bytes": rss.sampled_bytes,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "load_avg_1min": os.getloadavg()[0],
            "cards": [
                {
                    "device": d.path,
                    "speed_mb_s": speed,
                    "seconds": by_device.get(d.path, {}).get("seconds"),
                    "write_seconds": by_device.get(d.path, {}).get("write_seconds"),
                    "bytes_written": by_device.get(d.path, {}).get("bytes_written"),
                    "ok": bool(by_device.get(d.path, {}).get("ok")),
                    "verified": bool(by_device.get(d.path, {}).get("verified")),
                    "phases_s": phases.get(d.path, {}),
                }
                for d, speed in zip(used, cards.speeds_mb_s, strict=True)
            ],
        }
        if proc.returncode != 0:
            row["stderr"] = "".join(stderr)[-3000:]
        elif all(c["ok"] for c in row["cards"]):
            for card, check in zip(row["cards"], self._check(used), strict=True):
                card["check_ok"] = check["ok"]
        return row


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mode and set: median total, each speed's median card time and its ratio to the card
    alone at that speed, peak RSS, and whether every card of every run verified."""
    alone: dict[tuple[str, int], float] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["mode"], row["set"]), []).append(row)
    for (mode, name), runs in groups.items():
        if name.startswith("1x") and "+" not in name:
            times = [c["seconds"] for r in runs for c in r["cards"] if c["seconds"]]
            if (median := _median(times)) is not None:
                alone[mode, int(name[2:])] = median
    out = []
    for (mode, name), runs in groups.items():
        speeds = sorted({c["speed_mb_s"] for r in runs for c in r["cards"]}, reverse=True)
        per_speed = {}
        for speed in speeds:
            times = [
                c["seconds"]
                for r in runs
                for c in r["cards"]
                if c["speed_mb_s"] == speed and c["seconds"]
            ]
            median, base = _median(times), alone.get((mode, speed))
            per_speed[speed] = {
                "median_card_s": median,
                "slowest_card_s": max(times, default=None),
                "vs_alone": (median / base) if median and base else None,
            }
        cards = [c for r in runs for c in r["cards"]]
        item: dict[str, Any] = {
            "mode": mode,
            "set": name,
            "runs": len(runs),
            "median_total_s": _median([r["seconds"] for r in runs if r["seconds"]]),
            "per_speed": per_speed,
            "peak_tree_rss_mb": max(r["peak_tree_rss_bytes"] for r in runs) / MB,
            "sampled_tree_rss_mb": max(r.get("sampled_tree_rss_bytes", 0) for r in runs) / MB,
            "median_cpu_s": _median([r["cpu_seconds"] for r in runs if "cpu_seconds" in r]),
            "all_verified": all(c["ok"] and c["verified"] and c.get("check_ok") for c in cards),
            "load_avg_1min": [round(r["load_avg_1min"], 1) for r in runs],
        }
        if mode == "bench":
            item.update(_cards_per_hour(runs))
        out.append(item)
    return out


def _cards_per_hour(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A station whose slots are refilled at once: each slot turns out 3600 / (card time)
    cards an hour. The cards' own bound: each writes its bytes and reads them back."""
    measured, bound = [], []
    for r in runs:
        cards = r["cards"]
        if not all(c["seconds"] and c["bytes_written"] for c in cards):
            continue
        measured.append(sum(3600 / c["seconds"] for c in cards))
        bound.append(sum(3600 / (2 * c["bytes_written"] / (c["speed_mb_s"] * MB)) for c in cards))
    m, b = _median(measured), _median(bound)
    return {
        "cards_per_hour": m,
        "cards_per_hour_at_card_speed": b,
        "share_of_card_speed": (m / b) if m and b else None,
    }


def markdown(summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | set | runs | total s | card s (median) by speed | vs alone | cards/h "
        "(vs card speed) | peak RSS MB (sampled) | CPU s | all verified | load |",
        "|---|---|---:|---:|---|---|---|---:|---:|---|---|",
    ]
    for s in summaries:
        speeds = s["per_speed"]
        times = ", ".join(
            f"{sp} MB/s: {v['median_card_s']:.2f}" for sp, v in speeds.items() if v["median_card_s"]
        )
        ratios = ", ".join(
            f"{sp}: {v['vs_alone']:.2f}×" for sp, v in speeds.items() if v["vs_alone"]
        )
        per_hour = "-"
        if s.get("cards_per_hour"):
            share = s["share_of_card_speed"]
            per_hour = f"{s['cards_per_hour']:.0f} ({share:.0%})" if share else "?"
        total = f"{s['median_total_s']:.2f}" if s["median_total_s"] else "-"
        cpu = f"{s['median_cpu_s']:.1f}" if s["median_cpu_s"] is not None else "-"
        lines.append(
            f"| {s['mode']} | {s['set']} | {s['runs']} | {total} | {times} | {ratios or '-'} "
            f"| {per_hour} | {s['peak_tree_rss_mb']:.0f} ({s['sampled_tree_rss_mb']:.0f}) | {cpu} "
            f"| {'yes' if s['all_verified'] else 'NO'} "
            f"| {', '.join(map(str, s['load_avg_1min']))} |"
        )
    return "\n".join(lines)


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_root()
    signal.signal(signal.SIGTERM, _terminate)
    compile_package(REPO / "flasher")
    sets = alone_sets(args.card_sets) + [s for s in args.card_sets if s.cards > 1]
    modes = ("flash", "bench") if args.mode == "both" else (args.mode,)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="flasher-cards-", dir="/var/tmp"))
    scratch.mkdir(parents=True, exist_ok=True)
    out_dir = args.results / ("cards-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    out_dir.mkdir(parents=True)
    card_bytes = -(-args.image.stat().st_size // (1 << 20)) * (1 << 20) + CARD_SLACK_BYTES
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "image": str(args.image),
        "source": str(args.source),
        "sets": [s.name for s in sets],
        "runs": args.runs,
        "card_bytes": card_bytes,
        "cpus": os.cpu_count(),
    }
    rows: list[dict[str, Any]] = []
    try:
        with (
            blkio_group(f"flasher-cards-{os.getpid()}") as group,
            loop_devices(scratch, max(s.cards for s in sets), card_bytes) as devices,
        ):
            bench = CardsBench(args, scratch, group)
            for run in range(args.runs):
                for cards in sets:
                    for mode in modes:
                        row = getattr(bench, mode)(devices, cards, run)
                        rows.append(row)
                        _print_row(row)
                (out_dir / "runs.json").write_text(json.dumps({"meta": meta, "runs": rows}))
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    summaries = summarize(rows)
    table = markdown(summaries)
    (out_dir / "runs.json").write_text(
        json.dumps({"meta": meta, "runs": rows, "summaries": summaries}, indent=1)
    )
    (out_dir / "results.md").write_text(table + "\n")
    print(f"\n{table}\n\nresults: {out_dir}")
    return 0


def _print_row(row: dict[str, Any]) -> None:
    cards = row["cards"]
    good = sum(1 for c in cards if c["ok"] and c["verified"] and c.get("check_ok"))
    times = [c["seconds"] for c in cards if c["seconds"]]
    spread = f"{min(times):.2f}–{max(times):.2f}" if times else "-"
    total = f"{row['seconds']:.2f}" if row["seconds"] else "-"
    print(
        f"run {row['run'] + 1} {row['mode']:<5} {row['set']:<12} total {total} s, "
        f"cards {spread} s, {good}/{len(cards)} verified, "
        f"RSS {row['peak_tree_rss_bytes'] / MB:.0f} MB "
        f"(sampled {row.get('sampled_tree_rss_bytes', 0) / MB:.0f}), rc {row['returncode']}",
        flush=True,
    )
    if "stderr" in row:
        print("    " + row["stderr"].strip().replace("\n", "\n    ")[-1500:], flush=True)


if __name__ == "__main__":
    sys.exit(main())
