"""Summaries of bench records: per station, per day (UTC), per card model: cards done, failed by
reason, cards per hour and the median write speed. The same code reads a local JSON-lines
report or the rows of the report database.

Cards per hour is the group's card count over the time from the first card's start (its end
minus its `seconds` in the station) to the last card's end. Core: pure, never prints; the
database rows are fetched through flasher.bench.reportdb.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flasher.bench.reportdb import TABLE, connect, describe_dsn
from flasher.errors import FlasherError

UNKNOWN_MODEL = "(unknown)"


@dataclass(frozen=True)
class GroupSummary:
    station: str
    day: str
    model: str
    done: int
    failed: int
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    cards_per_hour: float | None = None
    median_mb_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "station": self.station,
            "day": self.day,
            "model": self.model,
            "done": self.done,
            "failed": self.failed,
            "failed_by_reason": dict(sorted(self.failed_by_reason.items())),
            "cards_per_hour": self.cards_per_hour,
            "median_mb_per_s": self.median_mb_per_s,
        }


def _ended(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["timestamp"]))


def _started(record: dict[str, Any]) -> datetime:
    return _ended(record) - timedelta(seconds=float(record.get("seconds") or 0))


def _model(record: dict[str, Any]) -> str:
    parts = [p for p in (record.get("vendor"), record.get("model")) if p]
    return " ".join(str(p) for p in parts) or UNKNOWN_MODEL


def summarise(rows: Iterable[tuple[str, dict[str, Any]]]) -> list[GroupSummary]:
    """Groups of (station, record) pairs, sorted by station, day and model."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for station, record in rows:
        day = _ended(record).date().isoformat()
        groups.setdefault((station, day, _model(record)), []).append(record)
    out = []
    for (station, day, model), records in sorted(groups.items()):
        done = [r for r in records if r.get("ok")]
        reasons: dict[str, int] = {}
        for r in records:
            if not r.get("ok"):
                code = str((r.get("error") or {}).get("code") or "unknown")
                reasons[code] = reasons.get(code, 0) + 1
        first_start = min(
            _ended(r) - timedelta(seconds=float(r.get("seconds") or 0)) for r in records
        )
        span_h = (max(_ended(r) for r in records) - first_start).total_seconds() / 3600
        speeds = [float(r["mb_per_s"]) for r in done if r.get("mb_per_s")]
        out.append(
            GroupSummary(
                station=station,
                day=day,
                model=model,
                done=len(done),
                failed=len(records) - len(done),
                failed_by_reason=reasons,
                cards_per_hour=round(len(records) / span_h, 1) if span_h > 0 else None,
                median_mb_per_s=round(statistics.median(speeds), 1) if speeds else None,
            )
        )
    return out


def records_from_file(path: str | Path, station: str) -> list[tuple[str, dict[str, Any]]]:
    """The (station, record) pairs of a local report."""
    try:
        with open(path, encoding="utf-8") as f:
            return [(station, json.loads(line)) for line in f if line.strip()]
    except FileNotFoundError:
        raise FlasherError(f"There is no bench report at {path}.") from None
    except (OSError, ValueError) as err:
        raise FlasherError(f"The bench report {path} cannot be read: {err}.") from None


def records_from_db(dsn: str, stations: Sequence[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The (station, record) pairs in the report database, in station and card order."""
    query = f"SELECT station, record FROM {TABLE}"
    params: list[Any] = []
    if stations:
        query += " WHERE station = ANY(%s)"
        params.append(list(stations))
    query += " ORDER BY station, card"
    with connect(dsn) as conn:
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return [(str(s), r if isinstance(r, dict) else json.loads(r)) for s, r in cur]
        except Exception as err:
            if type(err).__module__.startswith("psycopg"):
                raise FlasherError(
                    f"The report database {describe_dsn(dsn)} cannot be read "
                    f"({type(err).__name__}).",
                    hint="Check that stations have sent records to it.",
                ) from None
            raise
