"""The window reads right, through its widgets: the Configure page fits the default window, a
cancel looks like a cancel and asks first, the quit question goes away when the flash ends, the
erase dialog calls a file a file, nothing is picked on the first launch, a search without a
match says so, "4" does not match "aarch64", and messages carry no command-line options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox, QScrollArea

from flasher.error_codes import Action
from flasher.errors import CatalogError, ConfigError, DownloadError
from flasher.events import Phase
from flasher.gui.dialogs import erase_words
from flasher.gui.progress import FlashState
from flasher.gui.qtmodels import ValueRole
from flasher.gui.wording import desktop_hint, desktop_message, size_words
from tests.gui.conftest import MakeApp
from tests.gui.driving import CATALOG_TIMEOUT_MS, App


def _writing(app: App, path: str) -> bool:
    job = app.controller.job
    return job is not None and job.targets[path].phase is Phase.WRITING


def _big_flash_to(app: App, image: Path, target: Path) -> None:
    app.open_image_file(image)
    app.next()
    app.to_targets()
    app.click(app.window.targets_page.write_all_check)
    app.add_file_target(target)


def test_configure_page_fits_the_default_window_without_scrolling(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    scroll = app.window.configure_page.findChild(QScrollArea)
    assert scroll is not None
    app.qtbot.waitUntil(lambda: scroll.widget().height() > 0)
    assert scroll.widget().height() <= scroll.viewport().height()


def test_an_inline_error_does_not_move_the_fields_below(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    app.click(page.wifi_radio)
    QApplication.processEvents()  # the layout settles
    before = page.key_edit.mapTo(page, page.key_edit.rect().topLeft())
    app.type_into(page.ssid_edit, "x")
    page.ssid_edit.clear()  # touched, then emptied: "required"
    assert page.ssid_error.isVisible()
    QApplication.processEvents()
    assert page.key_edit.mapTo(page, page.key_edit.rect().topLeft()) == before


def test_cancelling_a_write_asks_and_keep_writing_finishes(
    make_app: MakeApp, tmp_path: Path, big_image: Path
) -> None:
    app = make_app()
    target = tmp_path / "card.img"
    _big_flash_to(app, big_image, target)
    page = app.window.progress_page
    asked: list[bool] = []

    def cancel_once(path: str) -> None:
        if _writing(app, path) and not asked:
            asked.append(True)
            app.click(page.cancel)
            question = page.cancel_question
            assert question is not None and question.isVisible()
            question.reject()  # "Keep writing"

    app.controller.target_changed.connect(cancel_once)
    app.flash(timeout_ms=120_000)
    assert asked and app.controller.state is FlashState.DONE


def test_a_cancelled_flash_looks_like_a_cancel(
    make_app: MakeApp, tmp_path: Path, big_image: Path
) -> None:
    app = make_app()
    target = tmp_path / "card.img"
    _big_flash_to(app, big_image, target)
    page = app.window.progress_page

    def stop_once(path: str) -> None:
        if _writing(app, path) and page.cancel.isEnabled() and page.cancel_question is None:
            app.click(page.cancel)
            app.click(page.stop_button)

    app.controller.target_changed.connect(stop_once)
    app.flash()
    assert app.controller.state is FlashState.CANCELLED
    assert page.banner.message.text() == "Cancelled — the card was left unbootable."
    card = page.cards[str(target)]
    assert not card.error.isVisible() and not card.details.isVisible()
    assert card.retry.isVisible() and card.retry.text() == "Flash &again"


def test_quit_question_closes_itself_when_the_flash_ends(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    app.add_file_target(tmp_path / "card.img")
    asked: list[QMessageBox] = []

    def ask_to_quit(_path: str) -> None:
        if app.controller.flashing and not asked:
            assert not app.window.close()
            assert isinstance(app.window.dialog, QMessageBox)
            asked.append(app.window.dialog)

    app.controller.target_changed.connect(ask_to_quit)
    app.flash()
    assert asked
    app.qtbot.waitUntil(lambda: not asked[0].isVisible())
    assert app.window.isVisible()
    assert app.controller.state is FlashState.DONE


def test_erase_dialog_for_one_file_calls_it_a_file(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    app.add_file_target(tmp_path / "card.img")
    (tmp_path / "card.img").write_bytes(b"an earlier card")  # there by the time it is asked
    dialog = app.confirm_dialog()
    assert dialog.question.text() == "Erase 1 file?"
    assert dialog.consequence.text() == "Anything in this file will be replaced."
    assert dialog.erase.text() == "&Erase and flash"
    dialog.reject()


def test_a_new_file_is_made_not_erased(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    app.add_file_target(tmp_path / "card.img")
    dialog = app.confirm_dialog()
    assert dialog.question.text() == "Create 1 file?"
    assert dialog.consequence.text() == "This file will be made from the image."
    assert dialog.erase.text() == "&Flash" and dialog.windowTitle() == "Flash"
    dialog.reject()


@pytest.mark.parametrize(
    ("drives", "files", "question", "consequence"),
    [
        (1, 0, "Erase 1 drive?", "Everything on this drive will be lost."),
        (3, 0, "Erase 3 drives?", "Everything on these drives will be lost."),
        (0, 2, "Erase 2 files?", "Anything in these files will be replaced."),
        (
            1,
            1,
            "Erase 1 drive and 1 file?",
            "Everything on the drives will be lost, and the files replaced.",
        ),
    ],
)
def test_erase_words(drives: int, files: int, question: str, consequence: str) -> None:
    assert erase_words(drives, files) == (question, consequence)


def test_erase_words_for_new_files() -> None:
    assert erase_words(0, 2, new_files=2) == (
        "Create 2 files?",
        "These files will be made from the image.",
    )
    # one of them exists: it is replaced, so the question stays an erase
    assert erase_words(0, 2, new_files=1)[0] == "Erase 2 files?"
    assert erase_words(1, 1, new_files=1)[0] == "Erase 1 drive and 1 file?"


def test_no_device_type_is_picked_on_the_first_launch(make_app: MakeApp) -> None:
    app = make_app()
    app.qtbot.waitUntil(
        lambda: app.controller.device_types.rowCount() > 0, timeout=CATALOG_TIMEOUT_MS
    )
    page = app.window.os_page
    assert page.current_device_type() is None
    assert not app.window.next.isEnabled()
    assert app.window.why.text() == "Choose a device type, or drop an image file here."


def test_search_without_a_match_says_so_and_clears_the_version(make_app: MakeApp) -> None:
    app = make_app()
    app.choose_device_type("raspberrypi4-64", "raspberrypi4-64")
    page = app.window.os_page
    app.type_into(page.search, "zzz")
    assert page.catalog_status.isVisible()
    assert "No device type matches" in page.catalog_status.text()
    assert page.current_device_type() is None
    assert page.version_combo.currentIndex() == -1
    assert not app.window.next.isEnabled()


def test_a_search_that_keeps_the_device_type_keeps_its_download_size(make_app: MakeApp) -> None:
    app = make_app()
    app.choose_device_type("raspberrypi4-64", "raspberrypi4-64")
    page = app.window.os_page
    app.qtbot.waitUntil(lambda: page.size_label.text().startswith("about"))
    size = page.size_label.text()
    page.search.clear()  # every device type listed, the Pi 4 still chosen
    app.type_into(page.search, "aarch64")  # it and others match: its row moves
    assert page.current_device_type() is not None
    assert page.current_device_type().slug == "raspberrypi4-64"  # type: ignore[union-attr]
    assert page.size_label.text() == size


def test_a_digit_does_not_match_an_architecture(make_app: MakeApp) -> None:
    app = make_app()
    app.qtbot.waitUntil(
        lambda: app.controller.device_types.rowCount() > 0, timeout=CATALOG_TIMEOUT_MS
    )
    app.type_into(app.window.os_page.search, "4")
    proxy = app.controller.device_type_filter
    slugs = {proxy.index(row, 0).data(ValueRole).slug for row in range(proxy.rowCount())}
    assert "raspberrypi4-64" in slugs
    assert "generic-aarch64" not in slugs


def test_an_architecture_prefix_still_finds_its_device_types(make_app: MakeApp) -> None:
    app = make_app()
    app.choose_device_type("aarch", "generic-aarch64")
    proxy = app.controller.device_type_filter
    slugs = {proxy.index(row, 0).data(ValueRole).slug for row in range(proxy.rowCount())}
    assert {"generic-aarch64", "raspberrypi4-64"} <= slugs


@pytest.mark.parametrize(
    ("error", "from_url", "expected"),
    [
        (
            ConfigError(
                "provisioning_key",
                "is required with a fleet",
                hint="Give one of the fleet's provisioning keys.",
                action=Action.GIVE_PROVISIONING_KEY,
            ),
            False,
            "Give one of the fleet's provisioning keys. Enter it in the provisioning key field "
            "on the Configure page.",
        ),
        (
            CatalogError(
                "No size",
                hint="Check the version against the list of versions.",
                action=Action.LIST_OS_VERSIONS,
            ),
            False,
            "Check the version against the list of versions. Choose a version from the list on "
            "the OS page.",
        ),
        (
            DownloadError("No space", hint="Free some disk space.", action=Action.SET_CACHE_DIR),
            False,
            "Free some disk space. Or start Flasher with its image cache on another disk.",
        ),
        (
            DownloadError("Not found (HTTP 404)", hint="Check the file name."),
            True,
            "Check the URL and the connection, then try again.",
        ),
        (CatalogError("Offline", hint="Check the network."), False, "Check the network."),
    ],
)
def test_hints_have_no_command_line_words(
    error: CatalogError, from_url: bool, expected: str
) -> None:
    assert desktop_hint(error, from_url=from_url) == expected
    assert "--" not in expected and "FLASHER_" not in expected


def test_cache_paths_are_left_out_of_messages(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    message = f"The image {cache}/raw/0123abcd.img is truncated."
    assert desktop_message(message, str(cache)) == "The image 0123abcd.img is truncated."


@pytest.mark.parametrize(
    ("size_bytes", "words"),
    [(0, "0 MB"), (16 * 2**20, "17 MB"), (999_000_000, "999 MB"), (31_900_000_000, "31.9 GB")],
)
def test_sizes_in_mb_under_one_gb(size_bytes: int, words: str) -> None:
    assert size_words(size_bytes) == words


def test_no_password_note_when_running_as_root(make_app: MakeApp, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the note is for users who are not root")
    from flasher.gui.dialogs import ConfirmEraseDialog
    from flasher.models import Drive

    dialog = ConfirmEraseDialog(
        [Drive(path="/dev/sdz", size_bytes=8 * 10**9, description="Card")], [], "balenaOS"
    )
    texts = [label.text() for label in dialog.findChildren(type(dialog.question))]
    assert not any("password" in text for text in texts)
