"""The bench report: one JSON line per card, appended as each card ends, never rewritten.

Each record says which card (slot, serial, model, size), what it got (image and config.json
hashes, hostname), and how it went (bytes written, time, speed, verified, error code and
message). Records hold no secrets: the configuration appears only as its hash. Core: never
prints, imports no Qt.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs

from flasher.error_codes import Action
from flasher.errors import FlasherError

REPORT_ENV = "FLASHER_BENCH_REPORT"


def default_report_path() -> Path:
    """$FLASHER_BENCH_REPORT, else cards.jsonl in the user's data directory."""
    override = os.environ.get(REPORT_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_data_dir("flasher")) / "bench" / "cards.jsonl"


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class CardRecord:
    """How one card ended. `seconds` is the card's whole time in the station (configure, check,
    write, verify); `write_seconds` the writer's part, which `mb_per_s` is measured over."""

    timestamp: str
    card: int
    slot: str
    slot_number: int | None
    device: str
    serial: str | None
    vendor: str | None
    model: str | None
    size_bytes: int
    image_sha256: str | None
    device_type: str | None
    os_version: str | None
    config_sha256: str | None
    hostname: str | None
    ok: bool
    verified: bool
    bytes_written: int
    seconds: float
    write_seconds: float
    written_sha256: str | None
    error_code: str | None = None
    error_message: str | None = None
    error_hint: str | None = None
    device_uuid: str | None = None
    capacity_bytes: int | None = None
    boot: dict[str, Any] | None = None  # the boot check's result, when the bench runs one
    slot_name: str | None = None  # the operator's name for the slot, when it has one
    ejected: bool | None = None  # powered off once verified; None when not asked to

    @property
    def mb_per_s(self) -> float | None:
        if self.write_seconds <= 0 or self.bytes_written <= 0:
            return None
        return round(self.bytes_written / self.write_seconds / 1e6, 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("error_code", "error_message", "error_hint"):
            del out[key]
        if self.boot is None:
            del out["boot"]
        out["seconds"] = round(self.seconds, 3)
        out["write_seconds"] = round(self.write_seconds, 3)
        out["mb_per_s"] = self.mb_per_s
        out["error"] = (
            {"code": self.error_code, "message": self.error_message, "hint": self.error_hint}
            if self.error_code is not None
            else None
        )
        # A device registered for a card that then failed is listed in the fleet, unflashed.
        out["device_state"] = (
            None if self.device_uuid is None else "flashed" if self.ok else "registered_unflashed"
        )
        return out


class ReportLog:
    """Appends CardRecords to a JSON-lines file, one whole line per write, synced to disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise FlasherError(
                f"The bench report {self.path} cannot be written: {err.strerror or err}.",
                action=Action.CHOOSE_REPORT_FILE,
            ) from None
        os.close(fd)

    def count(self) -> int:
        """How many records the file already holds (cards of earlier runs)."""
        try:
            with open(self.path, "rb") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def records(self) -> list[dict[str, Any]]:
        """Every record in the file, oldest first."""
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def append(self, record: CardRecord) -> None:
        line = (json.dumps(record.to_dict(), sort_keys=False) + "\n").encode()
        with self._lock:
            try:
                fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
                )
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as err:
                raise FlasherError(
                    f"The bench report {self.path} cannot be written: {err.strerror or err}.",
                    hint="Free some space; the station stopped taking cards so none goes "
                    "unrecorded.",
                    action=Action.CHOOSE_REPORT_FILE,
                ) from None
