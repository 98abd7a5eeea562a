"""The Targets step: real hotplug (loop devices attached and detached), system drives behind
"show all" and a typed confirmation, and the erase confirmation naming every target."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from flasher.drives.discovery import list_drives
from flasher.gui.dialogs import SystemDriveDialog
from flasher.gui.window import TARGETS
from flasher.models import Drive
from tests.gui.conftest import MakeApp
from tests.gui.driving import App
from tests.support.loopdev import LoopDevices, require_loop

MiB = 1024 * 1024
# Larger than the catalog's size estimate for the default Raspberry Pi 4 release (371.5 MB).
CARD_BYTES = 512 * MiB
HOTPLUG_TIMEOUT_MS = 10_000


def _visible(app: App, path: str) -> bool:
    model = app.controller.drive_filter
    return any(model.index(row, 2).data().startswith(f"{path} ") for row in range(model.rowCount()))


def test_attached_loop_device_appears_and_detached_one_disappears(
    make_app: MakeApp, tmp_path: Path
) -> None:
    require_loop()
    app = make_app()
    app.to_configure()
    app.to_targets()
    with LoopDevices(tmp_path) as loops:
        loop = loops.create(64 * MiB)
        app.qtbot.waitUntil(lambda: _visible(app, loop.path), timeout=HOTPLUG_TIMEOUT_MS)
        loops.detach(loop)
        app.qtbot.waitUntil(lambda: not _visible(app, loop.path), timeout=HOTPLUG_TIMEOUT_MS)
    assert app.controller.drives.row_of(loop.path) < 0


def test_detaching_a_ticked_drive_unticks_it_and_says_so(make_app: MakeApp, tmp_path: Path) -> None:
    require_loop()
    app = make_app()
    app.to_configure()
    app.to_targets()
    with LoopDevices(tmp_path) as loops:
        loop = loops.create(CARD_BYTES)
        app.tick_drive(loop.path)
        assert app.window.next.isEnabled()
        loops.detach(loop)
        banner = app.window.targets_page.banner
        app.qtbot.waitUntil(
            lambda: banner.isVisible() and "was removed" in banner.message.text(),
            timeout=HOTPLUG_TIMEOUT_MS,
        )
    assert app.controller.drives.selected == []
    assert not app.window.next.isEnabled()


# A fixed disk that is not in use (a provisioning bench's NVMe, say). This machine has none, so
# it is added to the model as the monitor would add it.
INTERNAL = Drive(
    "/dev/nvme7n1", 256 * 10**9, dev="259:70", bus="nvme", internal=True, model="Internal NVMe"
)


def _system_drive() -> Drive:
    drives = [d for d in list_drives(all=True) if d.system]
    if not drives:
        pytest.skip("this machine shows no system drive to test with")
    return drives[0]


def test_system_drives_are_hidden_until_show_all(make_app: MakeApp) -> None:
    drive = _system_drive()
    app = make_app()
    app.to_configure()
    app.to_targets()
    app.qtbot.waitUntil(
        lambda: app.controller.drives.row_of(drive.path) >= 0, timeout=HOTPLUG_TIMEOUT_MS
    )
    assert not _visible(app, drive.path)
    app.click(app.window.targets_page.show_all)
    assert _visible(app, drive.path)


def test_system_drive_in_use_cannot_be_selected(make_app: MakeApp) -> None:
    drive = _system_drive()
    app = make_app()
    app.to_configure()
    app.to_targets()
    app.click(app.window.targets_page.show_all)
    app.qtbot.waitUntil(lambda: _visible(app, drive.path), timeout=HOTPLUG_TIMEOUT_MS)
    app.tick_drive(drive.path)
    assert app.controller.drives.selected == []
    assert not app.window.next.isEnabled()


def test_internal_drive_is_selected_only_after_typing_its_name(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    page = app.window.targets_page
    model = app.controller.drives
    model.add(INTERNAL)
    name = INTERNAL.path.rsplit("/", 1)[-1]
    app.click(page.show_all)
    app.tick_drive(INTERNAL.path)
    app.qtbot.waitUntil(lambda: isinstance(page.system_dialog, SystemDriveDialog))
    dialog = page.system_dialog
    assert isinstance(dialog, SystemDriveDialog)
    assert model.selected == []
    app.type_into(dialog.name_edit, name + "x")
    assert not dialog.select.isEnabled()
    app.qtbot.keyClick(dialog.name_edit, Qt.Key.Key_Backspace)
    assert dialog.select.isEnabled()
    app.click(dialog.select)
    assert [row.drive.path for row in model.selected] == [INTERNAL.path]


def test_erase_confirmation_names_every_target_and_defaults_to_cancel(
    make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    first, second = tmp_path / "first.img", tmp_path / "second.img"
    app.add_file_target(first)
    app.add_file_target(second)
    dialog = app.confirm_dialog()
    texts = [label.text() for label in dialog.drive_labels]
    assert len(texts) == 2
    assert "first.img" in texts[0] and "second.img" in texts[1]
    assert dialog.cancel.isDefault() and not dialog.erase.isDefault()
    app.qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    app.qtbot.waitUntil(lambda: not dialog.isVisible())
    assert app.controller.job is None
    assert app.page() == TARGETS
    assert not first.exists()
