"""The benchmark's goal check judges a run's medians against issue 14's goals."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from benchlib import report


def _rows(
    tool: str, source: str, seconds: float, *, verify: bool, written: int
) -> list[dict[str, Any]]:
    key = f"{tool}/{source}/{'verify' if verify else 'noverify'}"
    return [
        {
            "key": key,
            "label": key,
            "tool": tool,
            "source": source,
            "targets": 1,
            "verify": verify,
            "image_cache": "fresh",
            "returncode": 0,
            "seconds": seconds,
            "bytes_written": [written],
            "peak_tree_rss_bytes": 150_000_000,
            "max_process_rss_bytes": 90_000_000,
            "checks": [{"ok": True}],
        }
    ]


def _goals(flasher_raw_s: float, flasher_gz_s: float, flasher_written: int) -> dict[str, str]:
    summaries = [
        report.summarize(_rows("bmaptool", "raw", 1.0, verify=False, written=100_000_000)),
        report.summarize(_rows("bmaptool", "gz", 4.0, verify=True, written=100_000_000)),
        report.summarize(
            _rows("flasher", "raw", flasher_raw_s, verify=True, written=flasher_written)
        ),
        report.summarize(
            _rows("flasher", "gz", flasher_gz_s, verify=True, written=flasher_written)
        ),
    ]
    rows = report.goals(summaries, {"flasher --help": 0.2})
    return {g["goal"]: g["verdict"] for g in rows}


@pytest.mark.parametrize(
    ("raw_s", "gz_s", "written", "raw_met", "gz_met", "map_met"),
    [
        (0.9, 0.9, 105_000_000, "met", "met", "met"),
        (1.1, 1.1, 115_000_000, "NOT met", "NOT met", "NOT met"),
    ],
)
def test_goals_compare_flasher_with_bmaptool_from_the_same_file(
    raw_s: float, gz_s: float, written: int, raw_met: str, gz_met: str, map_met: str
) -> None:
    verdicts = _goals(raw_s, gz_s, written)
    assert verdicts["raw .img with verify ≤ bmaptool copy --bmap --no-verify"] == raw_met
    assert verdicts[".gz with verify ≤ 0.25× bmaptool from the .gz"] == gz_met
    assert verdicts["bytes written ≤ 1.1× the .bmap's mapped bytes (raw)"] == map_met


def test_goals_mark_formats_without_rows_as_not_measured() -> None:
    verdicts = _goals(0.9, 0.9, 100_000_000)
    assert verdicts[".xz with verify ≤ 0.65× bmaptool from the .xz"] == "not measured"
    assert verdicts["`flasher --help`"] == "met"
