"""Text contrast meets WCAG AA (4.5:1) in the light theme Qt gives the app and in a dark theme:
main and secondary text, and every accent (errors, warnings, success) on the window, the views
and the banners' background — computed from the palettes the window really uses."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from flasher.gui.theme import (
    MIN_TEXT_CONTRAST,
    Accent,
    contrast_ratio,
    readable_palette,
    sample_dark_palette,
    shown_on,
)

Role = QPalette.ColorRole
BACKGROUNDS = (Role.Window, Role.Base, Role.AlternateBase)
TEXT_PAIRS = (
    (Role.WindowText, Role.Window),
    (Role.Text, Role.Base),
    (Role.Text, Role.AlternateBase),
    (Role.ButtonText, Role.Button),
    (Role.PlaceholderText, Role.Window),
    (Role.PlaceholderText, Role.Base),
)


def _palette(theme: str) -> QPalette:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    palette = app.style().standardPalette() if theme == "light" else sample_dark_palette()
    return readable_palette(palette) or palette


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize(("text", "background"), TEXT_PAIRS, ids=lambda r: r.name)
def test_text_contrast_meets_wcag_aa(
    qapp: QApplication, theme: str, text: Role, background: Role
) -> None:
    palette = _palette(theme)
    bg = palette.color(background)
    assert contrast_ratio(shown_on(palette.color(text), bg), bg) >= MIN_TEXT_CONTRAST


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("accent", list(Accent), ids=lambda a: a.name)
@pytest.mark.parametrize("background", BACKGROUNDS, ids=lambda r: r.name)
def test_accent_contrast_meets_wcag_aa(
    qapp: QApplication, theme: str, accent: Accent, background: Role
) -> None:
    palette = _palette(theme)
    window = palette.color(Role.Window)
    bg = palette.color(background)
    assert contrast_ratio(accent.on(window), bg) >= MIN_TEXT_CONTRAST


def test_ratio_of_black_on_white_is_21(qapp: QApplication) -> None:
    assert contrast_ratio(QColor("#000000"), QColor("#ffffff")) == pytest.approx(21.0)
