"""PySide6 desktop app: the only package that imports Qt.

Importing it first shields the interpreter from PySide6's reference-count slips on None, True
and False (see flasher.gui.compat), before any widget exists.
"""

from flasher.gui.compat import pin_singletons

pin_singletons()
