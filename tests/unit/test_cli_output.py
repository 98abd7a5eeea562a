"""How the command line words measured times and sizes."""

from __future__ import annotations

from flasher.cli.output import human_bytes, human_seconds


def test_a_sub_second_time_keeps_two_decimals() -> None:
    assert human_seconds(0.037) == "0.04 s"  # a small card's flash, not "0.0 s"
    assert human_seconds(0.999) == "1.00 s"
    assert human_seconds(3.24) == "3.2 s"
    assert human_seconds(74.0) == "74.0 s"


def test_sizes_are_decimal_units() -> None:
    assert human_bytes(8_300_000) == "8.3 MB"
    assert human_bytes(512) == "512 B"
