"""Small widgets the pages share: inline field errors, a secret field with show/hide, message
banners with a details button, the step header, headings, a search field that steers its list,
the status lines under an image field, and form layouts (two form columns,
an expander that shows its body while ticked).

Everything is sized from the font (no fixed pixel sizes) and coloured from the palette, except
the error/warning/success accents.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeyEvent, QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from flasher.gui.theme import Accent, em, icon, muted, scaled_font, tint


def heading(text: str, parent: QWidget | None = None, *, factor: float = 1.35) -> QLabel:
    label = QLabel(text, parent)
    label.setFont(scaled_font(label, factor, bold=True))
    label.setAccessibleName(text)
    return label


def note(text: str = "", parent: QWidget | None = None) -> QLabel:
    """Secondary text that wraps: explanations, detected values, sizes."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    muted(label)
    return label


RESERVED_ERROR_LINES = 2  # most rules fit one line; none jumps the fields when it wraps


class FieldError(QLabel):
    """The rule a field breaks, right under it; hidden while the field is fine."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        tint(self, QPalette.ColorRole.WindowText, Accent.ERROR)
        self.setAccessibleName("field error")
        self.hide()

    def in_reserved_line(self, parent: QWidget | None) -> QWidget:
        """The error in a holder two text lines high that stays when the error hides, so the
        fields below do not jump as errors come, go or wrap. A longer error is cut at the
        holder's edge; its whole text is the tooltip."""
        holder = QWidget(parent)
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self)
        column.addStretch(1)
        holder.setFixedHeight(RESERVED_ERROR_LINES * self.fontMetrics().lineSpacing())
        return holder

    def show_error(self, text: str | None) -> None:
        self.setText(text or "")
        self.setToolTip(text or "")
        self.setVisible(bool(text))


class SecretEdit(QLineEdit):
    """A password-style field with a show/hide toggle at its end."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEchoMode(QLineEdit.EchoMode.Password)
        self.toggle = QAction(icon("eye"), "Show", self)
        self.toggle.setCheckable(True)
        self.toggle.toggled.connect(self._toggled)
        self.addAction(self.toggle, QLineEdit.ActionPosition.TrailingPosition)

    def _toggled(self, shown: bool) -> None:
        self.setEchoMode(QLineEdit.EchoMode.Normal if shown else QLineEdit.EchoMode.Password)
        self.toggle.setIcon(icon("eye-off" if shown else "eye"))
        self.toggle.setText("Hide" if shown else "Show")


class Banner(QFrame):
    """A message in a framed box: icon, headline, next step and an optional Details button."""

    details_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.AlternateBase)
        self._icon = QLabel(self)
        self._icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setFont(scaled_font(self.message, 1.0, bold=True))
        self.hint = note("", self)
        self.details = QPushButton("Details…", self)
        self.details.setIcon(icon("info"))
        self.details.clicked.connect(self.details_requested)
        text = QVBoxLayout()
        text.addWidget(self.message)
        text.addWidget(self.hint)
        row = QHBoxLayout(self)
        row.addWidget(self._icon)
        row.addLayout(text, 1)
        row.addWidget(self.details, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(
        self, kind: str, message: str, hint: str | None = None, *, details: bool = False
    ) -> None:
        size = em(self, 1.4)
        self._icon.setPixmap(icon(kind).pixmap(size, size))
        self.message.setText(message)
        self.hint.setText(hint or "")
        self.hint.setVisible(bool(hint))
        self.details.setVisible(details)
        self.setAccessibleDescription(f"{message} {hint or ''}".strip())
        self.show()


class StepHeader(QWidget):
    """ "1 OS — 2 Configure — 3 Targets": shows where you are; earlier steps are clickable."""

    step_clicked = Signal(int)

    def __init__(self, titles: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.buttons: list[QToolButton] = []
        for number, title in enumerate(titles, start=1):
            if number > 1:
                line = QFrame(self)
                line.setFrameShape(QFrame.Shape.HLine)
                line.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
                row.addWidget(line, 1)
            button = QToolButton(self)
            button.setText(f"{number}  {title}")
            button.setCheckable(True)
            button.setAutoRaise(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            button.clicked.connect(lambda _checked=False, i=number - 1: self.step_clicked.emit(i))
            row.addWidget(button)
            self.buttons.append(button)

    def set_current(self, index: int, reachable: int) -> None:
        """Highlight step `index`; steps up to `reachable` can be clicked."""
        for i, button in enumerate(self.buttons):
            button.setChecked(i == index)
            button.setEnabled(i <= reachable)
            button.setFont(scaled_font(button, 1.0, bold=i == index))


def expander(title: str, parent: QWidget) -> tuple[QCheckBox, QWidget, QWidget]:
    """A tick box with a framed body that shows only while it is ticked: advanced parts stay
    one line until they are wanted, so the page fits the window. Returns the box, the whole
    part and the body to fill."""
    part = QWidget(parent)
    column = QVBoxLayout(part)
    column.setContentsMargins(0, 0, 0, 0)
    check = QCheckBox(title, part)
    body = QFrame(part)
    body.setFrameShape(QFrame.Shape.StyledPanel)
    column.addWidget(check)
    column.addWidget(body)
    body.hide()
    check.toggled.connect(body.setVisible)
    return check, part, body


def two_forms(body: QWidget) -> tuple[QFormLayout, QFormLayout]:
    """Two form columns side by side: an expanded group stays two rows high."""
    row = QHBoxLayout(body)
    forms = (QFormLayout(), QFormLayout())
    for form in forms:
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        row.addLayout(form, 1)
    return forms


def form_layout(group: QWidget) -> QFormLayout:
    form = QFormLayout(group)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    # In a narrow window a label goes above its field rather than squeezing it.
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


class SearchField(QLineEdit):
    """Arrow keys move through the list below while the focus stays in the search field."""

    def __init__(self, view: QTreeView, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._view = view

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up, Qt.Key.Key_PageDown, Qt.Key.Key_PageUp):
            self._view.keyPressEvent(event)
            return
        super().keyPressEvent(event)


def image_status(panel: QWidget, layout: QVBoxLayout) -> tuple[QProgressBar, QLabel, FieldError]:
    """A bar, a status line and an error line under an image file or URL field."""
    progress = QProgressBar(panel)
    progress.hide()
    status = QLabel(panel)
    status.setWordWrap(True)
    status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    error = FieldError(panel)
    layout.addWidget(progress)
    layout.addWidget(status)
    layout.addWidget(error)
    return progress, status, error
