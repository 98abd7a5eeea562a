"""The root helper enforces its own policy when driven directly with crafted requests: internal
disks, swapped nodes, bounded plans, malformed requests, signals in the verify phase, its
environment, and how it may be launched."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import psutil
import pytest

from flasher.cli.main import main
from flasher.drives import discovery
from flasher.errors import DriveRejected, WriterError
from flasher.models import Drive
from flasher.writer import sysblock
from flasher.writer.blockdev import BlockDevicePolicy, LogFn
from flasher.writer.launchers import DirectLauncher, PkexecLauncher, trusted_system_file
from flasher.writer.protocol import TargetSpec
from tests.conftest import ImageFactory
from tests.support.helper_driver import HelperProcess, target_entry, write_request
from tests.support.loopdev import LoopDevice, LoopDevices, require_loop

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from benchlib.cards import BLKIO_ROOT, BlkioGroup, blkio_group

MiB = 1024 * 1024
ZRAM_CONTROL = Path("/sys/class/zram-control")


@pytest.fixture
def internal_disk() -> Iterator[str]:
    """A zram device of our own: a real block device that is neither removable, USB, SD nor
    loop, i.e. what the helper must treat as an internal disk."""
    require_loop()
    if not (ZRAM_CONTROL / "hot_add").exists():
        pytest.skip("zram is not available to stand in for an internal disk")
    number = (ZRAM_CONTROL / "hot_add").read_text().strip()
    sys_dir = Path(f"/sys/block/zram{number}")
    path = f"/dev/zram{number}"
    try:
        (sys_dir / "disksize").write_text(str(64 * MiB))
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.01)
        with open(path, "r+b") as f:
            f.write(b"\x5a" * MiB)
        yield path
    finally:
        (sys_dir / "reset").write_text("1")
        (ZRAM_CONTROL / "hot_remove").write_text(number)


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "image.img"
    path.write_bytes(random.Random(5).randbytes(8 * MiB))
    return path


def _entry(path: str, **extra: object) -> dict[str, object]:
    dev = sysblock.rdev_of(path)
    assert dev is not None
    entry = target_entry(path, dev, sysblock.size_bytes(dev), sysblock.read_serial(dev))
    return {**entry, **extra}


def _run_helper(request: dict[str, object], image: Path) -> list[dict[str, object]]:
    helper = HelperProcess()
    fd = os.open(image, os.O_RDONLY)
    try:
        helper.request(request, [fd])
    finally:
        os.close(fd)
    events = helper.events_until_end()
    _code, stderr = helper.finish()
    assert "Traceback" not in stderr, stderr
    return events


def _terminal(events: list[dict[str, object]]) -> dict[str, object]:
    (last,) = [e for e in events if e["event"] in ("target_done", "target_error")]
    return last


# -- internal disks --------------------------------------------------------------------------


def test_helper_refuses_an_internal_disk_without_allow_internal(
    internal_disk: str, image_file: Path
) -> None:
    request = write_request([_entry(internal_disk)], 8 * MiB)
    result = _terminal(_run_helper(request, image_file))
    assert result["event"] == "target_error" and result["code"] == "drive_rejected"
    assert result["details"]["problem"] == "internal"  # type: ignore[index]
    with open(internal_disk, "rb") as f:
        assert f.read(MiB) == b"\x5a" * MiB


def test_helper_writes_an_internal_disk_marked_allow_internal(
    internal_disk: str, image_file: Path
) -> None:
    request = write_request([_entry(internal_disk, allow_internal=True)], 8 * MiB)
    result = _terminal(_run_helper(request, image_file))
    assert result["event"] == "target_done" and result["verified"], result
    with open(internal_disk, "rb") as f:
        assert f.read(8 * MiB) == image_file.read_bytes()


def test_cli_yes_alone_never_writes_an_internal_disk(
    loops: LoopDevices,
    mbr_image: ImageFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Drive discovery lists no internal disk here that could be written safely, so a loop
    # device is presented as one; the core checks and the CLI flags are what is under test.
    loop = loops.create(mbr_image().size_bytes + 8 * MiB, fill=b"\x5a")
    real_find = discovery.find_drive

    def as_internal(path: str) -> Drive | None:
        found = real_find(path)
        return replace(found, internal=True) if found is not None else None

    monkeypatch.setattr(discovery, "find_drive", as_internal)
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    image = str(mbr_image().path)
    code = main(["--json", "flash", image, "--target", loop.path, "--yes"])
    out = capsys.readouterr().out
    assert code == 4 and '"internal"' in out, out
    assert "--allow-internal-disk" in out
    assert loop.read(0, MiB) == b"\x5a" * MiB
    code = main(["flash", image, "--target", loop.path, "--yes", "--allow-internal-disk"])
    assert code == 0, capsys.readouterr()
    assert loop.read(0, MiB) != b"\x5a" * MiB


# -- the node is pinned before anything is unmounted -----------------------------------------


class _SwappedAfterChecks(BlockDevicePolicy):
    """The checks pass on the real disk; then the node is replaced by a symlink (a race)."""

    def __init__(self, swapped_in: str) -> None:
        super().__init__()
        self.swapped_in = swapped_in

    def resolve(self, spec: TargetSpec, log: LogFn) -> str:
        super().resolve(spec, log)
        return self.swapped_in


def test_node_swapped_for_a_symlink_is_refused_before_unmounting(
    loops: LoopDevices, tmp_path: Path
) -> None:
    loop = loops.create(32 * MiB, sfdisk_script="label: dos\n,16M,83\n")
    subprocess.run(["mkfs.ext4", "-q", loop.partition(1)], check=True, capture_output=True)
    mountpoint = loops.mount(loop.partition(1))
    link = tmp_path / "swapped"
    link.symlink_to(loop.path)
    entry = _entry(loop.path)
    spec = TargetSpec(loop.path, str(entry["dev"]), int(str(entry["size"])), str(entry["serial"]))
    with pytest.raises(DriveRejected) as caught:
        _SwappedAfterChecks(str(link)).open_target(spec, lambda _m: None)
    assert caught.value.problem == "device_changed"
    assert os.path.ismount(mountpoint)


# -- crafted requests ------------------------------------------------------------------------


def _protocol_end(line: bytes, fds: list[int]) -> tuple[dict[str, object], int, str]:
    helper = HelperProcess()
    helper.send(line, fds)
    events = helper.events_until_end()
    code, stderr = helper.finish()
    return events[-1], code, stderr


@pytest.mark.parametrize(
    "line",
    [
        b'{"v":2,"op":"write","targets":' + b"[" * 200_000 + b"]" * 200_000 + b"}\n",
        b'{"v":2,"op":"write","ranges":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}\n",
    ],
    ids=["nested-lists", "nested-objects"],
)
def test_deeply_nested_request_is_a_protocol_error(line: bytes, image_file: Path) -> None:
    fd = os.open(image_file, os.O_RDONLY)
    try:
        end, code, stderr = _protocol_end(line, [fd])
    finally:
        os.close(fd)
    assert end["event"] == "end" and end["error"]["code"] == "protocol"  # type: ignore[index]
    assert code == 2 and "Traceback" not in stderr


@pytest.mark.parametrize("length", [4096, 100_000])
def test_oversize_target_path_is_a_protocol_error(length: int, image_file: Path) -> None:
    path = "/dev/" + "a" * length
    request = write_request([target_entry(path, "8:0", 8 * MiB)], 8 * MiB)
    events = _run_helper(request, image_file)
    assert events[-1]["error"]["code"] == "protocol"  # type: ignore[index]


def test_plan_is_bounded_by_the_real_target_not_the_claimed_image(loops: LoopDevices) -> None:
    loop = loops.create(32 * MiB, fill=b"\x33")
    read_end, write_end = os.pipe()
    helper = HelperProcess(memory_limit_bytes=1024 * MiB)
    try:
        claimed = 1 << 50  # a petabyte image on a 32 MiB card: 2^28 chunks if planned
        helper.request(write_request([_entry(loop.path)], claimed, source="stream"), [read_end])
        events = helper.events_until_end()
    finally:
        os.close(read_end)
        os.close(write_end)
    code, stderr = helper.finish()
    assert "Traceback" not in stderr and "MemoryError" not in stderr
    result = _terminal(events)
    assert result["event"] == "target_error"
    assert result["details"]["problem"] == "too_small"  # type: ignore[index]
    assert loop.read(0, MiB) == b"\x33" * MiB
    assert code != 0


# -- signals during verify -------------------------------------------------------------------


VERIFY_IMAGE_BYTES = 192 * MiB
VERIFY_READ_BPS = 64 * MiB  # 3 s to read the image back: far longer than a signal takes


@pytest.fixture
def big_image(tmp_path: Path) -> Path:
    path = tmp_path / "big.img"
    with open(path, "wb") as f:
        rng = random.Random(11)
        for _ in range(VERIFY_IMAGE_BYTES // (8 * MiB)):
            f.write(rng.randbytes(8 * MiB))
    return path


@pytest.fixture
def slow_reads() -> Iterator[BlkioGroup]:
    """A blkio group that makes the verify phase last: a helper moved into it (while stopped)
    reads its card at `VERIFY_READ_BPS`, so a signal sent then always lands mid-verify."""
    if not (BLKIO_ROOT / "blkio.throttle.read_bps_device").exists():
        pytest.skip(f"no cgroup v1 blkio throttling at {BLKIO_ROOT}")
    with blkio_group(f"flasher-test-{os.getpid()}") as group:
        yield group


def _stopped_in_verify(loop: LoopDevice, image: Path, slow: BlkioGroup) -> HelperProcess:
    """A helper writing `image` to `loop`, stopped (SIGSTOP) as soon as it starts verifying,
    and from then on reading `loop` slowly (`slow_reads`)."""
    helper = HelperProcess()
    fd = os.open(image, os.O_RDONLY)
    try:
        helper.request(write_request([_entry(loop.path)], VERIFY_IMAGE_BYTES), [fd])
    finally:
        os.close(fd)
    while (event := helper.event()) is not None:
        if event["event"] == "phase" and event["phase"] == "verifying":
            os.kill(helper.proc.pid, signal.SIGSTOP)
            slow.limit(loop.path, VERIFY_READ_BPS)
            slow.add(helper.proc.pid)
            return helper
        assert event["event"] not in ("target_error", "end"), event
    pytest.fail("the helper never reached the verify phase")


def _head_is_valid(loop: LoopDevice, image: Path) -> bool:
    with open(image, "rb") as f:
        return loop.read(0, MiB) == f.read(MiB)


@pytest.mark.parametrize(
    "signals", [(signal.SIGINT,), (signal.SIGHUP,)], ids=["ctrl-c", "terminal-closed"]
)
def test_terminal_signals_in_verify_still_leave_the_card_unbootable(
    loops: LoopDevices,
    big_image: Path,
    slow_reads: BlkioGroup,
    signals: tuple[signal.Signals, ...],
) -> None:
    loop = loops.create(VERIFY_IMAGE_BYTES + 8 * MiB)
    helper = _stopped_in_verify(loop, big_image, slow_reads)
    assert _head_is_valid(loop, big_image)  # the partition table is on: the dangerous phase
    pgid = os.getpgid(helper.proc.pid)
    for sig in signals:
        os.killpg(pgid, sig)  # the terminal's foreground group, as a Ctrl-C or hangup sends
    helper.sock.shutdown(socket.SHUT_WR)  # the app died with the terminal too
    os.kill(helper.proc.pid, signal.SIGCONT)
    events = helper.events_until_end()
    code, _stderr = helper.finish()
    assert not any(e["event"] == "target_done" for e in events), events
    assert code == 130, events
    assert loop.read(0, MiB) == bytes(MiB)


def test_sigterm_in_verify_cancels_and_leaves_the_card_unbootable(
    loops: LoopDevices, big_image: Path, slow_reads: BlkioGroup
) -> None:
    loop = loops.create(VERIFY_IMAGE_BYTES + 8 * MiB)
    helper = _stopped_in_verify(loop, big_image, slow_reads)
    os.kill(helper.proc.pid, signal.SIGTERM)  # as systemctl stop sends it
    os.kill(helper.proc.pid, signal.SIGCONT)
    events = helper.events_until_end()
    code, _stderr = helper.finish()
    assert not any(e["event"] == "target_done" for e in events), events
    assert _terminal(events)["code"] == "cancelled"
    assert code == 130
    assert loop.read(0, MiB) == bytes(MiB)


# -- how the helper is started ----------------------------------------------------------------


def test_direct_helper_gets_its_own_session_and_no_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BALENA_TOKEN", "secret-api-token-1")
    monkeypatch.setenv("FLASHER_WIFI_KEY", "secret-wifi-key-1")
    ours, theirs = socket.socketpair()
    before = {c.pid for c in psutil.Process().children()}
    handle = DirectLauncher().launch(theirs)
    try:
        assert ours.recv(64).startswith(b'{"event":"hello"')
        (child,) = [c for c in psutil.Process().children() if c.pid not in before]
        environ = Path(f"/proc/{child.pid}/environ").read_bytes()
        assert os.getsid(child.pid) != os.getsid(0)
    finally:
        ours.close()
        handle.wait()
    names = {item.split(b"=", 1)[0] for item in environ.split(b"\0") if item}
    assert names <= {b"PATH", b"LANG", b"PYTHONPATH"}
    assert b"secret" not in environ


def test_direct_helper_never_runs_code_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sudo flasher flash` started in a folder another user controls: a `flasher` package
    there must not be what root runs as the writer helper."""
    marker = tmp_path / "ran"
    fake = tmp_path / "flasher" / "writer"
    fake.mkdir(parents=True)
    for init in (tmp_path / "flasher" / "__init__.py", fake / "__init__.py"):
        init.write_text("")
    (fake / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('root ran this')\n")
    monkeypatch.chdir(tmp_path)
    ours, theirs = socket.socketpair()
    handle = DirectLauncher().launch(theirs)
    try:
        assert ours.recv(64).startswith(b'{"event":"hello"')
    finally:
        ours.close()
        handle.wait()
    assert not marker.exists()


def test_pkexec_launcher_never_takes_the_helper_or_pkexec_from_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    for name in ("pkexec", "flasher-writer"):
        fake = tmp_path / name
        fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    ours, theirs = socket.socketpair()
    launcher = PkexecLauncher(helper_path=str(tmp_path / "missing-helper"))
    with pytest.raises(WriterError):
        launcher.launch(theirs)
    ours.close()
    assert not marker.exists()


@pytest.fixture
def system_dir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to make files in a system location")
    path = Path("/opt") / f"flasher-test-{os.getpid()}"
    path.mkdir(mode=0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda p: p.chmod(0o777), "can be changed by other users"),
        (lambda p: os.chown(p, 65534, 65534), "not owned by root"),
        (lambda p: os.chmod(p.parent, 0o777), "can be changed by other users"),
    ],
    ids=["world-writable", "owned-by-nobody", "writable-folder"],
)
def test_helper_outside_roots_control_is_refused(
    system_dir: Path, setup: Callable[[Path], None], problem: str
) -> None:
    helper = system_dir / "flasher-writer"
    helper.write_text("#!/bin/sh\n")
    helper.chmod(0o755)
    setup(helper)
    with pytest.raises(WriterError, match=problem):
        trusted_system_file(str(helper), "writer helper")


def test_helper_in_a_user_folder_is_refused(tmp_path: Path) -> None:
    helper = tmp_path / "flasher-writer"
    helper.write_text("#!/bin/sh\n")
    helper.chmod(0o755)
    with pytest.raises(WriterError, match="not in a system location"):
        trusted_system_file(str(helper), "writer helper")


def test_polkit_action_never_keeps_authorisation() -> None:
    policy = Path(__file__).resolve().parents[2] / "packaging/polkit/io.balena.flasher.policy"
    defaults = ElementTree.parse(policy).getroot().find("action/defaults")
    assert defaults is not None
    values = {child.tag: (child.text or "").strip() for child in defaults}
    assert values and all(v in ("auth_admin", "no") for v in values.values()), values
