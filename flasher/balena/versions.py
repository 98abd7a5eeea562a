"""balenaOS version rules (balena-semver) on top of the `semver` package.

Parsing normalises the forms balenaOS has used over the years ("Resin OS 2.0.0 (prod)",
"v2.88.4", "2.0.0.rev1.prod", "2021.10.2.prod", "2020.04.0") into SemVer 2.0 before parsing.
Ordering is balena's: null < invalid (alphabetical) < valid; then SemVer precedence, the `revN`
build part, production above development, and finally the normalised text. Ranges follow
node-semver in loose mode (^ ~ x-ranges, hyphen ranges, comparators, ||), ignoring build metadata
and excluding prereleases unless a comparator names a prerelease of the same X.Y.Z.

Why the range code is ours and not a library's: the maintained port of node-semver on PyPI
(`node-semver` 0.9.1, module `nodesemver`) was weighed on tests/unit/test_versions.py's tables.
Its `satisfies` agrees with this module on every range row but one (it raises ValueError for a
version that is not one, where a range simply does not match), and on 464 further
version × range pairs (x-ranges, tildes, carets on 0.x, hyphens, prereleases) the two agree
everywhere. Its `max_satisfying` picks the wrong release on 4 of the 9 max-satisfying rows,
because plain SemVer ignores build metadata where balena orders `revN` and prod above dev, so
that part would stay ours either way. Equal on correctness, this ~190-line typed parser wins
over an untyped 1,200-line regex port as a dependency.

Imports only the standard library and `semver`; no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from semver import Version

# node-semver refuses longer version strings and components beyond a JS safe integer.
_MAX_LENGTH = 256
_MAX_SAFE_INTEGER = 2**53 - 1

# ESR releases are numbered by year (2023.1.0); the SDK treats majors above 2000 as ESR.
ESR_MIN_MAJOR_EXCLUSIVE = 2000

_OS_NAME = re.compile(r"(resin|balena)\s*os\s*", re.IGNORECASE | re.ASCII)
_TRAILING_PAREN = re.compile(r"\s+\(\w+\)$", re.ASCII)
_UNDERSCORE_BUILD = re.compile(r"([0-9]+\.[0-9]+\.[0-9]+)_(\w+)", re.ASCII)
_DOT_REV = re.compile(r"(\.[0-9]+)\.rev")
_DOT_VARIANT = re.compile(r"([0-9]+\.[0-9]+\.[0-9]+)\.(dev|prod)\b", re.IGNORECASE)
_PAREN_AS_BUILD = re.compile(
    r"([0-9]+\.[0-9]+\.[0-9]+(?:[-.][0-9a-z]+)*) \(([0-9a-z]+)\)", re.IGNORECASE
)
_PAREN_AS_BUILD_PART = re.compile(
    r"([0-9]+\.[0-9]+\.[0-9]+(?:[-+.][0-9a-z]+)*) \(([0-9a-z]+)\)", re.IGNORECASE
)
_LEADING_ZEROS = re.compile(r"([^0-9])0+([1-9]+)")
_REVISION = re.compile(r"^rev(\d+)$")


def normalize(text: str) -> str:
    """The SemVer 2.0 spelling of a balenaOS version text (it may still be invalid)."""
    version = text.strip()
    # Each rewrite applies once, to the first match, as balena-semver does.
    version = _UNDERSCORE_BUILD.sub(r"\1+\2", version, count=1)
    version = _DOT_REV.sub(r"\1+rev", version, count=1)
    version = _DOT_VARIANT.sub(r"\1+\2", version, count=1)
    version = _PAREN_AS_BUILD.sub(r"\1+\2", version, count=1)
    version = _PAREN_AS_BUILD_PART.sub(r"\1.\2", version, count=1)
    version = _LEADING_ZEROS.sub(r"\1\2", version, count=1)
    version = _OS_NAME.sub("", version)
    version = _TRAILING_PAREN.sub("", version, count=1)
    return version.removeprefix("v")


@dataclass(frozen=True)
class BalenaVersion:
    """A parsed balenaOS version: `raw` as given, `semver` after normalisation."""

    raw: str
    semver: Version

    @property
    def major(self) -> int:
        return int(self.semver.major)

    @property
    def minor(self) -> int:
        return int(self.semver.minor)

    @property
    def patch(self) -> int:
        return int(self.semver.patch)

    @property
    def prerelease(self) -> tuple[str, ...]:
        return tuple(self.semver.prerelease.split(".")) if self.semver.prerelease else ()

    @property
    def build(self) -> tuple[str, ...]:
        return tuple(self.semver.build.split(".")) if self.semver.build else ()

    @property
    def version(self) -> str:
        """X.Y.Z with the prerelease, without build metadata."""
        return str(self.semver.replace(build=None))

    @property
    def revision(self) -> int | None:
        """N of the first `revN` build part, or None."""
        for part in self.build:
            match = _REVISION.match(part)
            if match:
                return int(match.group(1))
        return None

    @property
    def is_development(self) -> bool:
        return "dev" in self.build

    @property
    def variant(self) -> str | None:
        """Either "dev" or "prod" when named in the build or prerelease parts (pre-2.85 images)."""
        parts = self.build + self.prerelease
        return next((v for v in ("dev", "prod") if v in parts), None)

    @property
    def is_esr(self) -> bool:
        return self.major > ESR_MIN_MAJOR_EXCLUSIVE

    def __str__(self) -> str:
        return str(self.semver)


def _parse_strict(normalized: str) -> Version | None:
    if len(normalized) > _MAX_LENGTH:
        return None
    # node-semver's strict grammar tolerates one more leading "v".
    candidate = normalized.strip().removeprefix("v")
    try:
        version = Version.parse(candidate)
    except ValueError:
        return None
    if max(version.major, version.minor, version.patch) > _MAX_SAFE_INTEGER:
        return None
    return version


def parse(text: str | None) -> BalenaVersion | None:
    """The parsed version, or None when `text` is not a (normalisable) version."""
    if text is None:
        return None
    version = _parse_strict(normalize(text))
    return BalenaVersion(text, version) if version is not None else None


def is_valid(text: str | None) -> bool:
    return parse(text) is not None


def major(text: str | None) -> int | None:
    parsed = parse(text)
    return parsed.major if parsed else None


def prerelease(text: str | None) -> tuple[str, ...]:
    """The prerelease identifiers, () for releases and invalid versions."""
    parsed = parse(text)
    return parsed.prerelease if parsed else ()


def is_esr(text: str | None) -> bool:
    """True for year-numbered ESR versions (major above 2000), as getSupportedOsUpdateVersions."""
    parsed = parse(text)
    return parsed.is_esr if parsed else False


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


@functools.lru_cache(maxsize=4096)
def compare(a: str | None, b: str | None) -> int:
    """-1, 0 or 1 as `a` sorts before, with or after `b` (ascending balena order)."""
    if a is None:
        return 0 if b is None else -1
    if b is None:
        return 1
    norm_a, norm_b = normalize(a), normalize(b)
    sem_a, sem_b = _parse_strict(norm_a), _parse_strict(norm_b)
    if sem_a is None or sem_b is None:
        if sem_a is not None:
            return 1
        if sem_b is not None:
            return -1
        return (norm_a > norm_b) - (norm_a < norm_b)
    result = _sign(sem_a.compare(sem_b))
    if result:
        return result
    ver_a, ver_b = BalenaVersion(a, sem_a), BalenaVersion(b, sem_b)
    rev_a, rev_b = ver_a.revision or 0, ver_b.revision or 0
    if rev_a != rev_b:
        return 1 if rev_a > rev_b else -1
    if ver_a.is_development != ver_b.is_development:
        return -1 if ver_a.is_development else 1
    # balena-semver ends with a locale comparison: case-insensitive, then lower case first.
    key_a, key_b = (norm_a.lower(), norm_a.swapcase()), (norm_b.lower(), norm_b.swapcase())
    return (key_a > key_b) - (key_a < key_b)


def rcompare(a: str | None, b: str | None) -> int:
    return -compare(a, b)


def gt(a: str | None, b: str | None) -> bool:
    return compare(a, b) > 0


def lt(a: str | None, b: str | None) -> bool:
    return compare(a, b) < 0


def gte(a: str | None, b: str | None) -> bool:
    return compare(a, b) >= 0


def sort_versions(versions: Iterable[str], *, newest_first: bool = True) -> list[str]:
    """The versions in balena order; Python's sort is stable, so ties keep their input order."""
    return sorted(versions, key=functools.cmp_to_key(rcompare if newest_first else compare))


# --- ranges (node-semver, loose mode) ---------------------------------------------------------

_XID = r"\d+|[xX*]"
_PRE_ID = r"(?:\d+|\d*[a-zA-Z-][a-zA-Z0-9-]*)"
_PRERELEASE = rf"(?:-?({_PRE_ID}(?:\.{_PRE_ID})*))"
_BUILD = r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)"
_XPLAIN = rf"[v=\s]*({_XID})(?:\.({_XID})(?:\.({_XID}){_PRERELEASE}?{_BUILD}?)?)?"
_HYPHEN = re.compile(rf"^\s*({_XPLAIN})\s+-\s+({_XPLAIN})\s*$", re.ASCII)
_CARET = re.compile(rf"^\^{_XPLAIN}$", re.ASCII)
_TILDE = re.compile(rf"^~>?{_XPLAIN}$", re.ASCII)
_XRANGE = re.compile(rf"^([<>]?=?)\s*{_XPLAIN}$", re.ASCII)
_OPERATOR_GAP = re.compile(r"(>=|<=|>|<|=)\s+(?=[v=]*[\dxX*])")
_TILDE_GAP = re.compile(r"~>?\s+")
_CARET_GAP = re.compile(r"\^\s+")


@dataclass(frozen=True)
class _Partial:
    """A possibly partial version from a range; None marks an x (wildcard) part."""

    major: int | None
    minor: int | None
    patch: int | None
    prerelease: str | None

    @classmethod
    def from_groups(cls, groups: Sequence[str | None]) -> _Partial:
        def number(part: str | None) -> int | None:
            return None if part is None or part in ("x", "X", "*") else int(part)

        major_, minor_, patch_ = (number(g) for g in groups[:3])
        # A wildcard swallows everything after it ("1.x.3" means "1.x").
        if major_ is None:
            minor_ = patch_ = None
        elif minor_ is None:
            patch_ = None
        return cls(major_, minor_, patch_, groups[3] if patch_ is not None else None)


@dataclass(frozen=True)
class _Comparator:
    operator: str  # one of < <= > >= =
    version: Version

    def test(self, version: Version) -> bool:
        order = version.compare(self.version)
        return {
            "<": order < 0,
            "<=": order <= 0,
            ">": order > 0,
            ">=": order >= 0,
            "=": order == 0,
        }[self.operator]


def _v(major_: int, minor_: int, patch_: int, pre: str | None = None) -> Version:
    return Version(major_, minor_, patch_, pre)


# "-0" is the lowest prerelease: "<2.0.0-0" excludes every 2.0.0 prerelease too.
_LOWEST = "0"
_NOTHING = [_Comparator("<", _v(0, 0, 0, _LOWEST))]


def _span(low: Version, below: Version) -> list[_Comparator]:
    """low <= v < below-0: every version from `low` up to, not including, `below`'s line."""
    return [_Comparator(">=", low), _Comparator("<", below.replace(prerelease=_LOWEST))]


def _caret(p: _Partial) -> list[_Comparator]:
    if p.major is None:
        return []
    if p.minor is None:
        return _span(_v(p.major, 0, 0), _v(p.major + 1, 0, 0))
    if p.patch is None:
        high = _v(0, p.minor + 1, 0) if p.major == 0 else _v(p.major + 1, 0, 0)
        return _span(_v(p.major, p.minor, 0), high)
    # The first non-zero part is the one that may not change.
    if p.major == 0 and p.minor == 0:
        high = _v(0, 0, p.patch + 1)
    elif p.major == 0:
        high = _v(0, p.minor + 1, 0)
    else:
        high = _v(p.major + 1, 0, 0)
    return _span(_v(p.major, p.minor, p.patch, p.prerelease), high)


def _tilde(p: _Partial) -> list[_Comparator]:
    if p.major is None:
        return []
    if p.minor is None:
        return _span(_v(p.major, 0, 0), _v(p.major + 1, 0, 0))
    return _span(_v(p.major, p.minor, p.patch or 0, p.prerelease), _v(p.major, p.minor + 1, 0))


def _xrange(operator: str, p: _Partial) -> list[_Comparator]:
    if p.major is None:
        return list(_NOTHING) if operator in ("<", ">") else []
    if p.minor is not None and p.patch is not None:
        version = _v(p.major, p.minor, p.patch, p.prerelease)
        return [_Comparator(operator or "=", version)]
    # A partial version stands for its whole span [below, above).
    above = _v(p.major + 1, 0, 0) if p.minor is None else _v(p.major, p.minor + 1, 0)
    below = _v(p.major, p.minor or 0, 0)
    if operator in ("", "="):
        return _span(below, above)
    if operator == ">":
        return [_Comparator(">=", above)]
    if operator == ">=":
        return [_Comparator(">=", below)]
    if operator == "<":
        return [_Comparator("<", below.replace(prerelease=_LOWEST))]
    return [_Comparator("<", above.replace(prerelease=_LOWEST))]  # "<="


def _hyphen(low: _Partial, high: _Partial) -> list[_Comparator]:
    out: list[_Comparator] = []
    if low.major is not None:
        out.append(_Comparator(">=", _v(low.major, low.minor or 0, low.patch or 0, low.prerelease)))
    if high.major is None:
        return out
    if high.minor is None:
        out.append(_Comparator("<", _v(high.major + 1, 0, 0, _LOWEST)))
    elif high.patch is None:
        out.append(_Comparator("<", _v(high.major, high.minor + 1, 0, _LOWEST)))
    else:
        out.append(_Comparator("<=", _v(high.major, high.minor, high.patch, high.prerelease)))
    return out


def _token(token: str) -> list[_Comparator] | None:
    """Comparators for one range token; [] means "any", None an unparseable token."""
    match = _CARET.match(token)
    if match:
        return _caret(_Partial.from_groups(match.groups()))
    match = _TILDE.match(token)
    if match:
        return _tilde(_Partial.from_groups(match.groups()))
    match = _XRANGE.match(token)
    if match:
        return _xrange(match.group(1), _Partial.from_groups(match.groups()[1:]))
    return None


def _comparator_set(text: str) -> list[_Comparator] | None:
    hyphen = _HYPHEN.match(text)
    if hyphen:
        groups = hyphen.groups()
        return _hyphen(_Partial.from_groups(groups[1:5]), _Partial.from_groups(groups[6:10]))
    text = _OPERATOR_GAP.sub(r"\1", text)
    text = _TILDE_GAP.sub("~", text)
    text = _CARET_GAP.sub("^", text)
    comparators: list[_Comparator] = []
    understood = False
    for token in text.split() or [""]:
        parsed = [] if token == "" else _token(token)
        # Loose mode drops what it cannot read instead of failing the whole range.
        if parsed is None:
            continue
        understood = True
        comparators.extend(parsed)
    return comparators if understood else None


@functools.lru_cache(maxsize=1024)
def _parse_range(text: str) -> tuple[tuple[_Comparator, ...], ...] | None:
    sets = []
    for part in " ".join(text.split()).split("||"):
        parsed = _comparator_set(part.strip())
        if parsed is not None:
            sets.append(tuple(parsed))
    return tuple(sets) if sets else None


def _set_allows(comparators: Sequence[_Comparator], version: Version) -> bool:
    if not all(c.test(version) for c in comparators):
        return False
    if not version.prerelease:
        return True
    # A prerelease only matches when the range names a prerelease of the same X.Y.Z.
    return any(
        c.version.prerelease
        and (c.version.major, c.version.minor, c.version.patch)
        == (version.major, version.minor, version.patch)
        for c in comparators
    )


def is_valid_range(text: str) -> bool:
    return _parse_range(text) is not None


def satisfies(version: str | None, range_text: str) -> bool:
    """Whether `version` (normalised) lies in the node-semver range `range_text`."""
    parsed = parse(version)
    if parsed is None:
        return False
    sets = _parse_range(range_text)
    if sets is None:
        return False
    return any(_set_allows(s, parsed.semver) for s in sets)


def max_satisfying(versions: Iterable[str | None], range_text: str) -> str | None:
    """The greatest version (balena order) in the range; the first of equal maxima wins."""
    normalized_range = normalize(range_text)
    best: str | None = None
    for version in versions:
        if satisfies(version, normalized_range) and gt(version, best):
            best = version
    return best
