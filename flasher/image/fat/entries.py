"""FAT directory records: 8.3 short names, VFAT long names, timestamps, 32-byte entry coding.

Pure functions over bytes; no I/O. Imports only the standard library.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

ENTRY_SIZE = 32
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LFN = 0x0F
DELETED = 0xE5
# NT reserved byte: the base name / extension are stored upper case but displayed lower case.
CASE_LOWER_BASE = 0x08
CASE_LOWER_EXT = 0x10
LFN_LAST = 0x40
LFN_CHARS_PER_ENTRY = 13
MAX_LONG_NAME = 255
MAX_NUMERIC_TAIL = 999_999
DOT_NAME = b".          "
DOTDOT_NAME = b"..         "

DIR_ENTRY = struct.Struct("<11sBBBHHHHHHHI")
SHORT_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$%'-_@~`!(){}^#&")
LONG_NAME_FORBIDDEN = frozenset('"*/:<>?\\|')
FAT_EPOCH = datetime(1980, 1, 1)
FAT_LAST = datetime(2107, 12, 31, 23, 59, 58)
SHORT_NAME_CODEC = "cp437"


@dataclass(frozen=True)
class Record:
    """One live directory record: its short entry at `slot`, long-name entries from `first_slot`."""

    name: str
    short: bytes
    attr: int
    first_cluster: int
    size: int
    slot: int
    first_slot: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attr & ATTR_DIRECTORY)

    @property
    def short_display(self) -> str:
        return display_short(self.short, 0)


@dataclass(frozen=True)
class Listing:
    records: tuple[Record, ...]
    label: str | None
    end_slot: int  # the first 0x00 entry: it and every slot after it are free


@dataclass(frozen=True)
class Stamp:
    """A FAT timestamp: packed date, packed 2-second time, and 10 ms units for creation."""

    date: int
    time: int
    tenths: int


def fat_stamp(mtime: datetime | int) -> Stamp:
    """Pack `mtime` (UTC seconds, or a datetime: naive taken as-is, aware converted to UTC).

    FAT stores 1980-2107 only; times outside that range are clamped to its ends.
    """
    if isinstance(mtime, datetime):
        when = mtime.astimezone(UTC).replace(tzinfo=None) if mtime.tzinfo else mtime
    else:
        when = datetime.fromtimestamp(mtime, UTC).replace(tzinfo=None)
    when = min(max(when, FAT_EPOCH), FAT_LAST)
    date = ((when.year - 1980) << 9) | (when.month << 5) | when.day
    time = (when.hour << 11) | (when.minute << 5) | (when.second // 2)
    return Stamp(date, time, (when.second % 2) * 100 + when.microsecond // 10_000)


def lfn_checksum(short: bytes) -> int:
    total = 0
    for byte in short:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def display_short(short: bytes, case_flags: int) -> str:
    raw = (b"\xe5" + short[1:]) if short[0] == 0x05 else short
    base = raw[:8].rstrip(b" ").decode(SHORT_NAME_CODEC)
    ext = raw[8:11].rstrip(b" ").decode(SHORT_NAME_CODEC)
    if case_flags & CASE_LOWER_BASE:
        base = base.lower()
    if case_flags & CASE_LOWER_EXT:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def parse_directory(data: bytes) -> Listing:
    """Decode a directory's bytes into its live records, skipping `.`, `..` and deleted ones.

    Long names whose sequence or checksum does not match their short entry are ignored, as
    every FAT driver does, and the short name is used instead.
    """
    records: list[Record] = []
    label: str | None = None
    parts: list[bytes] = []
    expect = 0
    checksum = -1
    start = 0
    total = len(data) // ENTRY_SIZE
    for slot in range(total):
        entry = data[slot * ENTRY_SIZE : (slot + 1) * ENTRY_SIZE]
        first, attr = entry[0], entry[11]
        if first == 0:
            return Listing(tuple(records), label, slot)
        if first == DELETED:
            parts, expect = [], 0
            continue
        if attr & 0x3F == ATTR_LFN:
            seq = first & 0x1F
            if first & LFN_LAST and seq:
                parts, expect, checksum, start = [], seq, entry[13], slot
            if expect and seq == expect and entry[13] == checksum:
                parts.append(entry[1:11] + entry[14:26] + entry[28:32])
                expect -= 1
            else:
                parts, expect = [], 0
            continue
        short = bytes(entry[:11])
        long_ok = bool(parts) and expect == 0 and lfn_checksum(short) == checksum
        if attr & ATTR_VOLUME_ID and not attr & ATTR_DIRECTORY:
            label = short.decode(SHORT_NAME_CODEC).rstrip(" ")
        elif short not in (DOT_NAME, DOTDOT_NAME):
            _, _, ntres, _, _, _, _, hi, _, _, lo, size = DIR_ENTRY.unpack(entry)
            name = _join_long(parts[::-1]) if long_ok else display_short(short, ntres)
            records.append(
                Record(name, short, attr, (hi << 16) | lo, size, slot, start if long_ok else slot)
            )
        parts, expect = [], 0
    return Listing(tuple(records), label, total)


def _join_long(parts: list[bytes]) -> str:
    raw = b"".join(parts)
    for i in range(0, len(raw), 2):
        if raw[i : i + 2] == b"\0\0":
            raw = raw[:i]
            break
    return raw.decode("utf-16-le", "replace")


def long_name_problem(name: str) -> str | None:
    """Why `name` cannot be a FAT long file name, or None when it can."""
    if name in ("", ".", ".."):
        return "is empty or a dot name"
    if any(c in LONG_NAME_FORBIDDEN or ord(c) < 0x20 for c in name):
        return 'contains a character FAT forbids (control characters or "*/:<>?\\|)'
    if name[-1] in " .":
        return "ends with a space or a period"
    if len(name.encode("utf-16-le")) // 2 > MAX_LONG_NAME:
        return f"is longer than {MAX_LONG_NAME} UTF-16 units"
    return None


def short_name_for(name: str, taken: set[bytes]) -> bytes:
    """The 11-byte short name Windows would give `name` in a directory holding `taken`.

    Upper-cased, characters outside the short-name set become `_`, spaces and leading periods
    are dropped; a `~N` tail (the lowest free N) is added when the conversion lost anything,
    the name does not fit 8.3, or the plain basis is taken.
    """
    upper = name.upper()
    lossy = False
    chars: list[str] = []
    for c in upper:
        if c == " ":
            lossy = True
        elif c == "." or c in SHORT_NAME_CHARS:
            chars.append(c)
        else:
            chars.append("_")
            lossy = True
    text = "".join(chars)
    stripped = text.lstrip(".")
    lossy = lossy or stripped != text
    base_part, dot, ext_part = stripped.rpartition(".")
    if not dot:
        base_part, ext_part = stripped, ""
    base = base_part.split(".", 1)[0][:8] or "_"
    ext = ext_part[:3]
    fits = not lossy and base == base_part and ext == ext_part
    plain = _pad(base, ext)
    if fits and plain not in taken:
        return plain
    for n in range(1, MAX_NUMERIC_TAIL + 1):
        tail = f"~{n}"
        candidate = _pad(base[: 8 - len(tail)] + tail, ext)
        if candidate not in taken:
            return candidate
    raise ValueError(f"no free short name for {name!r}")


def _pad(base: str, ext: str) -> bytes:
    return (base.ljust(8) + ext.ljust(3)).encode("ascii")


def lfn_entries(name: str, short: bytes) -> list[bytes]:
    """The long-name entries for `name`, in on-disk order (highest sequence number first)."""
    units = name.encode("utf-16-le")
    if len(units) % (2 * LFN_CHARS_PER_ENTRY):
        units += b"\0\0"
    pad = -len(units) % (2 * LFN_CHARS_PER_ENTRY)
    units += b"\xff" * pad
    count = len(units) // (2 * LFN_CHARS_PER_ENTRY)
    checksum = lfn_checksum(short)
    entries = []
    for seq in range(count, 0, -1):
        chunk = units[(seq - 1) * 26 : seq * 26]
        order = seq | (LFN_LAST if seq == count else 0)
        entries.append(
            bytes([order])
            + chunk[:10]
            + bytes([ATTR_LFN, 0, checksum])
            + chunk[10:22]
            + b"\0\0"
            + chunk[22:26]
        )
    return entries


def short_entry(short: bytes, attr: int, cluster: int, size: int, stamp: Stamp) -> bytes:
    return DIR_ENTRY.pack(
        short,
        attr,
        0,
        stamp.tenths,
        stamp.time,
        stamp.date,
        stamp.date,
        cluster >> 16,
        stamp.time,
        stamp.date,
        cluster & 0xFFFF,
        size,
    )


def updated_entry(entry: bytes, cluster: int, size: int, stamp: Stamp) -> bytes:
    """`entry` pointing at new contents: name, case flags and creation time kept."""
    short, attr, ntres, tenths, ctime, cdate, _, _, _, _, _, _ = DIR_ENTRY.unpack(entry)
    return DIR_ENTRY.pack(
        short,
        attr | ATTR_ARCHIVE,
        ntres,
        tenths,
        ctime,
        cdate,
        stamp.date,
        cluster >> 16,
        stamp.time,
        stamp.date,
        cluster & 0xFFFF,
        size,
    )
