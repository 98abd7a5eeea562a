"""The interpreter survives PySide6 builds that steal references to None and True: after
flasher.gui is imported, a long session's worth of void calls and emits cannot exhaust them."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLineEdit
from pytestqt.qtbot import QtBot

from flasher.gui.compat import PIN_REFERENCES, void_calls_steal_none


class _Sender(QObject):
    changed = Signal(str)


def test_none_and_true_cannot_run_out(qtbot: QtBot) -> None:
    if not void_calls_steal_none():
        pytest.skip("this PySide6 keeps the reference counts of None and True balanced")
    field = QLineEdit()
    sender = _Sender()
    sender.changed.connect(field.setText)
    for n in range(100_000):
        field.setText(str(n))
        sender.changed.emit("x")
    assert sys.getrefcount(None) > PIN_REFERENCES // 2
    assert sys.getrefcount(True) > PIN_REFERENCES // 2


def test_probe_agrees_with_a_direct_count() -> None:
    """The probe measures the installed PySide6; it agrees with a direct count."""
    before = sys.getrefcount(None)
    probe = QObject()
    for _ in range(64):
        probe.setObjectName("x")
    stolen = before - sys.getrefcount(None) >= 32
    assert void_calls_steal_none() == stolen
