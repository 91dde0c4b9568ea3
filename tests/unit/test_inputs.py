"""The rules every entrypoint applies at its door (core.inputs), and a fuzz target for the
tracking message parser: arbitrary JSON-ish payloads never raise anything but its own
validation error."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.adapters.db.repositories.common import prefix_upper_bound
from leadflow.core import lifecycle
from leadflow.core.inputs import (
    INT64_MAX,
    InputError,
    argument_problem,
    check_json,
    count_problem,
    date_problem,
    declared_length_over,
    iso_date_problem,
    text_problem,
)
from leadflow.core.model import Event, LeadProfile
from leadflow.core.tracking import MESSAGE_TYPES, MessageError, parse_batch, parse_message

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("plain", None),
        ("한국어 ✓ \U0010ffff", None),
        ("a\x00b", "contains a NUL character"),
        ("a\ud800b", "contains an unpaired UTF-16 surrogate (not valid Unicode text)"),
    ],
)
def test_text_problem(value: str, problem: str | None) -> None:
    assert text_problem(value) == problem


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        ({"a": [1, {"b": "x\x00"}]}, "a[1].b", "contains a NUL character"),
        ({"k\x00": 1}, "body", "a key contains a NUL character"),
        ({"n": 2**63}, "n", "out of range (a 64-bit integer, at most 9223372036854775807)"),
        ({"n": -(2**63) - 1}, "n", "out of range (a 64-bit integer, at most 9223372036854775807)"),
        ({"n": math.inf}, "n", "not a finite number"),
        ({"n": math.nan}, "n", "not a finite number"),
        ([[[[1]]]], "[0][0][0]", "nested deeper than 2 levels"),
    ],
)
def test_check_json_names_the_path(value: Any, field: str, reason: str) -> None:
    with pytest.raises(InputError) as refused:
        check_json(value, max_depth=2 if field == "[0][0][0]" else 32)
    assert (refused.value.field, refused.value.reason) == (field, reason)


def test_check_json_accepts_what_both_backends_store() -> None:
    check_json({"n": INT64_MAX, "f": 1e308, "t": "한국어", "l": [None, True, -1.5]})


def test_dates_and_counts() -> None:
    assert date_problem(date(1, 1, 1)) == "out of range (years 1900 to 2999)"
    assert date_problem(datetime(9999, 12, 31, tzinfo=UTC)) is not None
    assert date_problem(date(2026, 1, 1)) is None
    assert iso_date_problem("2026-01-01T00:00:00Z") is None
    assert iso_date_problem("0001-01-01") == "out of range (years 1900 to 2999)"
    assert iso_date_problem("-62135596800") == (
        "expected an ISO 8601 date (YYYY-MM-DD), not a number"
    )
    assert iso_date_problem("tomorrow") is None  # left to the caller's date parsing
    assert count_problem(1e308) == "out of range (0 to 10000000)"
    assert count_problem("99999999999999999999999") == "out of range (0 to 10000000)"
    assert count_problem(-1) is not None
    assert count_problem(500) is None and count_problem("51-200") is None


def test_argument_problem_names_the_option() -> None:
    assert argument_problem(["keys", "create", "--name", "a\udcffb"]) == (
        "--name",
        "is not valid UTF-8 text",
    )
    assert argument_problem(["--name=a\x00"]) == ("--name", "contains a NUL character")
    assert argument_problem(["report", "funnel", "--from", "0001-01-01"]) == (
        "--from",
        "out of range (years 1900 to 2999)",
    )
    assert argument_problem(["report", "funnel", "--from", "2026-01-01"]) is None


@pytest.mark.parametrize(
    ("text", "upper"),
    [
        ("ab", "ac"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff\U0010ffff", None),
        ("a\ud7ff", "a\ue000"),
    ],
)
def test_prefix_search_upper_bound_never_leaves_unicode(text: str, upper: str | None) -> None:
    assert prefix_upper_bound(text) == upper


def test_replay_ignores_an_employee_count_no_column_can_hold() -> None:
    """Events stored before the tracking API bounded counts must not break a backtest."""
    profile = LeadProfile(id=1)
    event = Event(
        message_id="m",
        type="group",
        occurred_at=NOW,
        lead_id=1,
        properties={"employees": 1e308},
    )
    assert lifecycle.merge_traits(profile, event).employee_count is None


# --------------------------------------------------------------------------- fuzz target

_CHARS = st.characters(codec=None, categories=None)  # every code point, surrogates included
_TEXT = st.one_of(
    st.text(_CHARS, max_size=12),
    st.sampled_from(["", " ", "\x00", "a\x00", "\ud800", "\U0010ffff", "user-1", "a@b.io"]),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
    st.sampled_from(
        ["2026-05-01T12:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00", "x"]
    ),
)
_JSONISH = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=20,
)
_KEYS = st.sampled_from(
    [
        "type",
        "userId",
        "anonymousId",
        "messageId",
        "event",
        "name",
        "traits",
        "properties",
        "context",
        "integrations",
        "timestamp",
        "sentAt",
        "previousId",
        "groupId",
    ]
)
_MESSAGE = st.one_of(
    st.dictionaries(_KEYS, _JSONISH, max_size=8),
    st.fixed_dictionaries(
        {"type": st.sampled_from(MESSAGE_TYPES), "userId": _TEXT, "anonymousId": _TEXT},
        optional={
            "event": _TEXT,
            "name": _TEXT,
            "traits": st.dictionaries(
                st.sampled_from(["email", "employees", "company", "name", "x"]), _JSONISH
            ),
            "properties": _JSONISH,
            "context": _JSONISH,
            "timestamp": _SCALARS,
            "sentAt": _SCALARS,
            "groupId": _TEXT,
            "previousId": _TEXT,
            "messageId": st.one_of(_TEXT, st.integers()),
        },
    ),
    _JSONISH,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_MESSAGE, type_hint=st.one_of(st.none(), st.sampled_from(MESSAGE_TYPES)))
def test_parse_message_raises_only_its_own_error(message: Any, type_hint: str | None) -> None:
    try:
        parsed = parse_message(message, received_at=NOW, type_hint=type_hint)
    except MessageError:
        return
    # Whatever is accepted can be stored on both backends, as it is.
    check_json(dict(parsed.properties), max_depth=64)
    check_json(dict(parsed.traits), max_depth=64)
    for value in (parsed.name, parsed.user_id, parsed.anonymous_id, parsed.page_url):
        assert value is None or text_problem(value) is None
    assert date_problem(parsed.occurred_at) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.fixed_dictionaries(
            {"batch": st.lists(_MESSAGE, max_size=4)},
            optional={"sentAt": _SCALARS, "context": _JSONISH},
        ),
        _JSONISH,
    )
)
def test_parse_batch_raises_only_its_own_error(body: Any) -> None:
    try:
        messages = parse_batch(body, received_at=NOW)
    except MessageError:
        return
    assert len(messages) == len(body["batch"])


def test_a_declared_length_is_ascii_digits_and_any_number_of_them():
    assert declared_length_over("101", 100)
    assert not declared_length_over("100", 100)
    assert declared_length_over("9" * 5000, 100)  # more digits than int() reads
    for not_a_length in (None, "", "²", "-1", "1e3", " 101"):
        assert not declared_length_over(not_a_length, 100), not_a_length
