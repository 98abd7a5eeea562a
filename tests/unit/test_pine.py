"""Pine option objects compiled to OData text, and merged the way the SDKs merge them."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest

from flasher.balena import pine


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ({"is_host": True}, "is_host eq true"),
        ({"is_host": True, "slug": "a"}, "(is_host eq true) and (slug eq 'a')"),
        ({"note": None}, "note eq null"),
        ({"semver_major": {"$gt": 0}}, "semver_major gt 0"),
        ({"name": "O'Brien"}, "name eq 'O''Brien'"),
        ({"a": {"b": {"c": 1}}}, "a/b/c eq 1"),
        ({"slug": {"$in": ["x", "y"]}}, "slug in ('x','y')"),
        ({"$or": {"name": "X", "slug": "X"}}, "(name eq 'X') or (slug eq 'X')"),
        ({"$or": [{"a": 1}, {"b": 2}]}, "(a eq 1) or (b eq 2)"),
        ({"$not": {"a": 1}}, "not(a eq 1)"),
        ({"slug": {"$startswith": "balena_os/"}}, "startswith(slug,'balena_os/')"),
        ({"slug": {"$endswith": "-supervisor"}}, "endswith(slug,'-supervisor')"),
        (
            {"is_for__device_type": {"$any": {"$alias": "dt", "$expr": {"dt": {"slug": "x"}}}}},
            "is_for__device_type/any(dt:dt/slug eq 'x')",
        ),
        ({"$raw": "a eq 1"}, "a eq 1"),
    ],
)
def test_compile_filter(spec: dict[str, Any], text: str) -> None:
    assert pine.compile_filter(spec) == text


def test_compile_query_orders_and_nests_options() -> None:
    query = pine.compile_query(
        {
            "$top": 1,
            "$orderby": [{"semver_major": "desc"}, {"revision": "desc"}],
            "$filter": {"status": "success"},
            "$expand": {
                "owns__release": {
                    "$select": ["id", "raw_version"],
                    "$expand": {"release_tag": {"$select": "tag_key"}},
                    "$filter": {"version": "6.5.50+rev8"},
                },
                "is_for__device_type": None,
            },
            "$select": "id",
        }
    )
    assert unquote(query) == (
        "$select=id"
        "&$expand=owns__release($select=id,raw_version;$expand=release_tag($select=tag_key);"
        "$filter=version eq '6.5.50+rev8'),is_for__device_type"
        "&$filter=status eq 'success'"
        "&$orderby=semver_major desc,revision desc"
        "&$top=1"
    )
    # Spaces and "+" must be encoded; a literal "+" would read as a space.
    assert " " not in query and "+" not in query


@pytest.mark.parametrize("options", [{"$bogus": 1}, {"$filter": {"$nope": 1}}, {"$filter": {}}])
def test_unknown_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(pine.PineOptionError):
        pine.compile_query(options)


def test_merge_options_appends_selects_ands_filters_and_merges_expands() -> None:
    merged = pine.merge_options(
        {
            "$select": ["id", "raw_version"],
            "$filter": {"is_final": True},
            "$expand": {"release_tag": {"$select": "tag_key"}},
            "$top": 5,
        },
        {
            "$select": ["raw_version", "created_at"],
            "$filter": {"raw_version": "1.0.0"},
            "$expand": {"release_tag": {"$select": "value"}, "contains__image": {}},
            "$top": 1,
        },
    )
    assert merged == {
        "$select": ["id", "raw_version", "created_at"],
        "$filter": {"$and": [{"is_final": True}, {"raw_version": "1.0.0"}]},
        "$expand": {
            "release_tag": {"$select": ["tag_key", "value"]},
            "contains__image": {},
        },
        "$top": 1,
    }


def test_merge_with_nothing_keeps_defaults() -> None:
    defaults = {"$select": "id"}
    assert pine.merge_options(defaults, None) == defaults
