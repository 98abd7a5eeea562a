"""Strict JSON decoding for the writer protocol: typed field reads that reject anything odd.

Standard library plus flasher.errors only (the root helper imports it). Every failure is a
WriterProtocolError naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

from flasher.errors import WriterProtocolError

Range = tuple[int, int]


def fail(message: str) -> NoReturn:
    raise WriterProtocolError(
        f"Writer protocol: {message}",
        hint="The app and its writer helper may be from different versions; reinstall Flasher.",
    )


def loads(line: bytes, limit: int) -> dict[str, Any]:
    if len(line) > limit:
        fail(f"message of {len(line)} bytes exceeds the {limit}-byte limit")

    def bad_constant(name: str) -> NoReturn:
        fail(f"non-JSON number {name}")

    try:
        value = json.loads(line.decode("utf-8"), parse_constant=bad_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        fail(f"not a JSON line ({err})")
    except RecursionError:
        # The C decoder stops at the interpreter's recursion limit; the protocol itself never
        # nests deeper than a pair inside a list.
        fail("values nested too deeply")
    if not isinstance(value, dict):
        fail("a message must be a JSON object")
    return value


class Fields:
    """Typed, strict reads from one JSON object; every key must be consumed."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        if not isinstance(data, Mapping):
            fail(f"{where} must be an object")
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def _get(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                fail(f"{self.where}.{key} is missing")
            return None
        return self.data[key]

    def integer(self, key: str, *, minimum: int = 0, required: bool = True) -> int:
        value = self._get(key, required)
        if value is None and not required:
            return minimum
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            fail(f"{self.where}.{key} must be an integer >= {minimum}")
        return value

    def text(self, key: str, *, required: bool = True, nullable: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None and (nullable or not required):
            return None
        if not isinstance(value, str):
            fail(f"{self.where}.{key} must be a string")
        return value

    def flag(self, key: str, *, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            fail(f"{self.where}.{key} must be true or false")
        return value

    def number(self, key: str) -> float:
        value = self._get(key, True)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            fail(f"{self.where}.{key} must be a non-negative number")
        return float(value)

    def value(self, key: str, *, required: bool = True) -> Any:
        return self._get(key, required)

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            fail(f"{self.where} has unknown field(s): {', '.join(extra)}")


def ranges_field(value: Any, where: str, size_bytes: int) -> tuple[Range, ...]:
    if not isinstance(value, list):
        fail(f"{where} must be a list of [offset, length] pairs")
    out: list[Range] = []
    end = 0
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
        ):
            fail(f"{where} must be a list of [offset, length] pairs")
        offset, length = item
        if offset < end or length <= 0 or offset + length > size_bytes:
            fail(f"{where} must be sorted, non-overlapping, non-empty and inside the image")
        out.append((offset, length))
        end = offset + length
    return tuple(out)
