"""Summaries of the raw runs: medians, rates, ratios, the markdown table and the goal check.

MB = 10^6 bytes throughout; "MB/s" is image bytes / median seconds (image-equivalent, even for
writers that skip unmapped blocks). Imports the standard library only.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MB = 1_000_000

# The goals of issue 14: flasher with verify against bmaptool from the same file.
BMAPTOOL_FACTORS = {"gz": 0.25, "zip": 0.25, "xz": 0.65}
MAPPED_FACTOR = 1.1
RSS_LIMIT_BYTES = 200 * MB
HELP_LIMIT_S = 0.3


@dataclass(frozen=True)
class Summary:
    key: str
    label: str
    tool: str
    source: str
    targets: int
    verify: bool
    image_cache: str
    runs: int
    failures: int
    median_s: float | None
    min_s: float | None
    max_s: float | None
    bytes_written_per_target: int | None
    peak_tree_rss_bytes: int
    max_process_rss_bytes: int
    checks: tuple[bool, ...]


def summarize(case_rows: Sequence[dict[str, Any]]) -> Summary:
    first = case_rows[0]
    good = [r for r in case_rows if r["returncode"] == 0 and r.get("ok", True)]
    secs = [r["seconds"] for r in good]
    written = [statistics.median(r["bytes_written"]) for r in good if r.get("bytes_written")]
    checks = tuple(bool(c["ok"]) for r in case_rows for c in r.get("checks", ()))
    return Summary(
        key=first["key"],
        label=first["label"],
        tool=first["tool"],
        source=first["source"],
        targets=first["targets"],
        verify=first["verify"],
        image_cache=first["image_cache"],
        runs=len(case_rows),
        failures=len(case_rows) - len(good),
        median_s=statistics.median(secs) if secs else None,
        min_s=min(secs) if secs else None,
        max_s=max(secs) if secs else None,
        bytes_written_per_target=int(statistics.median(written)) if written else None,
        peak_tree_rss_bytes=max(r["peak_tree_rss_bytes"] for r in case_rows),
        max_process_rss_bytes=max(r["max_process_rss_bytes"] for r in case_rows),
        checks=checks,
    )


def _find(summaries: Sequence[Summary], **want: Any) -> Summary | None:
    for s in summaries:
        if all(getattr(s, k) == v for k, v in want.items()):
            return s
    return None


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ratio(value: float | None, base: Summary | None) -> str:
    if value is None or base is None or base.median_s is None:
        return "-"
    return f"{value / base.median_s:.2f}×"


def _check_text(s: Summary) -> str:
    if not s.checks:
        return "-"
    bad = sum(1 for c in s.checks if not c)
    return f"ok ×{len(s.checks)}" if not bad else f"**FAILED {bad}/{len(s.checks)}**"


def markdown_table(summaries: Sequence[Summary], image_bytes: int) -> str:
    dd = _find(summaries, tool="dd", source="raw")
    lines = [
        "| case | runs | median s | min–max s | MB/s (image) | bytes written / target | vs dd "
        "| vs bmaptool | peak RSS tree (max proc) MB | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        bmap = _find(summaries, tool="bmaptool", source=s.source, verify=True, targets=s.targets)
        rate = "-" if not s.median_s else f"{image_bytes / s.median_s / MB:.0f}"
        spread = "-" if s.min_s is None else f"{s.min_s:.2f}–{s.max_s:.2f}"
        written = "-" if s.bytes_written_per_target is None else f"{s.bytes_written_per_target:,}"
        rss = f"{s.peak_tree_rss_bytes / MB:.0f} ({s.max_process_rss_bytes / MB:.0f})"
        failed = f" ({s.failures}/{s.runs} runs failed)" if s.failures else ""
        decode = s.tool == "decode"
        lines.append(
            f"| {s.label}{failed} | {s.runs} | {_fmt_s(s.median_s)} | {spread} | {rate} "
            f"| {written} "
            f"| {'-' if decode else _ratio(s.median_s, dd)} "
            f"| {'-' if decode or s.tool == 'bmaptool' else _ratio(s.median_s, bmap)} "
            f"| {rss} | {_check_text(s)} |"
        )
    return "\n".join(lines)


def _goal(name: str, value: str, limit: str, met: bool | None) -> dict[str, Any]:
    verdict = "not measured" if met is None else ("met" if met else "NOT met")
    return {"goal": name, "measured": value, "limit": limit, "verdict": verdict}


def goals(
    summaries: Sequence[Summary], help_s: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """The goals of issue 14 ("Goals"), judged on this run's medians."""
    out: list[dict[str, Any]] = []

    def flasher(source: str, targets: int = 1) -> Summary | None:
        return _find(
            summaries,
            tool="flasher",
            source=source,
            targets=targets,
            verify=True,
            image_cache="fresh",
        )

    def against(name: str, mine: Summary | None, ref: Summary | None, factor: float) -> None:
        if mine is None or ref is None or mine.median_s is None or ref.median_s is None:
            out.append(_goal(name, "-", "-", None))
            return
        value = f"{mine.median_s:.3f} s = {mine.median_s / ref.median_s:.2f}×"
        if mine.checks and not all(mine.checks):
            value += " (content check FAILED)"
        limit = f"{factor * ref.median_s:.3f} s = {factor:.2f}×"
        met = mine.median_s <= factor * ref.median_s and all(mine.checks) and not mine.failures
        out.append(_goal(name, value, limit, met))

    bmap_noverify = _find(summaries, tool="bmaptool", source="raw", verify=False, targets=1)
    against(
        "raw .img with verify ≤ bmaptool copy --bmap --no-verify",
        flasher("raw"),
        bmap_noverify,
        1.0,
    )
    for source, factor in BMAPTOOL_FACTORS.items():
        against(
            f".{source} with verify ≤ {factor}× bmaptool from the .{source}",
            flasher(source),
            _find(summaries, tool="bmaptool", source=source, verify=True, targets=1),
            factor,
        )
    raw = flasher("raw")
    if (
        raw
        and bmap_noverify
        and raw.bytes_written_per_target
        and bmap_noverify.bytes_written_per_target
    ):
        ratio = raw.bytes_written_per_target / bmap_noverify.bytes_written_per_target
        out.append(
            _goal(
                "bytes written ≤ 1.1× the .bmap's mapped bytes (raw)",
                f"{raw.bytes_written_per_target / MB:.1f} MB = {ratio:.2f}×",
                f"{1.1 * bmap_noverify.bytes_written_per_target / MB:.1f} MB",
                ratio <= MAPPED_FACTOR,
            )
        )
    for source in ("raw", "zip", "gz", "xz", "zst"):
        one, four = flasher(source), flasher(source, 4)
        if one and four and one.median_s and four.median_s is not None:
            out.append(
                {
                    "goal": f"context: four targets vs one ({source}, one shared disk)",
                    "measured": f"{four.median_s / one.median_s:.2f}×",
                    "limit": "-",
                    "verdict": "context",
                }
            )
    one_bmap = _find(summaries, tool="bmaptool", source="raw", verify=True, targets=1)
    four_bmap = _find(summaries, tool="bmaptool", source="raw", verify=True, targets=4)
    if one_bmap and four_bmap and one_bmap.median_s and four_bmap.median_s is not None:
        out.append(
            {
                "goal": "context: 4 × bmaptool in parallel vs 1 (same loop devices)",
                "measured": f"{four_bmap.median_s / one_bmap.median_s:.2f}×",
                "limit": "-",
                "verdict": "context",
            }
        )
    flashes = [s for s in summaries if s.tool == "flasher"]
    if flashes:
        peak = max(s.peak_tree_rss_bytes for s in flashes)
        out.append(
            _goal(
                "peak RSS of the flasher process tree",
                f"{peak / MB:.0f} MB",
                f"{RSS_LIMIT_BYTES / MB:.0f} MB",
                peak < RSS_LIMIT_BYTES,
            )
        )
    else:
        out.append(_goal("peak RSS of the flasher process tree", "-", "200 MB", None))
    for command, seconds in (help_s or {}).items():
        out.append(
            _goal(f"`{command}`", f"{seconds:.3f} s", f"{HELP_LIMIT_S} s", seconds < HELP_LIMIT_S)
        )
    return out


def goals_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| goal | measured (median) | limit | verdict |", "|---|---:|---:|---|"]
    lines += [f"| {g['goal']} | {g['measured']} | {g['limit']} | {g['verdict']} |" for g in rows]
    return "\n".join(lines)
