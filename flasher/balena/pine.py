"""Pine (OData) query building: the SDKs' option objects compiled to URL query strings.

Options use the balena SDK shape: `$select` (str or list), `$expand` (str, list or
{navigation: options}), `$filter` (an object: {"field": value}, {"nav": {"field": value}},
operators `$eq $ne $gt $ge $lt $le $in $startswith $endswith $contains $any $all $and $or
$not $raw`), `$orderby` (str, {"field": "asc"|"desc"} or a list of those), `$top`, `$skip`.
Like the Python SDK's compiler, every term of an `and`/`or` is parenthesised, and the text
is percent-encoded (spaces as %20, "+" and "/" inside literals encoded).

Imports only the standard library; no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

Options = Mapping[str, Any]

_OPTION_ORDER = ("$select", "$expand", "$filter", "$orderby", "$top", "$skip")
_COMPARISONS = {"$eq": "eq", "$ne": "ne", "$gt": "gt", "$ge": "ge", "$lt": "lt", "$le": "le"}
_FUNCTIONS = {"$startswith": "startswith", "$endswith": "endswith", "$contains": "contains"}
# Kept literal in the query string: OData syntax characters that URLs allow unencoded.
_SAFE = "$(),;=:'*@"


class PineOptionError(ValueError):
    """An option object the compiler does not understand (a programming error)."""


def literal(value: Any) -> str:
    """An OData literal: 'text' (quotes doubled), true/false, null, numbers, datetime'…'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        return f"datetime'{value.isoformat()}'"
    raise PineOptionError(f"cannot write {type(value).__name__} as an OData literal")


def _join(terms: Sequence[str], operator: str) -> str:
    if len(terms) == 1:
        return terms[0]
    return f" {operator} ".join(f"({term})" for term in terms)


def _path(prefix: Sequence[str]) -> str:
    if not prefix:
        raise PineOptionError("an operator needs a field to apply to")
    return "/".join(prefix)


def _operand(value: Any) -> str:
    if isinstance(value, Mapping):
        return compile_filter(value)
    return literal(value)


def _operator(key: str, value: Any, prefix: list[str]) -> str:
    if key in _COMPARISONS:
        return f"{_path(prefix)} {_COMPARISONS[key]} {_operand(value)}"
    if key in _FUNCTIONS:
        return f"{_FUNCTIONS[key]}({_path(prefix)},{_operand(value)})"
    if key == "$in":
        items = list(value) if isinstance(value, list | tuple) else [value]
        if not items:
            raise PineOptionError("$in needs at least one value")
        return f"{_path(prefix)} in ({','.join(literal(v) for v in items)})"
    if key in ("$any", "$all"):
        alias, expr = value["$alias"], value["$expr"]
        return f"{_path(prefix)}/{key[1:]}({alias}:{compile_filter(expr)})"
    if key in ("$and", "$or"):
        parts = value if isinstance(value, list | tuple) else [{k: v} for k, v in value.items()]
        return _join([compile_filter(part, prefix) for part in parts], key[1:])
    if key == "$not":
        return f"not({compile_filter(value, prefix)})"
    if key == "$raw":
        return str(value)
    raise PineOptionError(f"unknown filter operator {key}")


def compile_filter(spec: Any, prefix: Sequence[str] = ()) -> str:
    """The OData text of a filter object; `prefix` is the navigation path it applies to."""
    path = list(prefix)
    if isinstance(spec, str) and not path:
        return spec
    if not isinstance(spec, Mapping):
        return f"{_path(path)} eq {literal(spec)}"
    terms: list[str] = []
    for key, value in spec.items():
        if key.startswith("$"):
            terms.append(_operator(key, value, path))
        elif isinstance(value, Mapping):
            terms.append(compile_filter(value, [*path, key]))
        else:
            terms.append(f"{'/'.join([*path, key])} eq {literal(value)}")
    if not terms:
        raise PineOptionError("an empty filter object matches nothing useful")
    return _join(terms, "and")


def _select(value: str | Sequence[str]) -> str:
    return value if isinstance(value, str) else ",".join(value)


def _expand_items(value: Any) -> list[tuple[str, Options]]:
    if isinstance(value, str):
        return [(value, {})]
    if isinstance(value, Mapping):
        return [(name, opts or {}) for name, opts in value.items()]
    items: list[tuple[str, Options]] = []
    for entry in value:
        items.extend(_expand_items(entry))
    return items


def _orderby(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ",".join(f"{field} {direction}" for field, direction in value.items())
    return ",".join(_orderby(entry) for entry in value)


def _compile_options(options: Options) -> list[tuple[str, str]]:
    unknown = set(options) - set(_OPTION_ORDER)
    if unknown:
        raise PineOptionError(f"unknown pine option(s): {', '.join(sorted(unknown))}")
    out: list[tuple[str, str]] = []
    for key in _OPTION_ORDER:
        if key not in options or options[key] is None:
            continue
        value = options[key]
        if key == "$select":
            out.append((key, _select(value)))
        elif key == "$expand":
            parts = []
            for name, nested in _expand_items(value):
                inner = ";".join(f"{k}={v}" for k, v in _compile_options(nested))
                parts.append(f"{name}({inner})" if inner else name)
            out.append((key, ",".join(parts)))
        elif key == "$filter":
            out.append((key, compile_filter(value)))
        elif key == "$orderby":
            out.append((key, _orderby(value)))
        else:
            out.append((key, str(int(value))))
    return out


def compile_query(options: Options) -> str:
    """The URL query string (without "?") for pine `options`."""
    return "&".join(f"{key}={quote(value, safe=_SAFE)}" for key, value in _compile_options(options))


def resource_path(resource: str, entity_id: int | None = None) -> str:
    return resource if entity_id is None else f"{resource}({int(entity_id)})"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def merge_options(defaults: Options, extra: Options | None) -> dict[str, Any]:
    """`defaults` extended by `extra` as the SDKs merge them.

    `$select` lists are joined, `$filter`s are ANDed, `$expand`s merge per navigation
    (recursively); any other option in `extra` replaces the default.
    """
    merged = dict(defaults)
    if not extra:
        return merged
    for key, value in extra.items():
        if key not in merged or merged[key] is None:
            merged[key] = value
        elif key == "$select":
            if value == "*" or merged[key] == "*":
                merged[key] = "*"
            else:
                base = _as_list(merged[key])
                merged[key] = base + [v for v in _as_list(value) if v not in base]
        elif key == "$filter":
            merged[key] = {"$and": [merged[key], value]}
        elif key == "$expand":
            expands = dict(_expand_items(merged[key]))
            for name, nested in _expand_items(value):
                expands[name] = merge_options(expands.get(name, {}), nested)
            merged[key] = expands
        else:
            merged[key] = value
    return merged
