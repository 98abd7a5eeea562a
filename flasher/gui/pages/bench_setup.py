"""The bench page's setup: which cards the bench takes (any removable card, or only the slots
named by patterns, as `flasher bench --slot` takes them) and the per-card hostname template
(`--hostname-template`). Each field is checked by the bench core's own rules as it is typed; the
page keeps Start disabled while one is wrong and says why under it.

Imports Qt widgets, the bench core's policy and template rules, and the shared widgets only.
"""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QRadioButton,
    QWidget,
)

from flasher.bench.image import check_hostname_template
from flasher.bench.policy import DrivePolicy
from flasher.errors import ConfigError
from flasher.gui.bench import BenchSetup
from flasher.gui.widgets import FieldError, form_layout

SLOT_HINT = "e.g. sd[b-e] or by-path names, separated by spaces"
TEMPLATE_HINT = "e.g. kiosk-{n:03d} — {n} counts cards, {slot} and {serial} name them"


def _sentence(subject: str, err: ConfigError) -> str:
    return f"{subject} {err.rule}." if err.field == "hostname_template" else f"{err.rule}."


class BenchSetupBox(QGroupBox):
    """The cards to take and each card's hostname; `apply` writes them into a BenchSetup."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Cards", parent)
        form = form_layout(self)
        self.any_radio = QRadioButton("Any &removable card (USB and SD card readers)", self)
        self.slots_radio = QRadioButton("Only these sl&ots:", self)
        self.kinds = QButtonGroup(self)
        self.kinds.addButton(self.any_radio)
        self.kinds.addButton(self.slots_radio)
        self.any_radio.setChecked(True)
        self.slots_edit = QLineEdit(self)
        self.slots_edit.setPlaceholderText(SLOT_HINT)
        self.slots_edit.setAccessibleName("bench slots")
        row = QHBoxLayout()
        row.addWidget(self.any_radio)
        row.addWidget(self.slots_radio)
        row.addWidget(self.slots_edit, 1)
        form.addRow(row)
        self.slots_error = FieldError(self)
        form.addRow(self.slots_error.in_reserved_line(self))
        self.template_edit = QLineEdit(self)
        self.template_edit.setPlaceholderText(TEMPLATE_HINT)
        self.template_edit.setAccessibleName("per-card hostname template")
        self.template_edit.setToolTip(
            "Each card gets its own hostname; it replaces the hostname set in step 2."
        )
        form.addRow("Per-card &hostname:", self.template_edit)
        self.template_error = FieldError(self)
        form.addRow(self.template_error.in_reserved_line(self))
        for signal in (
            self.slots_edit.textChanged,
            self.template_edit.textChanged,
            self.slots_radio.toggled,
        ):
            signal.connect(self._edited)
        self._edited()

    def load(self, setup: BenchSetup) -> None:
        """Show what `setup` takes (the slots it names, its template)."""
        slots = setup.policy.slots
        (self.slots_radio if slots else self.any_radio).setChecked(True)
        self.slots_edit.setText(" ".join(str(slot) for slot in slots))
        self.template_edit.setText(setup.hostname_template or "")

    def slot_patterns(self) -> tuple[str, ...]:
        return tuple(self.slots_edit.text().split()) if self.slots_radio.isChecked() else ()

    def hostname_template(self) -> str | None:
        return self.template_edit.text().strip() or None

    def _slots_problem(self) -> str | None:
        if not self.slots_radio.isChecked():
            return None
        if not self.slot_patterns():
            return "Name at least one slot, or take any removable card."
        try:
            DrivePolicy(slots=self.slot_patterns())
        except ConfigError as err:
            return _sentence("The slot", err)
        return None

    def _template_problem(self) -> str | None:
        template = self.hostname_template()
        if template is None:
            return None
        try:
            check_hostname_template(template, numbered_slots=bool(self.slot_patterns()))
        except ConfigError as err:
            return _sentence("The template", err)
        return None

    def problem(self) -> str | None:
        """Why the bench cannot start with these settings; None when it can."""
        return self._slots_problem() or self._template_problem()

    def _edited(self, *_args: object) -> None:
        self.slots_edit.setEnabled(self.slots_radio.isChecked())
        self.slots_error.show_error(self._slots_problem())
        self.template_error.show_error(self._template_problem())
        self.changed.emit()

    def apply(self, setup: BenchSetup) -> BenchSetup:
        """`setup` with these slots and this template (its buses and report stay)."""
        return replace(
            setup,
            policy=replace(setup.policy, slots=self.slot_patterns()),
            hostname_template=self.hostname_template(),
        )
