"""Parsing smart-list query strings: typed values, and refusals that name the parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.core.lead_lists import (
    DEFAULT_COLUMNS,
    MAX_SIZE,
    FieldFilter,
    LeadQuery,
    ListQueryError,
    parse,
)

STAGES = ("anonymous", "acquired", "nurturing", "mql")


def refused(params, **kwargs) -> ListQueryError:
    with pytest.raises(ListQueryError) as caught:
        parse(params, **kwargs)
    return caught.value


def test_empty_parameters_are_the_default_query():
    assert parse({}) == LeadQuery()
    assert parse({"q": "", "owner": " ", "stage": "", "f.tier": ""}) == LeadQuery()


def test_every_filter_is_typed():
    query = parse(
        [
            ("q", "  Acme "),
            ("stage", "mql"),
            ("stage", "nurturing"),
            ("stage", "mql"),
            ("role", "handoff"),
            ("engagement_min", "10"),
            ("engagement_max", "80.5"),
            ("fit_min", "0"),
            ("grade", "A"),
            ("owner", "Rep One"),
            ("active_after", "2026-03-01"),
            ("active_before", "2026-04-01T09:00:00+09:00"),
            ("program", "education"),
            ("segment", "vip"),
            ("form", "contact"),
            ("campaign", "spring-2026"),
            ("source", "webinar"),
            ("account", "12"),
            ("domain", "ACME.example"),
            ("f.tier", "gold"),
            ("f.seats.min", "5"),
            ("f.seats.max", "50"),
            ("sort", "-last_activity"),
            ("page", "3"),
            ("size", "20"),
            ("cols", "name,stage,engagement,stage"),
        ],
        stages=STAGES,
    )
    assert query.q == "Acme"
    assert query.stages == ("mql", "nurturing") and query.roles == ("handoff",)
    assert (query.engagement_min, query.engagement_max, query.fit_min) == (10, 80.5, 0)
    assert query.active_after == datetime(2026, 3, 1, tzinfo=UTC)
    assert query.active_before == datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    assert query.domain == "acme.example" and query.account_id == 12
    assert query.fields == (
        FieldFilter(name="seats", low=5, high=50),
        FieldFilter(name="tier", value="gold"),
    )
    assert (query.sort, query.descending, query.page, query.size) == ("last_activity", True, 3, 20)
    assert query.offset == 40
    assert query.columns == ("name", "stage", "engagement")
    assert query.filtered


def test_query_string_round_trips():
    query = parse(
        parse_qsl(
            "q=a%25_b&role=nurture&grade=B&fit_max=3&f.x=1&f.y.min=2&sort=fit&cols=name,fit&page=2"
        )
    )
    assert query.q == "a%_b"
    assert parse(parse_qsl(query.query_string())) == query
    assert parse(parse_qsl(query.query_string(paging=False))).page == 1
    assert parse({}).columns == DEFAULT_COLUMNS


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"colour": "red"}, "colour", "unknown parameter"),
        ({"engagement_min": "ten"}, "engagement_min", "not a number"),
        ({"fit_max": "nan"}, "fit_max", "finite"),
        ({"fit_max": "1e400"}, "fit_max", "finite"),
        ({"engagement_min": "50", "engagement_max": "10"}, "engagement", "above max"),
        ({"f.seats.min": "9", "f.seats.max": "1"}, "f.seats", "above max"),
        ({"f.seats": "1", "f.seats.min": "1"}, "f.seats", "not both"),
        ({"f.bad-name": "1"}, "f.bad-name", "custom field"),
        ({"f.x.between": "1"}, "f.x.between", "custom field"),
        ({"sort": "password"}, "sort", "unknown column"),
        ({"sort": "-program"}, "sort", "unknown column"),
        ({"cols": "name,secret"}, "cols", "unknown column"),
        ({"size": "0"}, "size", "between 1"),
        ({"size": str(MAX_SIZE + 1)}, "size", "between 1"),
        ({"size": "-5"}, "size", "whole number"),
        ({"page": "1.5"}, "page", "whole number"),
        ({"page": "100000", "size": "1000"}, "page", "narrow the filter"),
        ({"account": "0"}, "account", "between"),
        ({"account": "9" * 30}, "account", "longer than"),
        ({"active_after": "yesterday"}, "active_after", "not a date"),
        ({"stage": "won-ish"}, "stage", "unknown stage"),
        ({"role": "boss"}, "role", "unknown role"),
        ({"q": "x" * 201}, "q", "longer than 200"),
        ({"q": "a\x00b"}, "q", "NUL"),
        ({"program": "edu cation"}, "program", "a key is"),
        ({"program": "<script>"}, "program", "a key is"),
        ({"q": "x", "sort": "id", "size": "5", "page": "1", "cursor": "-1"}, "cursor", "whole"),
        ({"q": "x" * 200, "owner": "z" * 255, "grade": ["g" * 64] * 60}, "query", "longer than"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field_and_the_reason(params, field, words):
    error = refused(params, stages=STAGES)
    assert error.field == field
    assert words in error.reason
    assert str(error).startswith(f"{field}: ")


def test_a_parameter_given_twice_is_refused_unless_repeatable():
    assert refused([("q", "a"), ("q", "b")]).field == "q"
    assert parse([("grade", "A"), ("grade", "B")]).grades == ("A", "B")
    assert refused([("grade", str(i)) for i in range(51)]).field == "grade"


def test_callers_own_parameters_can_be_ignored():
    assert parse({"csrf_token": "x", "q": "a"}, ignore={"csrf_token"}).q == "a"


@given(st.lists(st.tuples(st.text(max_size=30), st.text(max_size=60)), max_size=8))
def test_any_input_is_a_query_or_a_refusal_naming_a_field(pairs):
    try:
        query = parse(pairs)
    except ListQueryError as error:
        assert error.field and error.reason
    else:
        assert 1 <= query.size <= MAX_SIZE and query.page >= 1
