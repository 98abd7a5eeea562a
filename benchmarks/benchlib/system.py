"""Loop devices, page-cache control and one measured command (wall time, peak RSS, bytes written).

Needs root for drop_caches and losetup. Touches only loop devices this module attached itself
and files under the scratch folder it is given. Imports the standard library and psutil only.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs installed (types-psutil)

REPO = Path(__file__).resolve().parents[2]  # the checkout the benchmarks belong to
SECTOR_BYTES = 512  # /sys/block/*/stat counts 512-byte sectors whatever the device's block size
RSS_POLL_S = 0.05
_LOOP_NAME = re.compile(r"^/dev/loop\d+$")


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root (loop devices, drop_caches)")


def compile_package(package: Path) -> None:
    """Write the bytecode of every module of `package`, as an install does (pip compiles what it
    installs). Run from a checkout, and with PYTHONDONTWRITEBYTECODE set, each measured run would
    otherwise compile the modules that have no bytecode yet: ~0.1 s that no user pays."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def flasher_environ(*, checkout: bool = True) -> dict[str, str]:
    """The environment of a timed flasher run, as a user's flasher meets it: without
    PYTHONDONTWRITEBYTECODE, which some shells set (this project's machine does) and no install
    does (with it, flasher would keep none of the dataclass code it compiles, see
    flasher.dataclass_code, and every run would compile it again: ~25 ms that no user pays
    after a command's first run);
    with `checkout`, this checkout first on the module path (an installed flasher runs its own
    copy)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if checkout:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def install_in_venv(project: Path, folder: Path) -> Path:
    """`project` as a user installs it: `pip install` into a new virtual environment `folder`
    (its dependencies from the package index, its bytecode compiled by pip); the installed
    `flasher` command. Runs without this interpreter's site-packages, their .pth hooks and an
    editable install's import hook."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", str(project)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return folder / "bin" / "flasher"


def drop_caches() -> None:
    """Flush dirty pages, then drop the page cache, dentries and inodes: a cold start."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def tool_version(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env=dict(env) if env is not None else None,
        )
    except OSError:
        return "missing"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


@dataclass
class LoopDevice:
    """A loop device over a preallocated backing file in the scratch folder."""

    path: str
    backing: Path
    size_bytes: int

    @property
    def name(self) -> str:
        return Path(self.path).name

    def sectors_written(self) -> int:
        fields = Path(f"/sys/block/{self.name}/stat").read_text().split()
        return int(fields[6])

    def reset(self) -> None:
        """Back to the state of a freshly attached device: discarded, then preallocated again.

        Every run starts on the same blank medium, so sparse and full writers are compared
        fairly and a partition hash after a sparse write cannot pass on stale bytes.
        """
        subprocess.run(["blkdiscard", self.path], check=True, capture_output=True)
        subprocess.run(["fallocate", "-l", str(self.size_bytes), str(self.backing)], check=True)


@contextlib.contextmanager
def loop_devices(scratch: Path, count: int, size_bytes: int) -> Iterator[list[LoopDevice]]:
    """Attach `count` loop devices; detach them and delete their backing files on the way out."""
    devices: list[LoopDevice] = []
    try:
        for n in range(count):
            backing = scratch / f"loop-backing-{n}.img"
            subprocess.run(["fallocate", "-l", str(size_bytes), str(backing)], check=True)
            out = subprocess.run(
                ["losetup", "--show", "-f", str(backing)],
                capture_output=True,
                text=True,
                check=True,
            )
            path = out.stdout.strip()
            if not _LOOP_NAME.match(path):
                raise SystemExit(f"losetup returned {path!r}, not a loop device")
            devices.append(LoopDevice(path, backing, size_bytes))
        yield devices
    finally:
        for dev in devices:
            subprocess.run(["losetup", "-d", dev.path], check=False)
            dev.backing.unlink(missing_ok=True)


@dataclass
class Measured:
    """One timed command: wall seconds including the trailing sync, exit code, memory, output."""

    seconds: float
    returncode: int
    peak_tree_rss_bytes: int
    max_process_rss_bytes: int
    stdout: str
    stderr: str
    cpu_seconds: float = 0.0  # user + system, the command and every descendant it waited for
    sampled_tree_rss_bytes: int = 0  # the largest total the polls saw at one moment


class TreeRss(threading.Thread):
    """Tracks the peak RSS (VmHWM) of each process in a tree; their sum bounds the tree's peak.

    The kernel keeps each process's high-water mark, so a slow poll (cheap on a 2-CPU machine
    that is also running the benchmark) still catches every peak of a process it sees once;
    the sum of the per-process peaks is at least the largest simultaneous total. It overstates
    that total when the processes peak at different times, so the largest total of current
    RSS (VmRSS) seen at one poll is kept too (`sampled_bytes`): at most the true simultaneous
    peak, since a poll can miss a short one. The truth lies between the two.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self._peaks: dict[int, int] = {}
        self.sampled_bytes = 0

    @property
    def peak_bytes(self) -> int:
        return sum(self._peaks.values())

    def _sample(self, pids: list[int]) -> None:
        now = 0
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                    self._peaks[pid] = max(self._peaks.get(pid, 0), hwm)
                elif line.startswith("VmRSS:"):
                    now += int(line.split()[1]) * 1024
        self.sampled_bytes = max(self.sampled_bytes, now)

    def run(self) -> None:
        try:
            root = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.is_set():
            try:
                pids = [self._pid, *(p.pid for p in root.children(recursive=True))]
            except psutil.NoSuchProcess:
                return
            self._sample(pids)
            self._done.wait(RSS_POLL_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Measured:
    """Run `argv`, then `sync`; the time covers both, so every tool is timed until data is durable.

    Peak RSS comes two ways: the sum of the per-process peaks over the process tree (the
    flasher and its writer helper; an upper bound of their peak together), and wait4's
    ru_maxrss (the largest single process, exact).
    Output goes to unlinked temporary files, so no pipe can block the command.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        poller = TreeRss(proc.pid)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        os.sync()
        seconds = time.perf_counter() - started
        poller.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return Measured(
        seconds=seconds,
        returncode=proc.returncode,
        peak_tree_rss_bytes=poller.peak_bytes,
        # Linux reports ru_maxrss in KiB.
        max_process_rss_bytes=usage.ru_maxrss * 1024,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        sampled_tree_rss_bytes=poller.sampled_bytes,
    )
