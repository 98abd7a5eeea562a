"""`flasher bench --station station.toml`: a bench's whole setup in one file, for a service.

The file's keys are the bench's long option names (`device-type` or `device_type`), in any
table or at the top level (tables only group them: `[image]`, `[config]`, `[slots]`,
`[report]`, …). Values are TOML strings, numbers, booleans, or arrays for repeatable options
(`slot`, `bus`, `dns`, `system-connection`); `source` (or `file`, `url`) names an image file or
URL. Named slots are an array of tables, `[[slots]]` with `name` and `path` (a by-path glob or
device path, as for --slot), numbered in their order.
Options given on the command line win over the file. Unknown keys and wrongly typed values
are refused before any I/O, naming the key. A file holding a secret (`wifi-key`,
`provisioning-key`, `token`) must not be readable by other users.
"""

from __future__ import annotations

import argparse
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flasher.bench.policy import SLOT_NAME
from flasher.errors import ConfigError

SOURCE_KEYS = ("source", "file", "url")
SLOT_TABLES = ("slots", "slot")
_SLOT_PATH_KEYS = ("path", "pattern")
SECRET_KEYS = ("wifi_key", "config_wifi_key", "provisioning_key", "token")
# Options that make no sense in a station file.
_NOT_IN_FILE = ("station", "help", "json", "handler")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """dest -> action for every long option of `parser` (argparse has no public listing)."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest in _NOT_IN_FILE or action.dest == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                out[option[2:].replace("-", "_")] = action
    return out


def _flatten(table: Mapping[str, Any], path: str = "") -> dict[str, tuple[str, Any]]:
    """key (with '-' as '_') -> (where it was written, value), tables dissolved."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in table.items():
        where = f"{path}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, where + "."))
        elif key in SLOT_TABLES and isinstance(value, list) and _tables(value):
            if "slot" in out:
                raise ConfigError(f"station:{where}", f"repeats {out['slot'][0]}")
            out["slot"] = (where, [_named_slot(f"{where}[{i}]", t) for i, t in enumerate(value)])
        else:
            name = key.replace("-", "_")
            if name in out:
                raise ConfigError(f"station:{where}", f"repeats {out[name][0]}")
            out[name] = (where, value)
    return out


def _tables(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, dict) for v in value)


def _named_slot(where: str, table: Any) -> str:
    """One [[slots]] table as the "NAME=PATTERN" text --slot takes."""
    if not isinstance(table, dict):
        raise ConfigError(f"station:{where}", "must be a table with name and path")
    unknown = sorted(set(table) - {"name", *_SLOT_PATH_KEYS})
    if unknown:
        raise ConfigError(f"station:{where}.{unknown[0]}", "is not a slot setting (name, path)")
    name = table.get("name")
    if not isinstance(name, str) or not SLOT_NAME.fullmatch(name):
        raise ConfigError(
            f"station:{where}.name",
            "must be 1 to 32 letters, digits, '.', '_' or '-'",
            hint="name slots with short words such as left, right or A1",
        )
    paths = [table[k] for k in _SLOT_PATH_KEYS if k in table]
    if len(paths) != 1 or not isinstance(paths[0], str) or not paths[0].strip():
        raise ConfigError(
            f"station:{where}.path", "must be one by-path glob or device path for the slot"
        )
    return f"{name}={paths[0]}"


def _check_value(where: str, action: argparse.Action, value: Any) -> Any:
    field = f"station:{where}"
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(field, "must be true or false")
        if isinstance(action, argparse._StoreConstAction) and not value:
            return action.default
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in items):
            raise ConfigError(field, "must be a list of strings")
        return [str(v) for v in items]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(field, "must be a string or a number")
    if action.type is int:
        if not isinstance(value, int):
            raise ConfigError(field, "must be a whole number")
        return value
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise ConfigError(field, f"must be one of {choices}")
    return str(value)


def _check_private(path: Path, secrets: list[str]) -> None:
    if secrets and os.stat(path).st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise ConfigError(
            f"station:{secrets[0]}",
            f"is a secret, and {path} is readable by other users",
            hint=f"make the file private (chmod 600 {path})",
        )


def load_station(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The option values a station file sets (dest -> value), checked."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ConfigError("station", f"cannot read {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("station", f"{path} is not valid TOML ({err})") from None
    options = _options(parser)
    values: dict[str, Any] = {}
    sources = []
    for name, (where, value) in _flatten(data).items():
        if name in SOURCE_KEYS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"station:{where}", "must be an image file or URL")
            sources.append(where)
            values["source"] = value
            continue
        action = options.get(name)
        if action is None:
            raise ConfigError(f"station:{where}", "is not a bench option")
        values[action.dest] = _check_value(where, action, value)
    if len(sources) > 1:
        raise ConfigError(f"station:{sources[1]}", f"repeats the image named by {sources[0]}")
    _check_private(path, [n for n in SECRET_KEYS if n in values])
    return values


def apply_station(
    args: argparse.Namespace, station: Mapping[str, Any], defaults: Mapping[str, Any]
) -> None:
    """Fill `args` from the station file where the command line left an option at its
    default (so the command line wins)."""
    for dest, value in station.items():
        if getattr(args, dest, None) == defaults.get(dest):
            setattr(args, dest, value)
