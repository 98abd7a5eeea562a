"""balena-semver rules: parsing, ordering, ranges and the ESR test, on real balenaOS versions."""

from __future__ import annotations

import random

import pytest

from flasher.balena import versions

# rcompare order measured with balena-semver (newest first).
MEASURED_NEWEST_FIRST = [
    "2023.1.0",
    "2021.10.2.prod",
    "2021.10.2.dev",
    "6.5.52-1739180722453+rev1",
    "6.5.50+rev8",
    "6.5.50+rev7",
    "2.113.4",
    "2.88.5",
    "2.88.5-1700000000000",
    "2.88.4+rev1.prod",
    "2.88.4+rev1",
    "2.88.4+rev1.dev",
    "2.88.4",
    "2.9.6+rev2.prod",
    "2.9.6+rev2.dev",
    "0.0.0",
]


def _shuffles() -> list[list[str]]:
    rng = random.Random(20250701)
    orders = [list(reversed(MEASURED_NEWEST_FIRST)), sorted(MEASURED_NEWEST_FIRST)]
    for _ in range(5):
        shuffled = list(MEASURED_NEWEST_FIRST)
        rng.shuffle(shuffled)
        orders.append(shuffled)
    return orders


@pytest.mark.parametrize("given", _shuffles())
def test_sort_matches_measured_rcompare_order(given: list[str]) -> None:
    assert versions.sort_versions(given) == MEASURED_NEWEST_FIRST


def test_sort_oldest_first_is_the_reverse() -> None:
    oldest_first = versions.sort_versions(MEASURED_NEWEST_FIRST, newest_first=False)
    assert oldest_first == list(reversed(MEASURED_NEWEST_FIRST))


@pytest.mark.parametrize(
    ("text", "version", "prerelease", "build"),
    [
        ("2.12.7+rev1.prod", "2.12.7", (), ("rev1", "prod")),
        ("v2.88.4", "2.88.4", (), ()),
        ("balenaOS 2.88.4", "2.88.4", (), ()),
        ("2.113.4", "2.113.4", (), ()),
        ("2023.1.0", "2023.1.0", (), ()),
        ("2021.10.2.prod", "2021.10.2", (), ("prod",)),
        ("2.9.6+rev2.dev", "2.9.6", (), ("rev2", "dev")),
        ("2.0.0.rev1.prod", "2.0.0", (), ("rev1", "prod")),
        ("5.1.10-1706616336246+rev2", "5.1.10-1706616336246", ("1706616336246",), ("rev2",)),
        ("2020.04.0", "2020.4.0", (), ()),
        ("Resin OS 2.0.0 (prod)", "2.0.0", (), ("prod",)),
        ("Resin OS 1.16.0", "1.16.0", (), ()),
        ("2.0.0_rev1", "2.0.0", (), ("rev1",)),
        ("  3.1.0 ", "3.1.0", (), ()),
        ("2.0.0+rev1 (dev)", "2.0.0", (), ("rev1", "dev")),
    ],
)
def test_parse_normalises_balena_forms(
    text: str, version: str, prerelease: tuple[str, ...], build: tuple[str, ...]
) -> None:
    parsed = versions.parse(text)
    assert parsed is not None
    assert (parsed.version, parsed.prerelease, parsed.build) == (version, prerelease, build)
    assert parsed.raw == text


@pytest.mark.parametrize("text", ["2.9.6.7", "v1+foo", "latest", "", "1.2", "01.2.3", None])
def test_parse_rejects_non_versions(text: str | None) -> None:
    assert versions.parse(text) is None
    assert not versions.is_valid(text)


@pytest.mark.parametrize(
    ("text", "revision", "development", "variant"),
    [
        ("6.5.50+rev8", 8, False, None),
        ("2.88.4+rev1.dev", 1, True, "dev"),
        ("2.80.3+rev1.prod", 1, False, "prod"),
        ("2.88.4", None, False, None),
        ("1.0.0-dev", None, False, "dev"),
    ],
)
def test_revision_and_variant(
    text: str, revision: int | None, development: bool, variant: str | None
) -> None:
    parsed = versions.parse(text)
    assert parsed is not None
    assert (parsed.revision, parsed.is_development, parsed.variant) == (
        revision,
        development,
        variant,
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (None, None, 0),
        (None, "garbage", -1),
        ("garbage", None, 1),
        ("garbage", "1.0.0", -1),
        ("alpha", "beta", -1),
        ("beta", "alpha", 1),
        ("6.5.50+rev7", "6.5.50+rev8", -1),
        ("6.5.50", "6.5.50+rev1", -1),
        ("2.88.4+rev1.dev", "2.88.4+rev1.prod", -1),
        ("2.88.4+rev1", "2.88.4+rev1.prod", -1),
        ("2.88.5-1700000000000", "2.88.5", -1),
        ("v2.88.4", "2.88.4", 0),
        ("2.0.0+REV2", "Resin OS 2.0.0 (prod)", 1),
        ("2023.1.0", "6.5.50+rev8", 1),
    ],
)
def test_compare_rules(a: str | None, b: str | None, expected: int) -> None:
    assert versions.compare(a, b) == expected
    assert versions.rcompare(a, b) == -expected


@pytest.mark.parametrize(
    ("version", "range_text", "expected"),
    [
        ("6.5.50+rev8", "^6.0.0", True),
        ("7.0.0", "^6.0.0", False),
        ("6.5.50+rev8", "6.5.50", True),
        ("6.5.51", "6.5.50", False),
        ("2.80.3+rev1.prod", "~2.80.3", True),
        ("2.81.0", "~2.80.3", False),
        ("0.2.5", "^0.2.3", True),
        ("0.3.0", "^0.2.3", False),
        ("0.0.4", "^0.0.3", False),
        ("1.9.9", "1.x", True),
        ("2.0.0", "1.x", False),
        ("1.3.0", ">1.2", True),
        ("1.2.9", ">1.2", False),
        ("1.2.9", "<=1.2", True),
        ("1.3.0", "<=1.2", False),
        ("1.1.9", "<1.2", True),
        ("2.3.4", "1.2.3 - 2.3.4", True),
        ("2.3.5", "1.2.3 - 2.3.4", False),
        ("2.3.9", "1.2.3 - 2.3", True),
        ("2.9.0", "1.2.3 - 2", True),
        ("3.0.0", "1.2.3 - 2", False),
        ("3.5.0", ">=1.0.0 <2.0.0 || >=3.0.0", True),
        ("2.5.0", ">=1.0.0 <2.0.0 || >=3.0.0", False),
        ("1.2.4", "> 1.2.3 < 2", True),
        ("1.2.7", "~ 1.2", True),
        ("1.2.3", "v1.2.3", True),
        ("1.2.3", "=1.2.3", True),
        ("9.9.9", "*", True),
        ("9.9.9", "", True),
        ("9.9.9", ">*", False),
        ("2025.7.0", "^2025.7", True),
        ("2025.7.0", "^2025.4", True),
        ("2024.10.2", "^2025.1", False),
        # Prereleases match only a range that names one on the same X.Y.Z.
        ("6.5.53-1740412345678", ">=6.0.0", False),
        ("1.0.0-rc.1", ">=1.0.0-rc.0 <1.0.1", True),
        ("1.0.1-rc.1", ">=1.0.0-rc.0", False),
        ("1.2.3-beta.3", "~1.2.3-beta.2", True),
        ("1.2.4-beta.3", "^1.2.3-beta.2", False),
        # Loose mode drops words it cannot read; a range of nothing but words is invalid.
        ("1.5.0", ">=1.0.0 foo", True),
        ("2.1.0", "foo || ^2", True),
        ("1.0.0", "default", False),
        ("1.0.0", "latest", False),
        ("not-a-version", "*", False),
    ],
)
def test_satisfies_like_node_semver_loose(version: str, range_text: str, expected: bool) -> None:
    assert versions.satisfies(version, range_text) is expected


FIXTURE_RPI4 = [
    "2025.7.0",
    "2025.4.1",
    "2025.1.3",
    "2024.10.2",
    "6.5.50+rev8",
    "6.5.50+rev7",
    "6.5.44+rev1",
    "6.0.50+rev3",
    "5.3.21+rev3",
    "2.114.18+rev3",
    "2.88.4",
    "2.80.3+rev1.prod",
    "2.80.3+rev1.dev",
]


@pytest.mark.parametrize(
    ("range_text", "expected"),
    [
        ("^6.0.0", "6.5.50+rev8"),
        ("6.5.50", "6.5.50+rev8"),
        ("~2.80.3", "2.80.3+rev1.prod"),
        ("^2.999.0", None),
        ("default", None),
        ("^2025.4", "2025.7.0"),
        ("~2025.4.0", "2025.4.1"),
        ("<6", "5.3.21+rev3"),
        ("2.80.3.rev1", "2.80.3+rev1.prod"),
    ],
)
def test_max_satisfying_on_fixture_versions(range_text: str, expected: str | None) -> None:
    assert versions.max_satisfying(FIXTURE_RPI4, range_text) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [(["v1.0.0", "1.0.0"], "v1.0.0"), (["1.0.0", "v1.0.0"], "1.0.0")],
)
def test_max_satisfying_keeps_first_of_equal_maxima(given: list[str], expected: str) -> None:
    assert versions.max_satisfying(given, "1.x") == expected


@pytest.mark.parametrize(
    ("text", "esr"),
    [
        ("2023.1.0", True),
        ("2021.10.2.prod", True),
        ("2001.0.0", True),
        ("2000.1.0", False),
        ("6.5.50+rev8", False),
        ("garbage", False),
    ],
)
def test_is_esr_means_major_above_2000(text: str, esr: bool) -> None:
    assert versions.is_esr(text) is esr


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("balenaOS 2.88.4", "2.88.4"),
        ("v2.88.4", "2.88.4"),
        ("2.0.0.rev1.prod", "2.0.0+rev1.prod"),
        ("2021.10.2.dev", "2021.10.2+dev"),
        ("2.0.0_rev1", "2.0.0+rev1"),
        ("2020.04.0", "2020.4.0"),
        ("2020.04.05", "2020.4.05"),
    ],
)
def test_normalize(text: str, normalised: str) -> None:
    assert versions.normalize(text) == normalised
