#!/usr/bin/env python3
"""Configure and inspect benchmark: `flasher os configure` and `image inspect` time vs image size.

    sudo python3 benchmarks/configure_bench.py [--runs 3] [--sizes-mib 100,512,1024,2048,4096]
                                               [--images DIR]

Builds sparse balenaOS-layout images of each size (boot FAT16 first, a data partition grown to
the end; benchlib/sized.py), then times, cold cache, median of --runs: configuring a fresh copy
in place, configuring into a new file with -o, and inspecting. Configuring touches only the boot
partition, so in-place configure and inspect should stay flat as the image grows. With --images
(the flash benchmark's folder), the realistic 1.2 GB image and its compressed forms are timed
too. Writes runs.json and results.md into a new folder under --results. Needs root only for
drop_caches.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))  # for tests.support.images, the test suite's image builder

from benchlib.sized import base_image, copy_sparse, sized_image  # noqa: E402
from benchlib.system import drop_caches, require_root, run_measured  # noqa: E402

MiB = 1024 * 1024
MB = 1_000_000
# Settings a real provisioning run would use; the Wi-Fi key goes through the environment.
CONFIG_ARGS = ("--wifi-ssid", "bench-net", "--hostname", "bench-01", "--poll-interval", "15")
WIFI_KEY = "benchmark-passphrase"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--sizes-mib",
        default="100,512,1024,2048,4096",
        help="image sizes in MiB, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--images", type=Path, help="the flash benchmark's image folder: adds the 1.2 GB image rows"
    )
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--flasher", default=f"{sys.executable} -m flasher")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes_mib.split(",") if s.strip()]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


class Timer:
    def __init__(self, flasher_cmd: list[str], scratch: Path) -> None:
        self.cmd = flasher_cmd
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), self.env.get("PYTHONPATH")])
        )
        self.env["FLASHER_WIFI_KEY"] = WIFI_KEY
        self.env["FLASHER_CACHE_DIR"] = str(scratch / "cache")
        self.env["FLASHER_CONFIG_DIR"] = str(scratch / "config")
        self.scratch = scratch

    def time(self, args: Sequence[str]) -> dict[str, Any]:
        drop_caches()
        m = run_measured([*self.cmd, *args], env=self.env, cwd=REPO)
        row: dict[str, Any] = {
            "argv": list(args),
            "seconds": m.seconds,
            "returncode": m.returncode,
            "peak_tree_rss_bytes": m.peak_tree_rss_bytes,
            "load_avg_1min": os.getloadavg()[0],
        }
        if m.returncode != 0:
            row["stderr"] = m.stderr[-2000:]
        return row


def bench_image(timer: Timer, image: Path, label: str, runs: int) -> list[dict[str, Any]]:
    """Configure in place (on a fresh sparse copy each run), configure -o, inspect."""
    rows: list[dict[str, Any]] = []
    work = timer.scratch / "work.img"
    out = timer.scratch / "configured.img"
    for run in range(runs):
        copy_sparse(image, work)
        cases = {
            "configure in place": ["os", "configure", str(work), *CONFIG_ARGS],
            "configure -o new file": ["os", "configure", str(image), "-o", str(out), *CONFIG_ARGS],
            "image inspect": ["image", "inspect", str(image)],
        }
        for case, args in cases.items():
            row = timer.time(args)
            row.update(image=label, image_bytes=image.stat().st_size, case=case, run=run)
            rows.append(row)
            print(
                f"  {label:<28} {case:<24} run {run + 1}: {row['seconds']:.3f} s"
                + ("" if row["returncode"] == 0 else f"  rc={row['returncode']}"),
                flush=True,
            )
            out.unlink(missing_ok=True)
        work.unlink(missing_ok=True)
    return rows


def bench_inspect_compressed(timer: Timer, folder: Path, runs: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for run in range(runs):
        for ext in ("zip", "gz", "xz", "zst"):
            path = folder / f"balena.img.{ext}"
            row = timer.time(["image", "inspect", str(path)])
            row.update(
                image=f"1.2 GB .{ext}",
                image_bytes=path.stat().st_size,
                case="image inspect",
                run=run,
            )
            rows.append(row)
            print(
                f"  {row['image']:<28} image inspect            run {run + 1}: "
                f"{row['seconds']:.3f} s",
                flush=True,
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    order: list[str] = []
    cells: dict[tuple[str, str], list[float]] = {}
    failed: dict[tuple[str, str], int] = {}
    sizes: dict[str, int] = {}
    for r in rows:
        if r["image"] not in order:
            order.append(r["image"])
        sizes[r["image"]] = r["image_bytes"]
        key = (r["image"], r["case"])
        if r["returncode"] == 0:
            cells.setdefault(key, []).append(r["seconds"])
        else:
            failed[key] = failed.get(key, 0) + 1
    cases = ("configure in place", "configure -o new file", "image inspect")
    lines = [
        "| image | file bytes | " + " | ".join(f"{c} (median s)" for c in cases) + " |",
        "|---|---:|" + "---:|" * len(cases),
    ]
    for image in order:
        vals = []
        for case in cases:
            secs = cells.get((image, case))
            text = "-" if not secs else f"{statistics.median(secs):.3f}"
            if failed.get((image, case)):
                text += f" ({failed[(image, case)]} failed)"
            vals.append(text)
        lines.append(f"| {image} | {sizes[image]:,} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_root()
    scratch = Path(tempfile.mkdtemp(prefix="flasher-cfgbench-", dir="/var/tmp"))
    rows: list[dict[str, Any]] = []
    try:
        timer = Timer(args.flasher.split(), scratch)
        base = base_image(scratch / "base")
        for mib in args.sizes:
            image = sized_image(base, scratch / f"sized-{mib}.img", mib * MiB)
            rows += bench_image(timer, image, f"{mib} MiB sparse", args.runs)
            image.unlink()
        if args.images is not None:
            rows += bench_image(
                timer, args.images / "balena.img", "1.2 GB realistic (sparse)", args.runs
            )
            rows += bench_inspect_compressed(timer, args.images, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out_dir = args.results / ("configure-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    out_dir.mkdir(parents=True)
    text = table(rows)
    (out_dir / "runs.json").write_text(json.dumps({"runs": rows}, indent=1))
    (out_dir / "results.md").write_text(text + "\n")
    print(f"\n{text}\n\nresults: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
