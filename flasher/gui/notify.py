"""A desktop notification when a long flash ends while the window is in the background: the
freedesktop notification service through `notify-send` or `gdbus` when one is installed, and
the task bar's attention hint in any case.

The notification carries counts and the image's title only, never a setting or a secret, and
the tool gets the app's environment without its secrets (flasher.childenv). Imports Qt, the
standard library and flasher.childenv only.
"""

from __future__ import annotations

import shutil

from PySide6.QtCore import QProcess, QProcessEnvironment
from PySide6.QtWidgets import QApplication, QWidget

from flasher.childenv import child_environment

LONG_FLASH_S = 30.0  # shorter flashes are watched to the end; no need to call the user back


def notification_command(summary: str, body: str) -> list[str] | None:
    """The command that shows a notification on this desktop; None when there is none."""
    if shutil.which("notify-send"):
        return ["notify-send", "--app-name=Flasher", "--icon=io.balena.Flasher", summary, body]
    if shutil.which("gdbus"):
        return [
            "gdbus",
            "call",
            "--session",
            "--dest=org.freedesktop.Notifications",
            "--object-path=/org/freedesktop/Notifications",
            "--method=org.freedesktop.Notifications.Notify",
            "Flasher",
            "0",
            "io.balena.Flasher",
            summary,
            body,
            "[]",
            "{}",
            "10000",  # ms on screen (a negative default would read as an option)
        ]
    return None


def notify_finished(window: QWidget, summary: str, body: str, *, elapsed_s: float) -> bool:
    """Call the user back after a long flash when the window is not in front. True when a
    notification was sent."""
    if elapsed_s < LONG_FLASH_S or window.isActiveWindow():
        return False
    QApplication.alert(window)
    command = notification_command(summary, body)
    if command is None:
        return False
    env = QProcessEnvironment()
    for name, value in child_environment().items():
        env.insert(name, value)
    process = QProcess()
    process.setProgram(command[0])
    process.setArguments(command[1:])
    process.setProcessEnvironment(env)
    return bool(process.startDetached())
