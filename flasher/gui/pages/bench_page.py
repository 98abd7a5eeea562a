"""The bench station as a page of slot tiles: each card inserted is flashed as it arrives, with
the image and settings chosen in the first two steps. A tile per slot shows its state in words
and colour (empty, writing with its percentage, verifying, done — remove the card, failed with
the reason), above the totals, the last report lines and Start / Stop. Above them, which cards
the bench takes and each card's hostname template (flasher.gui.pages.bench_setup).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from flasher.bench.board import EMPTY, SKIPPED, WAITING, SlotRow
from flasher.gui.bench import BenchController
from flasher.gui.pages.bench_setup import BenchSetupBox
from flasher.gui.progress import human_duration, human_speed
from flasher.gui.theme import Accent, scaled_font, tint
from flasher.gui.widgets import heading, note

TILE_COLUMNS = 4

# A slot's state in words, and the accent it is drawn in (None: the palette's text colour).
STATE_WORDS: dict[str, tuple[str, Accent | None]] = {
    EMPTY: ("Empty — insert a card", None),
    WAITING: ("Waiting for the image", None),
    SKIPPED: ("Not flashed", Accent.WARNING),
    "checking": ("Checking", None),
    "configuring": ("Configuring", None),
    "writing": ("Writing", None),
    "syncing": ("Flushing", None),
    "verifying": ("Verifying", None),
    "done": ("Done — remove the card", Accent.SUCCESS),
    "failed": ("Failed", Accent.ERROR),
}


def tile_words(row: SlotRow) -> tuple[str, Accent | None]:
    """The tile's headline: its state, with the percentage while a card is written."""
    words, accent = STATE_WORDS.get(row.state, (row.state.capitalize(), None))
    if row.fraction is not None and row.state in ("writing", "verifying"):
        words = f"{words} {row.fraction:.0%}"
    return words, accent


class SlotTile(QFrame):
    """One slot: its name, the card in it, the state, a bar and a note (speed, or why)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.AlternateBase)
        self.slot = QLabel(self)
        self.slot.setFont(scaled_font(self.slot, 1.0, bold=True))
        self.card = note("", self)
        self.state = QLabel(self)
        self.state.setFont(scaled_font(self.state, 1.15, bold=True))
        self.bar = QProgressBar(self)
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.note = note("", self)
        column = QVBoxLayout(self)
        for widget in (self.slot, self.card, self.state, self.bar, self.note):
            column.addWidget(widget)
        column.addStretch(1)

    def show_row(self, row: SlotRow) -> None:
        self.slot.setText(row.slot.label.capitalize())
        self.card.setText(row.card or " ")
        words, accent = tile_words(row)
        self.state.setText(words)
        if accent is None:
            self.state.setPalette(QPalette())
        else:
            tint(self.state, QPalette.ColorRole.WindowText, accent)
        self.bar.setVisible(row.fraction is not None)
        self.bar.setValue(round((row.fraction or 0.0) * 1000))
        speed = human_speed(row.speed_bps)
        left = human_duration(row.eta_s) if row.eta_s else ""
        self.note.setText(" · ".join(p for p in (speed, f"{left} left" if left else "") if p))
        if row.note and not speed:
            self.note.setText(row.note)
        self.setAccessibleName(f"{row.slot.label}: {words}")


class BenchPage(QWidget):
    back_requested = Signal()
    start_requested = Signal()

    def __init__(self, bench: BenchController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bench = bench
        self.tiles: list[SlotTile] = []
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Bench station", self))
        layout.addWidget(
            note(
                "Every card inserted is flashed as it arrives, with the image and settings "
                "chosen in steps 1 and 2. Remove a card when its tile says Done.",
                self,
            )
        )
        self.setup_box = BenchSetupBox(self)
        self.setup_box.changed.connect(self.refresh)
        layout.addWidget(self.setup_box)
        self.stage = QLabel(self)
        self.counters = QLabel(self)
        self.counters.setFont(scaled_font(self.counters, 1.0, bold=True))
        row = QHBoxLayout()
        row.addWidget(self.stage, 1)
        row.addWidget(self.counters)
        layout.addLayout(row)
        self.grid = QGridLayout()
        for column in range(TILE_COLUMNS):  # a tile keeps its size however many slots there are
            self.grid.setColumnStretch(column, 1)
        layout.addLayout(self.grid)
        self.empty = note("No card yet: insert one into a card reader.", self)
        layout.addWidget(self.empty)
        layout.addStretch(1)
        self.report = note("", self)
        layout.addWidget(self.report)
        buttons = QHBoxLayout()
        self.back = QPushButton("&Back", self)
        self.back.clicked.connect(self.back_requested)
        self.start = QPushButton("&Start", self)
        self.start.clicked.connect(self._start)
        self.stop = QPushButton("S&top", self)
        self.stop.setToolTip("Take no new cards; the ones being written are finished.")
        self.stop.clicked.connect(self._stop)
        self.include_present = QCheckBox("Also flash the cards &already inserted", self)
        self.include_present.setChecked(bench.setup.include_present)
        self.include_present.toggled.connect(lambda on: setattr(bench.setup, "include_present", on))
        buttons.addWidget(self.back)
        buttons.addWidget(self.include_present)
        buttons.addStretch(1)
        buttons.addWidget(self.start)
        buttons.addWidget(self.stop)
        layout.addLayout(buttons)
        bench.changed.connect(self.refresh)
        self.refresh()

    def showEvent(self, event: QShowEvent) -> None:
        if not self.bench.running:
            self.setup_box.load(self.bench.setup)
        super().showEvent(event)

    def _start(self) -> None:
        if self.setup_box.problem() is None:
            self.bench.setup = self.setup_box.apply(self.bench.setup)
            self.start_requested.emit()

    def _stop(self) -> None:
        self.stop.setEnabled(False)
        self.stop.setText("Stopping…")
        self.bench.stop()

    def refresh(self) -> None:
        bench, board = self.bench, self.bench.board
        running = bench.running
        self.back.setEnabled(not running)
        self.include_present.setEnabled(not running)
        self.setup_box.setEnabled(not running)
        problem = self.setup_box.problem()
        self.start.setEnabled(problem is None)
        self.start.setToolTip(problem or "")
        self.start.setVisible(not running)
        self.stop.setVisible(running)
        if not running:
            self.stop.setEnabled(True)
            self.stop.setText("S&top")
        if not running:
            self.stage.setText("Stopped." if board.done or board.failed else "Not started.")
        elif board.ready:
            self.stage.setText("Ready: insert cards.")
        else:
            self.stage.setText(f"Preparing the image: {board.stage}…")
        self.counters.setText(f"{board.done} done · {board.failed} failed · {board.active} busy")
        rows = board.rows()
        while len(self.tiles) < len(rows):
            tile = SlotTile(self)
            self.grid.addWidget(
                tile, len(self.tiles) // TILE_COLUMNS, len(self.tiles) % TILE_COLUMNS
            )
            self.tiles.append(tile)
        for tile, slot_row in zip(self.tiles, rows, strict=False):
            tile.show_row(slot_row)
        for index, tile in enumerate(self.tiles):
            tile.setVisible(index < len(rows))
        self.empty.setVisible(running and not rows)
        self.report.setText("\n".join(bench.report_lines))
        self.report.setVisible(bool(bench.report_lines))

    def focus_first(self) -> None:
        (self.stop if self.bench.running else self.start).setFocus(Qt.FocusReason.OtherFocusReason)
