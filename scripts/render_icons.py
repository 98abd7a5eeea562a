#!/usr/bin/env python3
"""Render flasher/data/icons/io.balena.Flasher.svg into the PNG sizes desktops still ask for, laid
out as an XDG icon theme: resources/icons/hicolor/<N>x<N>/apps/io.balena.Flasher.png.

    python3 scripts/render_icons.py

Uses Qt's SVG renderer offscreen; run it again after editing the SVG.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVG_DIR = ROOT / "flasher" / "data" / "icons"
ICONS = ROOT / "resources" / "icons"
NAME = "io.balena.Flasher"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(SVG_DIR / f"{NAME}.svg"))
    if not renderer.isValid():
        sys.exit(f"cannot read {SVG_DIR / f'{NAME}.svg'}")
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        folder = ICONS / "hicolor" / f"{size}x{size}" / "apps"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(str(folder / f"{NAME}.png"))
        print(f"wrote {folder / f'{NAME}.png'}")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
