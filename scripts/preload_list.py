#!/usr/bin/env python3
"""Record the modules a flash loads into flasher/data/preload-flash.txt (see flasher.preload).

    sudo python3 scripts/preload_list.py --image IMAGE.img --target /dev/loopN
    sudo python3 scripts/preload_list.py --image IMAGE.img --target /dev/loopN --check

Flashes the raw IMAGE to the target (a loop device: it is overwritten) with `-X importtime`,
and starts the writer helper the way the app does, and lists what both load beyond what a bare
interpreter has loaded already, in the order they load. Run it as root (the helper and the
drive lookup only load for a device) after adding an import to the flash's path. `--check`
changes nothing: it exits 1, naming them, if flasher modules the flash loads are missing from
the list.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flasher.preload import LISTS, module_names  # noqa: E402  # this checkout's, not an install's

LIST = Path(LISTS) / "preload-flash.txt"
HEADER = (
    "# The modules `flasher flash` and its writer helper load, in the order they load them:\n"
    "# flasher.preload reads their files ahead. Recorded by scripts/preload_list.py.\n"
)


def imported(argv: list[str], env: dict[str, str], *, helper: bool = False) -> list[str]:
    """The modules `argv` (a Python command line) imports, from its `-X importtime` report;
    `helper`: the writer helper's, which loads everything, then refuses a stdin that is not
    the app's socket."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and not line.rstrip().endswith("| imported package")
    ]
    if done.returncode != 0 and not (helper and "flasher.writer.helper" in names):
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return names


def record(image: str, target: str) -> list[str]:
    """The modules a flash of `image` to `target` loads, its helper's included, in order."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bare = set(imported(["-c", "pass"], env))
    with tempfile.TemporaryDirectory() as cache:
        flash = ["-m", "flasher", "--json", "flash", image, "--target", target, "--yes"]
        app = imported(flash, dict(env, FLASHER_CACHE_DIR=cache))
    helper = imported(["-P", "-S", "-m", "flasher.writer"], env, helper=True)
    return [n for n in dict.fromkeys(app + helper) if n not in bare and n != "__main__"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="a raw image to flash")
    parser.add_argument("--target", required=True, help="a loop device to flash it to")
    parser.add_argument("--check", action="store_true", help="only check the list")
    args = parser.parse_args()
    names = record(args.image, args.target)
    if args.check:
        listed = set(module_names("flash"))
        missing = [n for n in names if n.startswith("flasher") and n not in listed]
        if missing:
            print(f"not in {LIST.name}: {', '.join(missing)}; run {Path(__file__).name}")
            return 1
        return 0
    LIST.write_text(HEADER + "".join(f"{n}\n" for n in names), encoding="utf-8")
    print(f"{len(names)} modules written to {LIST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
