"""Look and feel that follows the system: palette-coloured SVG icons drawn at any scale, the few
accent colours, em-based sizes and fonts, and application-wide Qt defaults (HiDPI, names).

Icons are small SVG drawings whose `currentColor` is filled from the palette when painted, so
they follow a light or dark theme live and stay crisp at every device pixel ratio. Colours are
never hard-coded except the accents for success, warning and error.
"""

from __future__ import annotations

import enum
from pathlib import Path

from PySide6.QtCore import QByteArray, QPoint, QRect, QRectF, QSize, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QGuiApplication,
    QIcon,
    QIconEngine,
    QPainter,
    QPalette,
    QPixmap,
)
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication, QWidget

from flasher.resources import resource

APP_ID = "io.balena.Flasher"


class Accent(enum.Enum):
    """The only fixed colours: states read the same on light and dark backgrounds."""

    SUCCESS = "#2f9e44"
    WARNING = "#e08a00"
    ERROR = "#e03131"

    @property
    def color(self) -> QColor:
        return QColor(self.value)


def _svg(body: str) -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" '
        'stroke="currentColor" stroke-width="1.8" stroke-linecap="round" '
        f'stroke-linejoin="round">{body}</svg>'
    )


# Drawn for Flasher on a 24-unit grid; stroke only, so one colour fills them.
ICONS: dict[str, str] = {
    "sdcard": _svg(
        '<path d="M8 2.5h8.5l3 3V20a1.5 1.5 0 0 1-1.5 1.5H8A1.5 1.5 0 0 1 6.5 20'
        'V4A1.5 1.5 0 0 1 8 2.5z"/><path d="M9.5 5.5v3M12.5 5.5v3M15.5 6.5v2"/>'
    ),
    "usb": _svg(
        '<rect x="6.5" y="9" width="11" height="12.5" rx="2"/>'
        '<path d="M8.5 9V3.5h7V9"/><path d="M10.5 6h.01M13.5 6h.01"/>'
    ),
    "file": _svg(
        '<path d="M14 2.5H7A1.5 1.5 0 0 0 5.5 4v16A1.5 1.5 0 0 0 7 21.5h10a1.5 1.5 0 0 '
        '0 1.5-1.5V7z"/><path d="M14 2.5V7h4.5"/><circle cx="12" cy="14" r="3"/>'
    ),
    "disk": _svg(
        '<rect x="2.5" y="6" width="19" height="12" rx="2"/>'
        '<path d="M6 12h7"/><circle cx="17.5" cy="12" r="1"/>'
    ),
    "ok": _svg('<circle cx="12" cy="12" r="9.5"/><path d="M7.5 12.5l3 3 6-7"/>'),
    "error": _svg('<circle cx="12" cy="12" r="9.5"/><path d="M9 9l6 6M15 9l-6 6"/>'),
    "warning": _svg('<path d="M12 3L22 20.5H2z"/><path d="M12 9.5v5M12 17.5h.01"/>'),
    "info": _svg('<circle cx="12" cy="12" r="9.5"/><path d="M12 11v6M12 7.5h.01"/>'),
    "eye": _svg(
        '<path d="M1.5 12S5.5 5 12 5s10.5 7 10.5 7-4 7-10.5 7S1.5 12 1.5 12z"/>'
        '<circle cx="12" cy="12" r="3"/>'
    ),
    "eye-off": _svg(
        '<path d="M1.5 12S5.5 5 12 5s10.5 7 10.5 7-4 7-10.5 7S1.5 12 1.5 12z"/>'
        '<circle cx="12" cy="12" r="3"/><path d="M3.5 3.5l17 17"/>'
    ),
    "search": _svg('<circle cx="10.5" cy="10.5" r="6.5"/><path d="M15.5 15.5l5.5 5.5"/>'),
    "copy": _svg(
        '<rect x="8.5" y="8.5" width="12" height="12" rx="2"/>'
        '<path d="M15.5 8.5V5a1.5 1.5 0 0 0-1.5-1.5H5A1.5 1.5 0 0 0 3.5 5v9A1.5 1.5 0 0 '
        '0 5 15.5h3.5"/>'
    ),
    "folder": _svg(
        '<path d="M3 6.5A1.5 1.5 0 0 1 4.5 5h4l2 2.5h9A1.5 1.5 0 0 1 21 9v9.5a1.5 '
        '1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 3 18.5z"/>'
    ),
    "flash": _svg('<path d="M13 2.5L5 13.5h6.5l-1 8 8-11H12z"/>'),
    "retry": _svg('<path d="M20.5 12a8.5 8.5 0 1 1-2.5-6"/><path d="M20.5 3.5v5h-5"/>'),
}

ACCENTED = {"ok": Accent.SUCCESS, "error": Accent.ERROR, "warning": Accent.WARNING}


class SvgIconEngine(QIconEngine):
    """Paints an SVG with `currentColor` taken from the application palette at paint time."""

    def __init__(
        self,
        svg: str,
        accent: Accent | None = None,
        role: QPalette.ColorRole = QPalette.ColorRole.WindowText,
    ) -> None:
        super().__init__()
        self._svg = svg
        self._accent = accent
        self._role = role

    def _color(self, mode: QIcon.Mode) -> QColor:
        palette = QGuiApplication.palette()
        if mode == QIcon.Mode.Disabled:
            return palette.color(QPalette.ColorGroup.Disabled, self._role)
        if self._accent is not None:
            return self._accent.color
        if mode == QIcon.Mode.Selected:
            return palette.color(QPalette.ColorRole.HighlightedText)
        return palette.color(self._role)

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        data = self._svg.replace("currentColor", self._color(mode).name())
        renderer = QSvgRenderer(QByteArray(data.encode("utf-8")))
        renderer.render(painter, QRectF(rect))

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        return self.scaledPixmap(size, mode, state, 1.0)

    def scaledPixmap(
        self, size: QSize, mode: QIcon.Mode, state: QIcon.State, scale: float
    ) -> QPixmap:
        pixmap = QPixmap(size * scale)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.paint(painter, QRect(QPoint(0, 0), size * scale), mode, state)
        painter.end()
        pixmap.setDevicePixelRatio(scale)
        return pixmap

    def clone(self) -> QIconEngine:
        return SvgIconEngine(self._svg, self._accent, self._role)


def icon(name: str) -> QIcon:
    """One of the ICONS, tinted by the palette (or its accent for ok/error/warning)."""
    return QIcon(SvgIconEngine(ICONS[name], ACCENTED.get(name)))


def drive_icon(bus: str, is_file: bool) -> QIcon:
    if is_file:
        return icon("file")
    return icon({"usb": "usb", "mmc": "sdcard"}.get(bus, "disk"))


def app_icon() -> QIcon:
    """The application icon from the package data, else the installed theme icon (a zipapp
    has no file for Qt to open)."""
    try:
        ref = resource(f"icons/{APP_ID}.svg")
    except FileNotFoundError:
        return QIcon.fromTheme(APP_ID)
    return QIcon(str(ref)) if isinstance(ref, Path) else QIcon.fromTheme(APP_ID)


def em(widget: QWidget, count: float = 1.0) -> int:
    """`count` times the height of the widget's font, in device-independent pixels."""
    return round(widget.fontMetrics().height() * count)


def scaled_font(widget: QWidget, factor: float, *, bold: bool = False) -> QFont:
    font = QFont(widget.font())
    if font.pointSizeF() > 0:
        font.setPointSizeF(font.pointSizeF() * factor)
    else:
        font.setPixelSize(round(font.pixelSize() * factor))
    font.setBold(bold)
    return font


def tint(widget: QWidget, role: QPalette.ColorRole, accent: Accent) -> None:
    """Colour one role of one widget with an accent (a failed progress bar, an error label);
    every other role keeps following the application palette."""
    palette = widget.palette()
    palette.setColor(role, accent.color)
    widget.setPalette(palette)


def muted(widget: QWidget) -> None:
    """Secondary text in the palette's placeholder colour. A role, not a copied colour, so it
    follows a theme switch while the app runs."""
    widget.setForegroundRole(QPalette.ColorRole.PlaceholderText)


def prepare_application() -> None:
    """Process-wide defaults that must be set before the QApplication exists."""
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )


def configure_application(app: QApplication) -> None:
    app.setApplicationName("flasher")
    app.setApplicationDisplayName("Flasher")
    app.setOrganizationName("balena")
    # Wayland compositors find the window's icon and name through the desktop file.
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(app_icon())
