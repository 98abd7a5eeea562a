"""OData query options as pine speaks them: parse $filter/$select/$expand/$orderby/$top/$skip.

Accepts both client styles: pinejs-client-core (JS, unparenthesised terms, `slug in ('a')`) and
pine-client (Python, every term parenthesised). Callers URL-decode first. The filter grammar:
eq ne gt ge lt le, and or not, `in (...)`, any/all lambdas over navigations, startswith, endswith,
substringof, contains, tolower, toupper, length, trim, parentheses, and string ('' escapes),
number, true/false/null and datetime'…' literals (compared with ISO 8601 text fields).
Evaluation runs over any object graph that implements `Node`.
Imports only the standard library.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class ODataError(ValueError):
    """A malformed or unsupported query; the message is what the API answers with a 400."""


class Node(Protocol):
    """One entity as the evaluator sees it."""

    @property
    def key(self) -> Any: ...

    def prop(self, name: str) -> Any:
        """A field value, a Node (single navigation), a list of Nodes, or None; ODataError if
        the name is unknown."""
        ...


# ---------------------------------------------------------------------------------------------
# Expression tree


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Path:
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Lambda:
    path: Path
    kind: str  # "any" | "all"
    variable: str | None
    body: Expr | None


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class In:
    operand: Expr
    values: tuple[Any, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Expr, ...]


Expr = Literal | Path | Lambda | Compare | In | BoolOp | Not | Call

_COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "startswith": (2, lambda s, p: _text(s).startswith(_text(p))),
    "endswith": (2, lambda s, p: _text(s).endswith(_text(p))),
    "substringof": (2, lambda p, s: _text(p) in _text(s)),
    "contains": (2, lambda s, p: _text(p) in _text(s)),
    "tolower": (1, lambda s: _text(s).lower()),
    "toupper": (1, lambda s: _text(s).upper()),
    "trim": (1, lambda s: _text(s).strip()),
    "length": (1, lambda s: len(_text(s))),
}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Tokenizer and parser

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
      | (?P<ident>[A-Za-z_$@][\w$@]*)
      | (?P<punct>[(),:/])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ODataError(f"Malformed $filter: unexpected {text[pos:].strip()[:20]!r}")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> _Token | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def next(self) -> _Token:
        tok = self.peek()
        if tok is None:
            raise ODataError(f"Malformed $filter: {self.text!r} ends too early")
        self.i += 1
        return tok

    def accept(self, text: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.text == text and tok.kind in ("punct", "ident"):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        tok = self.peek()
        if not self.accept(text):
            found = "the end" if tok is None else repr(tok.text)
            raise ODataError(f"Malformed $filter: expected {text!r}, found {found}")

    def parse(self) -> Expr:
        expr = self.parse_or()
        tok = self.peek()
        if tok is not None:
            raise ODataError(f"Malformed $filter: unexpected {tok.text!r} at {tok.pos}")
        return expr

    def parse_or(self) -> Expr:
        operands = [self.parse_and()]
        while self.accept("or"):
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def parse_and(self) -> Expr:
        operands = [self.parse_not()]
        while self.accept("and"):
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def parse_not(self) -> Expr:
        if self.accept("not"):
            return Not(self.parse_not())
        return self.parse_comparison()

    def parse_comparison(self) -> Expr:
        left = self.parse_primary()
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text in _COMPARISONS:
            self.i += 1
            return Compare(tok.text, left, self.parse_primary())
        if tok is not None and tok.kind == "ident" and tok.text == "in":
            self.i += 1
            self.expect("(")
            values = [self.parse_literal_value()]
            while self.accept(","):
                values.append(self.parse_literal_value())
            self.expect(")")
            return In(left, tuple(values))
        return left

    def parse_literal_value(self) -> Any:
        expr = self.parse_primary()
        if not isinstance(expr, Literal):
            raise ODataError("Malformed $filter: 'in' takes a list of literals")
        return expr.value

    def parse_primary(self) -> Expr:
        tok = self.next()
        if tok.kind == "punct" and tok.text == "(":
            expr = self.parse_or()
            self.expect(")")
            return expr
        if tok.kind == "string":
            return Literal(tok.text[1:-1].replace("''", "'"))
        if tok.kind == "number":
            return Literal(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind != "ident":
            raise ODataError(f"Malformed $filter: unexpected {tok.text!r} at {tok.pos}")
        if tok.text in ("true", "false"):
            return Literal(tok.text == "true")
        if tok.text == "null":
            return Literal(None)
        nxt = self.peek()
        if tok.text == "datetime" and nxt is not None and nxt.kind == "string":
            self.i += 1
            return Literal(_datetime(nxt.text[1:-1], nxt.pos))
        if nxt is not None and nxt.text == "(" and nxt.kind == "punct":
            return self.parse_call(tok.text)
        return self.parse_path(tok.text)

    def parse_call(self, name: str) -> Expr:
        if name not in _FUNCTIONS:
            raise ODataError(f"Malformed $filter: unknown function {name!r}")
        self.expect("(")
        args = [self.parse_or()]
        while self.accept(","):
            args.append(self.parse_or())
        self.expect(")")
        if len(args) != _FUNCTIONS[name][0]:
            raise ODataError(f"Malformed $filter: {name} takes {_FUNCTIONS[name][0]} argument(s)")
        return Call(name, tuple(args))

    def parse_path(self, first: str) -> Expr:
        segments = [first]
        while self.accept("/"):
            tok = self.next()
            if tok.kind != "ident":
                raise ODataError(f"Malformed $filter: expected a property after '/' at {tok.pos}")
            nxt = self.peek()
            if tok.text in ("any", "all") and nxt is not None and nxt.text == "(":
                return self.parse_lambda(Path(tuple(segments)), tok.text)
            segments.append(tok.text)
        return Path(tuple(segments))

    def parse_lambda(self, path: Path, kind: str) -> Expr:
        self.expect("(")
        if self.accept(")"):
            return Lambda(path, kind, None, None)
        var_tok = self.next()
        if var_tok.kind != "ident":
            raise ODataError(f"Malformed $filter: expected a lambda variable at {var_tok.pos}")
        self.expect(":")
        body = self.parse_or()
        self.expect(")")
        return Lambda(path, kind, var_tok.text, body)


def _datetime(text: str, pos: int) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ODataError(f"Malformed $filter: bad datetime {text!r} at {pos}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def parse_filter(text: str) -> Expr:
    """Parse a decoded $filter value; ODataError with a readable message when malformed."""
    if not text.strip():
        raise ODataError("Malformed $filter: empty expression")
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate(expr: Expr, root: Node, scope: Mapping[str, Node] | None = None) -> Any:
    """The value of `expr` for the entity `root`, with lambda variables bound in `scope`."""
    scope = scope or {}
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Path):
        return _scalar(_resolve(expr, root, scope))
    if isinstance(expr, Compare):
        return _compare(
            expr.op, evaluate(expr.left, root, scope), evaluate(expr.right, root, scope)
        )
    if isinstance(expr, In):
        value = evaluate(expr.operand, root, scope)
        return any(_compare("eq", value, v) for v in expr.values)
    if isinstance(expr, BoolOp):
        results = (bool(evaluate(e, root, scope)) for e in expr.operands)
        return all(results) if expr.op == "and" else any(results)
    if isinstance(expr, Not):
        return not evaluate(expr.operand, root, scope)
    if isinstance(expr, Call):
        args = [evaluate(a, root, scope) for a in expr.args]
        return _FUNCTIONS[expr.name][1](*args)
    return _evaluate_lambda(expr, root, scope)


def _evaluate_lambda(expr: Lambda, root: Node, scope: Mapping[str, Node]) -> bool:
    target = _resolve(expr.path, root, scope)
    members: list[Node] = [] if target is None else target if isinstance(target, list) else [target]
    if expr.body is None or expr.variable is None:
        return bool(members) if expr.kind == "any" else True
    body, var = expr.body, expr.variable
    matches = (bool(evaluate(body, root, {**scope, var: m})) for m in members)
    return any(matches) if expr.kind == "any" else all(matches)


def _resolve(path: Path, root: Node, scope: Mapping[str, Node]) -> Any:
    first, *rest = path.segments
    value: Any
    if first in scope:
        value = scope[first]
    else:
        value, rest = root, list(path.segments)
    for segment in rest:
        if value is None:
            return None
        if isinstance(value, list):
            raise ODataError(
                f"Cannot navigate through the collection before {segment!r}: use any()"
            )
        value = value.prop(segment)
    return value


def _scalar(value: Any) -> Any:
    if isinstance(value, list):
        raise ODataError("A collection navigation cannot be compared: use any() or all()")
    if value is not None and not isinstance(value, str | int | float | bool):
        return value.key
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    left, right = _as_datetime(left, right), _as_datetime(right, left)
    if op == "eq":
        return _same(left, right)
    if op == "ne":
        return not _same(left, right)
    if left is None or right is None or _kind(left) != _kind(right):
        return False
    ordering = {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}
    return bool(ordering[op])


def _as_datetime(value: Any, other: Any) -> Any:
    """`value` as a datetime when compared with one (fields hold dates as ISO 8601 text)."""
    if isinstance(other, dt.datetime) and isinstance(value, str):
        try:
            return _datetime(value, 0)
        except ODataError:
            return value
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _same(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return _kind(left) == _kind(right) and bool(left == right)


# ---------------------------------------------------------------------------------------------
# Query options


@dataclass(frozen=True)
class QueryOptions:
    """One level of pine options; `expand` maps a navigation to its own nested options."""

    select: tuple[str, ...] | None = None
    expand: Mapping[str, QueryOptions] = field(default_factory=dict)
    filter: Expr | None = None
    orderby: tuple[tuple[Path, bool], ...] = ()  # (path, descending)
    top: int | None = None
    skip: int | None = None


_OPTION_NAMES = ("$select", "$expand", "$filter", "$orderby", "$top", "$skip", "$format")


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside parentheses and quoted strings."""
    parts: list[str] = []
    depth, start, quoted = 0, 0, False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ODataError(f"Malformed option: unbalanced ')' in {text!r}")
        elif ch == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0 or quoted:
        raise ODataError(f"Malformed option: unbalanced parentheses or quotes in {text!r}")
    parts.append(text[start:])
    return parts


def parse_options(params: Iterable[tuple[str, str]]) -> QueryOptions:
    """QueryOptions from decoded (name, value) pairs; non-$ names (e.g. apikey) are ignored."""
    found: dict[str, str] = {}
    for name, value in params:
        if not name.startswith("$"):
            continue
        if name not in _OPTION_NAMES:
            raise ODataError(f"Unknown query option {name!r}")
        found[name] = value
    return _build_options(found)


def _parse_nested(text: str) -> QueryOptions:
    pairs = []
    for part in split_top_level(text, ";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ODataError(f"Malformed option {part!r}: expected name=value")
        pairs.append((name.strip(), value))
    return parse_options(pairs)


def _build_options(found: Mapping[str, str]) -> QueryOptions:
    select = None
    if "$select" in found:
        select = tuple(s.strip() for s in found["$select"].split(",") if s.strip())
    expand: dict[str, QueryOptions] = {}
    if "$expand" in found:
        for item in split_top_level(found["$expand"], ","):
            item = item.strip()
            if not item:
                continue
            name, paren, rest = item.partition("(")
            if paren and not rest.endswith(")"):
                raise ODataError(f"Malformed $expand item {item!r}")
            expand[name.strip()] = _parse_nested(rest[:-1]) if paren else QueryOptions()
    return QueryOptions(
        select=select,
        expand=expand,
        filter=parse_filter(found["$filter"]) if "$filter" in found else None,
        orderby=_parse_orderby(found["$orderby"]) if "$orderby" in found else (),
        top=_non_negative("$top", found["$top"]) if "$top" in found else None,
        skip=_non_negative("$skip", found["$skip"]) if "$skip" in found else None,
    )


def _parse_orderby(text: str) -> tuple[tuple[Path, bool], ...]:
    terms = []
    for item in text.split(","):
        words = item.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise ODataError(f"Malformed $orderby term {item.strip()!r}")
        terms.append((Path(tuple(words[0].split("/"))), len(words) == 2 and words[1] == "desc"))
    return tuple(terms)


def _non_negative(name: str, text: str) -> int:
    if not text.strip().isdigit():
        raise ODataError(f"{name} must be a non-negative integer, got {text!r}")
    return int(text)


def order_key(node: Node, path: Path) -> Any:
    """The value `node` sorts by for one $orderby term (None sorts first, as in pine)."""
    value = _scalar(_resolve(path, node, {}))
    return (value is not None, value)
