#!/usr/bin/env python3
"""Regenerate docs/screenshots/*.png: the desktop app on a virtual X screen (Xvfb), driven step
by step against the built-in sandbox, one picture per step.

    python3 scripts/screenshots.py [--out docs/screenshots] [--scale 2]

Needs Xvfb and Qt's xcb libraries (Debian: apt-get install xvfb libxcb-cursor0 libxcb-icccm4
libxcb-keysyms1). The script starts its own Xvfb on a free display. As root it also attaches a
sparse loop device, so the Targets page lists a real drive that is then flashed through the
writer helper; otherwise image files are the targets. `--scale 2` renders as on a HiDPI screen.
Nothing outside temporary directories is touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
GB = 10**9
CARD_BYTES = 32 * GB
WAIT_S = 60.0


@contextmanager
def xvfb(width: int, height: int) -> Iterator[str]:
    """Run Xvfb on a free display for the duration; yields the DISPLAY value."""
    if shutil.which("Xvfb") is None:
        sys.exit("Xvfb is not installed (Debian: apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write_fd),
            "-screen",
            "0",
            f"{width}x{height}x24",
            "-nolisten",
            "tcp",
            "-dpi",
            "96",
        ],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        sys.exit("Xvfb did not start")
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def loop_card(
    folder: Path, size_bytes: int = CARD_BYTES, name: str = "SanDisk-Ultra-32GB"
) -> Iterator[str | None]:
    """A sparse loop device when root (a stand-in card), else None."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        yield None
        return
    backing = folder / f"{name}.img"
    with open(backing, "wb") as f:
        f.truncate(size_bytes)
    path = subprocess.run(
        ["losetup", "--show", "-f", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield path
    finally:
        subprocess.run(["losetup", "-d", path], check=False)


@contextmanager
def read_only_dir(folder: Path) -> Iterator[Path]:
    """A directory no file can be created in (a read-only tmpfs as root), for the failure."""
    locked = folder / "read-only"
    locked.mkdir()
    if os.geteuid() == 0:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)], check=True
        )
        try:
            yield locked
        finally:
            subprocess.run(["umount", str(locked)], check=False)
    else:
        locked.chmod(0o555)
        try:
            yield locked
        finally:
            locked.chmod(0o755)


class Shooter:
    """Drives the window with real clicks and keys and saves what the screen shows."""

    def __init__(self, out: Path) -> None:
        from PySide6.QtTest import QTest

        self.out = out
        self.qtest = QTest
        self.count = 0

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            self.qtest.qWait(20)

    def settle(self) -> None:
        self.qtest.qWait(150)  # let layouts, icons and the X server catch up before a grab

    def click(self, button: object) -> None:
        from PySide6.QtCore import Qt

        self.qtest.mouseClick(button, Qt.MouseButton.LeftButton)

    def type(self, widget: object, text: str) -> None:
        widget.setFocus()  # type: ignore[attr-defined]
        self.qtest.keyClicks(widget, text)

    def shot(self, window: object, name: str) -> None:
        """The window's area of the screen, so open dialogs are in the picture too."""
        self.settle()
        geometry = window.frameGeometry()  # type: ignore[attr-defined]
        screen = window.screen()  # type: ignore[attr-defined]
        pixmap = screen.grabWindow(
            0, geometry.x(), geometry.y(), geometry.width(), geometry.height()
        )
        self.count += 1
        path = self.out / f"{self.count:02d}-{name}.png"
        pixmap.save(str(path))
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def run(out: Path, work: Path) -> None:
    from PySide6.QtWidgets import QApplication

    from flasher.bench.policy import DrivePolicy
    from flasher.cache import ImageCache
    from flasher.gui.app import build_services, build_window
    from flasher.gui.bench import BenchSetup
    from flasher.gui.dialogs import ConfirmEraseDialog, ErrorDetailsDialog
    from flasher.gui.theme import (
        configure_application,
        prepare_application,
        sample_dark_palette,
    )
    from flasher.gui.window import TARGETS
    from flasher.sandbox.images import ImageScale
    from flasher.sandbox.server import SandboxServer
    from flasher.writer.launchers import DirectLauncher

    prepare_application()
    app = QApplication([sys.argv[0]])
    configure_application(app)
    shooter = Shooter(out)
    # Big enough that the write takes a moment (the progress picture), sparse so it costs
    # no disk: the synthesized data partition is mostly empty.
    scale = ImageScale(data_bytes=512 * MiB)
    with (
        SandboxServer.start(image_scale=scale, cache_dir=work / "sandbox") as sandbox,
        loop_card(work) as card,
        loop_card(work, 256 * MiB, "old-256MB-card") as small_card,
        read_only_dir(work) as locked,
    ):
        backend = build_services(
            sandbox=sandbox,
            config_dir=work / "config",
            cache=ImageCache(work / "cache"),
            launcher=DirectLauncher() if card else None,
        )
        controller, window = build_window(backend.services)
        window.move(24, 24)
        window.show()
        controller.load_device_types()
        os_page = window.os_page
        shooter.wait(lambda: controller.device_types.rowCount() > 0, "the catalog")
        shooter.shot(window, "os-first-launch")
        shooter.type(os_page.search, "pi 4")
        shooter.wait(
            lambda: (
                os_page.selection() is not None
                and bool(os_page.size_label.text().startswith("about"))
            ),
            "a version",
        )
        shooter.shot(window, "os")

        shooter.click(os_page.dev_check)
        shooter.click(os_page.draft_check)
        shooter.wait(lambda: os_page.selection() is not None, "the version list")
        shooter.click(os_page.dev_check)
        shooter.click(os_page.draft_check)
        shooter.click(window.next)
        page = window.configure_page
        shooter.click(page.wifi_radio)
        shooter.type(page.ssid_edit, "Workshop")
        page.fields.touch("key")
        page.fields.refresh()
        shooter.shot(window, "configure-wifi-key-asked")
        shooter.type(page.key_edit, "short")
        page.ip_group.setChecked(True)
        shooter.type(page.address_edit, "192.168.8.40")
        shooter.type(page.netmask_edit, "24")
        shooter.type(page.gateway_edit, "10.0.0.1")
        shooter.type(page.hostname_edit, "Kiosk")
        shooter.shot(window, "configure-inline-errors")

        for field, text in (
            (page.key_edit, "correct-horse-battery"),
            (page.gateway_edit, "192.168.8.1"),
            (page.hostname_edit, "kiosk"),
        ):
            field.clear()
            shooter.type(field, text)
        shooter.type(page.dns_edit, "1.1.1.1, 9.9.9.9")
        page.poll_spin.setValue(30)
        shooter.shot(window, "configure")

        shooter.click(window.next)
        targets = window.targets_page
        if card is not None:
            shooter.wait(lambda: controller.drives.row_of(card) >= 0, "the card")
            controller.drives.set_checked(card, True)
        shooter.click(targets.save_file)
        shooter.shot(window, "save-to-file")
        dialog = shooter_dialog(app, "target-file-dialog")
        dialog.selectFile(str(work / "raspberrypi4-64-kiosk.img"))
        dialog.accept()
        shooter.wait(lambda: len(controller.drives.selected) == (2 if card else 1), "targets")
        if small_card is not None:
            shooter.wait(lambda: controller.drives.row_of(small_card) >= 0, "the small card")
        shooter.shot(window, "targets")

        shooter.click(window.next)
        shooter.wait(lambda: isinstance(window.dialog, ConfirmEraseDialog), "the confirmation")
        shooter.shot(window, "confirm-erase")

        caught: list[bool] = []

        def midway(path: str) -> None:
            job = controller.job
            status = job.targets[path] if job else None
            if (
                not caught
                and status is not None
                and status.fraction
                and 0.3 <= status.fraction <= 0.8
            ):
                caught.append(True)
                window.progress_page.repaint()
                shooter.shot(window, "flashing")

        controller.target_changed.connect(midway)
        assert isinstance(window.dialog, ConfirmEraseDialog)
        shooter.click(window.dialog.erase)
        shooter.wait(
            lambda: (
                not controller.flashing
                and controller.job is not None
                and controller.job.state.finished
            ),
            "the flash",
            timeout_s=300,
        )
        controller.target_changed.disconnect(midway)
        shooter.shot(window, "done")
        shooter.click(window.progress_page.log_button)
        shooter.wait(lambda: isinstance(window.dialog, ErrorDetailsDialog), "the log")
        shooter.shot(window, "log")
        window.dialog.reject()  # type: ignore[union-attr]

        shooter.click(window.progress_page.done)
        shooter.wait(lambda: window.stack.currentIndex() == TARGETS, "the Targets page")
        for row in list(controller.drives.selected):
            controller.drives.set_checked(row.drive.path, False)
        controller.drives.add_file_target(str(work / "second-card.img"))
        controller.drives.add_file_target(str(locked / "third-card.img"))
        shooter.click(window.next)
        shooter.wait(lambda: isinstance(window.dialog, ConfirmEraseDialog), "the confirmation")
        asked: list[bool] = []
        progress_page = window.progress_page

        def ask_cancel(path: str) -> None:
            job = controller.job
            status = job.targets[path] if job else None
            if not asked and status is not None and (status.fraction or 0) >= 0.2:
                asked.append(True)
                shooter.click(progress_page.cancel)
                shooter.shot(window, "cancel-question")
                if progress_page.cancel_question is not None:
                    progress_page.cancel_question.reject()  # keep writing

        controller.target_changed.connect(ask_cancel)
        shooter.click(window.dialog.erase)
        shooter.wait(
            lambda: (
                controller.job is not None
                and controller.job.state.finished
                and not controller.flashing
            ),
            "the second flash",
            timeout_s=300,
        )
        controller.target_changed.disconnect(ask_cancel)
        shooter.shot(window, "one-failed")

        failed = window.progress_page.cards[str(locked / "third-card.img")]
        shooter.click(failed.details)
        shooter.wait(lambda: isinstance(window.dialog, ErrorDetailsDialog), "the details")
        shooter.shot(window, "error-details")
        window.dialog.reject()  # type: ignore[union-attr]

        if card is not None:
            shooter.click(progress_page.done)
            # Only the script's own loop device is a bench slot (set before the page shows it).
            window.bench.setup = BenchSetup(
                DrivePolicy(slots=(card,), buses=frozenset({"loop"})),
                report_path=str(work / "cards.jsonl"),
                include_present=True,
            )
            shooter.click(window.targets_page.bench_button)
            assert window.bench_page.setup_box.slot_patterns() == (card,)
            shooter.type(window.bench_page.setup_box.template_edit, "kiosk-{n:02d}")
            window.bench_page.include_present.setChecked(True)
            shooter.click(window.bench_page.start)
            shooter.wait(lambda: window.bench.board.done == 1, "the bench card", timeout_s=300)
            shooter.shot(window, "bench")
            shooter.click(window.bench_page.stop)
            shooter.wait(lambda: not window.bench.running, "the bench to stop")
            shooter.click(window.bench_page.back)

        app.setPalette(sample_dark_palette())
        shooter.shot(window, "dark-theme")
        if window.stack.currentIndex() == TARGETS:
            window.go_back()
            window.go_back()
        else:
            shooter.click(progress_page.again)
        shooter.shot(window, "dark-theme-os")
        controller.shutdown()
        window.close()
        backend.close()


def shooter_dialog(app: object, name: str) -> object:
    from PySide6.QtWidgets import QFileDialog

    for widget in app.topLevelWidgets():  # type: ignore[attr-defined]
        if isinstance(widget, QFileDialog) and widget.objectName() == name and widget.isVisible():
            return widget
    raise SystemExit(f"no open dialog {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="device pixel ratio to render at (2 = HiDPI)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    width, height = round(1100 * args.scale), round(820 * args.scale)
    with xvfb(width, height) as display, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(
            {
                "DISPLAY": display,
                "QT_QPA_PLATFORM": "xcb",
                "FLASHER_CONFIG_DIR": str(Path(tmp) / "config"),
                "QT_SCALE_FACTOR": str(args.scale),
            }
        )
        os.environ.pop("WAYLAND_DISPLAY", None)
        run(args.out, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
