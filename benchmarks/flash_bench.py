#!/usr/bin/env python3
"""Flash benchmark: flasher side by side with dd and bmaptool on loop devices, cold cache.

    sudo python3 benchmarks/flash_bench.py --images DIR [--runs 3] [--quick]
    sudo python3 benchmarks/flash_bench.py --image FILE.img [--runs 3] [--quick] [--installed]

DIR holds balena.img and balena.img.bmap, and any of balena-dense.img and
balena.img.{zip,gz,xz,zst} (how to make them: docs/performance.md); --image names any raw image
with the same files beside it (FILE.img.bmap, FILE-dense.img, FILE.img.gz, ...). A missing dense
copy is made in the scratch folder, cases of a missing format are left out, and the loop devices
grow to fit the image. Every run of every case starts from blank loop devices and a dropped page
cache, and is timed until a trailing `sync` returns. Cases run round-robin (run 1 of every case,
then run 2, ...) so drift on the machine hits them alike; the sub-second ones (one card from a raw
image or a warm cache) run --short-runs times a round, since a median of three cannot tell them
apart on a disk whose runs spread by a third. Writes runs.json (every run) and
results.md (table and goal check) into a new folder under --results, and prints the table.
flasher runs from this checkout (`python -m flasher`), or with --installed as `pip install` puts
it in a new virtual environment: what a user runs, without the import hooks that this
interpreter's site-packages or an editable install add to every start.
Needs root; touches only the loop devices and scratch files it creates, and removes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NoReturn

from benchlib import checks, report
from benchlib.cases import BENCH_DIR, Case, ImageSet, full_matrix, quick_matrix
from benchlib.system import (
    SECTOR_BYTES,
    LoopDevice,
    compile_package,
    drop_caches,
    flasher_environ,
    install_in_venv,
    loop_devices,
    require_root,
    run_measured,
    tool_version,
)

REPO = BENCH_DIR.parent
LOOP_BYTES = 1536 * 1024 * 1024  # at least; bigger images get loop devices of their size
LOOP_SPARE_BYTES = 16 * 1024 * 1024
MAX_TARGETS = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    image_args = parser.add_mutually_exclusive_group()
    image_args.add_argument("--images", type=Path, help="folder with the test images (balena.img…)")
    image_args.add_argument(
        "--image",
        type=Path,
        metavar="FILE",
        help="a raw image of any name, with FILE.bmap and any compressed copies beside it",
    )
    parser.add_argument(
        "--report-only",
        type=Path,
        metavar="RESULTS",
        help="rebuild RESULTS/results.md from RESULTS/runs.json without running anything",
    )
    parser.add_argument("--runs", type=int, help="runs per case (default 3; 1 with --quick)")
    parser.add_argument(
        "--short-runs",
        type=int,
        default=3,
        metavar="N",
        help="times each sub-second case (one card from a raw image or a warm cache) runs in "
        "every round, in the round's shuffled order (default 3)",
    )
    parser.add_argument("--quick", action="store_true", help="a few representative cases only")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="keep cases whose key contains TEXT (repeatable)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=BENCH_DIR / "results",
        help="a new timestamped folder is created here",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="folder for loop backing files and image caches (default: a new "
        "temporary folder under /var/tmp)",
    )
    parser.add_argument(
        "--flasher",
        default=f"{sys.executable} -m flasher",
        help="how to run flasher (default: %(default)s, from this checkout)",
    )
    parser.add_argument(
        "--installed",
        action="store_true",
        help="run flasher as a user installs it: this checkout installed with pip into a new "
        "virtual environment in the scratch folder (instead of --flasher)",
    )
    parser.add_argument(
        "--no-flasher", action="store_true", help="only the dd, bmaptool and decoding rows"
    )
    parser.add_argument(
        "--check",
        choices=("first", "all", "none"),
        default="first",
        help="hash the written partitions after the first run of each case "
        "(default), after every run, or never",
    )
    args = parser.parse_args(argv)
    if args.images is None and args.image is None and args.report_only is None:
        parser.error("--images or --image is required")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.short_runs < 1:
        parser.error("--short-runs must be at least 1")
    return args


def flasher_env(cache_dir: Path, config_dir: Path, *, checkout: bool = True) -> dict[str, str]:
    """The environment of a flasher run: its own cache and settings folders, and (`checkout`)
    this checkout first on the module path; an installed flasher runs its own copy."""
    env = flasher_environ(checkout=checkout)
    env["FLASHER_CACHE_DIR"] = str(cache_dir)
    env["FLASHER_CONFIG_DIR"] = str(config_dir)
    return env


def flasher_can_flash(cmd: Sequence[str], env: dict[str, str]) -> bool:
    out = subprocess.run([*cmd, "flash", "--help"], capture_output=True, env=env, check=False)
    return out.returncode == 0


def flasher_outcome(stdout: str) -> dict[str, Any]:
    """The per-target results and the summary from flasher's JSON-lines output."""
    targets: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "target_result":
            targets.append(event)
        elif event.get("event") == "summary":
            summary = event
    return {"targets": targets, "summary": summary}


def machine_info(flasher_cmd: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "import isal, zstandard, psutil; "
            "print(isal.__version__, zstandard.__version__, psutil.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "os": _os_release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "isal": versions[0] if versions else "?",
        "zstandard": versions[1] if len(versions) > 1 else "?",
        "dd": tool_version(["dd", "--version"]),
        "bmaptool": tool_version(["bmaptool", "--version"]),
        # bmaptool decodes a .gz with pigz when it is installed (Debian only suggests it)
        "bmaptool_gzip": "pigz" if shutil.which("pigz") else "gzip",
        "flasher": tool_version([*flasher_cmd, "--version"], env=env),
        "flasher_commit": commit,
    }


def _os_release() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


class Bench:
    def __init__(
        self, args: argparse.Namespace, images: ImageSet, scratch: Path, devices: list[LoopDevice]
    ):
        self.args = args
        self.scratch = scratch
        self.devices = devices
        self.images = images
        self.flasher_cmd = args.flasher.split()
        self.image_bytes = self.images.dense.stat().st_size
        self.regions = checks.partition_regions(self.images.dense)
        self.expected = checks.digests(self.images.dense, self.regions, self.image_bytes)
        self.counter = 0

    def _dirs(self) -> tuple[Path, Path]:
        self.counter += 1
        cache = self.scratch / f"cache-{self.counter}"
        config = self.scratch / f"config-{self.counter}"
        cache.mkdir()
        config.mkdir()
        return cache, config

    def run_case(self, case: Case, run: int, repeat: int) -> dict[str, Any]:
        devices = self.devices[: case.targets]
        paths = [d.path for d in devices]
        argv = case.argv(self.images, paths, self.flasher_cmd)
        cache, config = self._dirs()
        env = flasher_env(cache, config, checkout=not self.args.installed)
        row: dict[str, Any] = {
            **asdict(case),
            "key": case.key,
            "label": case.label,
            "run": run,
            "repeat": repeat,
            "argv": argv,
        }
        try:
            if case.image_cache == "warm":
                for dev in devices:
                    dev.reset()
                first = run_measured(argv, env=env, cwd=REPO)
                row["warmup_seconds"] = first.seconds
                if first.returncode != 0:
                    row["warmup_stderr"] = first.stderr[-2000:]
            for dev in devices:
                dev.reset()
            drop_caches()
            before = [d.sectors_written() for d in devices]
            m = run_measured(argv, env=env, cwd=REPO)
            after = [d.sectors_written() for d in devices]
        finally:
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(config, ignore_errors=True)
        row.update(
            seconds=m.seconds,
            returncode=m.returncode,
            peak_tree_rss_bytes=m.peak_tree_rss_bytes,
            max_process_rss_bytes=m.max_process_rss_bytes,
            bytes_written=[(a - b) * SECTOR_BYTES for a, b in zip(after, before, strict=True)],
            # Other work on the machine shows up here, which helps explain an outlier.
            load_avg_1min=os.getloadavg()[0],
        )
        if m.returncode != 0:
            row["stderr"] = m.stderr[-4000:]
        if case.tool == "flasher":
            outcome = flasher_outcome(m.stdout)
            row["flasher"] = outcome
            row["ok"] = len(outcome["targets"]) == case.targets and all(
                t["ok"] and t["verified"] == case.verify for t in outcome["targets"]
            )
        if case.tool == "decode":
            decoded = m.stdout.strip()
            row["decoded_bytes"] = int(decoded) if decoded.isdigit() else None
            row["ok"] = row["decoded_bytes"] == self.image_bytes
        wants_check = self.args.check == "all" or (
            self.args.check == "first" and run == repeat == 0
        )
        if case.targets and m.returncode == 0 and wants_check:
            drop_caches()
            row["checks"] = [
                checks.compare_target(p, self.regions, self.expected, self.image_bytes)
                for p in paths
            ]
        return row


def round_order(cases: Sequence[Case], run: int, short_runs: int) -> list[tuple[Case, int]]:
    """The cases of round `run`, each with its repeat number, in an order of their own (the same
    for every re-run): a case that always followed the same one would always pay what that one
    leaves behind on the machine (on this virtual machine, the case after four parallel
    bmaptools wrote slowly). Sub-second cases come `short_runs` times, each at a place of its
    own in that order: their medians then rest on more runs than the rounds alone give."""
    order = [(c, k) for c in cases for k in range(short_runs if c.sub_second else 1)]
    random.Random(run).shuffle(order)
    return order


def print_row(row: dict[str, Any]) -> None:
    status = "ok" if row["returncode"] == 0 and row.get("ok", True) else f"rc={row['returncode']}"
    check = ""
    if "checks" in row:
        check = " check " + ("ok" if all(c["ok"] for c in row["checks"]) else "FAILED")
    written = sum(row["bytes_written"]) / 1e6
    run = f"{row['run'] + 1}" + (f".{row['repeat'] + 1}" if row.get("repeat") else "")
    print(
        f"  run {run:<4} {row['key']:<40} {row['seconds']:7.3f} s  "
        f"{written:8.1f} MB written  {status}{check}",
        flush=True,
    )
    if "stderr" in row:
        print("    " + row["stderr"].strip().replace("\n", "\n    ")[-1200:], flush=True)


def write_results(out_dir: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """runs.json (every run, the summaries, the goals) and results.md, in the cases' order."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["key"], []).append(row)
    summaries = [report.summarize(by_key[key]) for key in meta["cases"] if key in by_key]
    goal_rows = report.goals(summaries, meta.get("help_seconds"))
    table = report.markdown_table(summaries, meta["image_bytes"])
    goal_md = report.goals_table(goal_rows)
    (out_dir / "runs.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "runs": rows,
                "summaries": [asdict(s) for s in summaries],
                "goals": goal_rows,
            },
            indent=1,
        )
    )
    text = f"{table}\n\n{goal_md}\n"
    (out_dir / "results.md").write_text(text)
    return text


def help_seconds(flasher_cmd: Sequence[str], env: dict[str, str]) -> dict[str, float]:
    """Median wall time of `flasher --help` and `flasher flash --help` (one untimed run, then 5)."""
    out: dict[str, float] = {}
    for extra in (["--help"], ["flash", "--help"]):
        argv = [*flasher_cmd, *extra]
        times = []
        for n in range(6):
            start = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
            if n:
                times.append(time.perf_counter() - start)
        out[" ".join(["flasher", *extra])] = statistics.median(times)
    return out


def _with_dense_copy(images: ImageSet, scratch: Path) -> ImageSet:
    """Use the folder's dense copy, or make one in the scratch folder (what a download is)."""
    if images.dense.is_file():
        return images
    copy = scratch / images.dense_name
    print(f"making a dense copy of {images.sparse} in {copy}", flush=True)
    subprocess.run(["cp", "--sparse=never", str(images.sparse), str(copy)], check=True)
    return replace(images, dense_copy=copy)


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the cleanup of loop devices and scratch


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only is not None:
        saved = json.loads((args.report_only / "runs.json").read_text())
        print(write_results(args.report_only, saved["meta"], saved["runs"]))
        return 0
    require_root()
    images = ImageSet(args.images) if args.image is None else ImageSet.of(args.image)
    if missing := images.missing():
        raise SystemExit(
            "missing images: "
            + ", ".join(map(str, missing))
            + " (see docs/performance.md for how to make them)"
        )
    signal.signal(signal.SIGTERM, _terminate)
    if not args.installed:  # pip compiles what it installs
        compile_package(REPO / "flasher")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="flasher-bench-", dir="/var/tmp"))
    scratch.mkdir(parents=True, exist_ok=True)
    images = _with_dense_copy(images, scratch)
    if absent := images.absent_kinds():
        kinds = ",".join(absent)
        print(f"no {images.name}.{{{kinds}}} in {images.folder}: leaving those cases out")
    if args.installed:
        args.flasher = str(install_in_venv(REPO, scratch / "venv"))
    probe_dirs = (scratch / "probe-cache", scratch / "probe-config")
    env = flasher_env(*probe_dirs, checkout=not args.installed)
    with_flasher = not args.no_flasher and flasher_can_flash(args.flasher.split(), env)
    if not args.no_flasher and not with_flasher:
        print(
            "flasher has no working `flash` command here: running the other rows only",
            file=sys.stderr,
        )
    cases = (quick_matrix if args.quick else full_matrix)(with_flasher=with_flasher)
    cases = [c for c in cases if c.source not in images.absent_kinds()]
    if args.only:
        cases = [c for c in cases if any(text in c.key for text in args.only)]
    out_dir = args.results / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True)
    meta = {
        **machine_info(args.flasher.split(), env),
        "runs": args.runs,
        "short_runs": args.short_runs,
        "quick": args.quick,
        "flasher_command": args.flasher,
        "images": str(images.folder if args.image is None else images.sparse),
        "image_bytes": images.dense.stat().st_size,
        "cases": [c.key for c in cases],
    }
    if with_flasher:
        meta["help_seconds"] = help_seconds(args.flasher.split(), env)
    rows: list[dict[str, Any]] = []
    image_bytes = images.dense.stat().st_size
    loop_bytes = max(LOOP_BYTES, -(-image_bytes // (1 << 20)) * (1 << 20) + LOOP_SPARE_BYTES)
    meta["loop_bytes"] = loop_bytes
    try:
        targets = max((c.targets for c in cases), default=0)
        with loop_devices(scratch, min(targets, MAX_TARGETS), loop_bytes) as devices:
            meta["loop_devices"] = [d.path for d in devices]
            bench = Bench(args, images, scratch, devices)
            for run in range(args.runs):
                print(f"run {run + 1} of {args.runs}", flush=True)
                for case, repeat in round_order(cases, run, args.short_runs):
                    row = bench.run_case(case, run, repeat)
                    rows.append(row)
                    print_row(row)
                write_results(out_dir, meta, rows)
    finally:
        for path in probe_dirs:
            shutil.rmtree(path, ignore_errors=True)
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    text = write_results(out_dir, meta, rows)
    print(f"\n{text}\nresults: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
