"""The bench page: the same station `flasher bench` runs, as slot tiles in the window. A card
in the bench is flashed with the wizard's image and settings, its tile says Done — remove the
card; a card too small fails on its tile with the reason; the counters and report lines follow.
Only the loop devices a test creates are bench slots, so nothing else is ever written."""

from __future__ import annotations

import json
from pathlib import Path

from flasher.bench.policy import DrivePolicy, SlotPattern
from flasher.gui.bench import BenchSetup
from flasher.gui.window import BENCH
from flasher.writer.launchers import DirectLauncher
from tests.gui.conftest import MakeApp
from tests.gui.driving import App
from tests.gui.test_flow import _boot_file
from tests.support.loopdev import LoopDevices, require_loop

MiB = 1024 * 1024
BENCH_TIMEOUT_MS = 60_000


def _open_bench(app: App, slots: tuple[str, ...], report: Path) -> None:
    app.window.bench.setup = BenchSetup(
        DrivePolicy(slots=slots, buses=frozenset({"loop"})), str(report)
    )
    app.to_configure()
    app.type_into(app.window.configure_page.hostname_edit, "bench")
    app.to_targets()
    app.click(app.window.targets_page.bench_button)
    assert app.page() == BENCH


def test_bench_flashes_a_card_and_its_tile_says_remove_it(
    make_app: MakeApp, tmp_path: Path
) -> None:
    require_loop()
    with LoopDevices(tmp_path) as loops:
        card = loops.create(512 * MiB)
        app = make_app(launcher=DirectLauncher())
        _open_bench(app, (card.path,), tmp_path / "cards.jsonl")
        page = app.window.bench_page
        app.click(page.include_present)
        app.click(page.start)
        app.qtbot.waitUntil(
            lambda: page.counters.text().startswith("1 done · 0 failed"),
            timeout=BENCH_TIMEOUT_MS,
        )
        assert page.tiles[0].state.text() == "Done — remove the card"
        assert page.report.text().startswith("card 1 · ") and "ok" in page.report.text()
        app.click(page.stop)
        app.qtbot.waitUntil(lambda: not app.window.bench.running, timeout=BENCH_TIMEOUT_MS)
        config = json.loads(_boot_file(card.backing, "/config.json"))
        assert config["hostname"] == "bench"
        record = json.loads((tmp_path / "cards.jsonl").read_text().splitlines()[0])
        assert record["ok"] and record["device"] == card.path


def test_a_card_too_small_fails_on_its_tile_with_the_reason(
    make_app: MakeApp, tmp_path: Path
) -> None:
    require_loop()
    with LoopDevices(tmp_path) as loops:
        small = loops.create(1 * MiB)
        app = make_app(launcher=DirectLauncher())
        _open_bench(app, (small.path,), tmp_path / "cards.jsonl")
        page = app.window.bench_page
        app.click(page.include_present)
        app.click(page.start)
        app.qtbot.waitUntil(
            lambda: page.counters.text().startswith("0 done · 1 failed"),
            timeout=BENCH_TIMEOUT_MS,
        )
        assert page.tiles[0].state.text() == "Failed"
        assert "too small" in page.tiles[0].note.text()
        app.click(page.stop)
        app.qtbot.waitUntil(lambda: not app.window.bench.running, timeout=BENCH_TIMEOUT_MS)
        assert page.back.isEnabled()


def test_a_template_with_an_unknown_field_keeps_start_disabled(
    make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app()
    _open_bench(app, (), tmp_path / "cards.jsonl")
    box = app.window.bench_page.setup_box
    app.type_into(box.template_edit, "kiosk-{mac}")
    assert not app.window.bench_page.start.isEnabled()
    assert box.template_error.isVisible() and "{mac}" in box.template_error.text()


def test_only_these_slots_without_a_pattern_keeps_start_disabled(
    make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app()
    _open_bench(app, (), tmp_path / "cards.jsonl")
    page = app.window.bench_page
    app.click(page.setup_box.slots_radio)
    assert not page.start.isEnabled()
    assert "at least one slot" in page.start.toolTip()
    app.click(page.setup_box.any_radio)
    assert page.start.isEnabled()


def test_slots_and_template_typed_in_the_window_name_each_card(
    make_app: MakeApp, tmp_path: Path
) -> None:
    require_loop()
    with LoopDevices(tmp_path) as loops:
        card = loops.create(512 * MiB)
        app = make_app(launcher=DirectLauncher())
        _open_bench(app, (), tmp_path / "cards.jsonl")
        page = app.window.bench_page
        app.click(page.setup_box.slots_radio)
        app.type_into(page.setup_box.slots_edit, card.path)
        app.type_into(page.setup_box.template_edit, "kiosk-{n:02d}")
        app.click(page.include_present)
        app.click(page.start)
        app.qtbot.waitUntil(
            lambda: page.counters.text().startswith("1 done · 0 failed"),
            timeout=BENCH_TIMEOUT_MS,
        )
        assert app.window.bench.setup.policy.slots == (SlotPattern(card.path),)
        app.click(page.stop)
        app.qtbot.waitUntil(lambda: not app.window.bench.running, timeout=BENCH_TIMEOUT_MS)
        config = json.loads(_boot_file(card.backing, "/config.json"))
        assert config["hostname"] == "kiosk-01"
