"""Property test: hostile /v1/batch bodies against the real app (SQLite and PostgreSQL).

Hypothesis builds batches mixing valid messages with hostile ones (NUL characters, lone
surrogates, 64-bit overflows, deep nesting, wrong types, dates near year 1 or 9999,
employee counts no column can hold). Whatever the batch: never a 5xx; an accepted batch
has every one of its messages stored; a refused batch stores none of them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from leadflow.adapters.db.tables import events
from leadflow.bootstrap import Services

HOSTILE_TEXT = st.sampled_from(
    [
        "ok",
        "a\x00b",
        "\x00",
        "\ud800",
        "x\udfff",
        "\U0010ffff",
        "한국어",
        "",
        " ",
        "' OR 1=1",
        "x" * 300,
    ]
)
HOSTILE_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from([0, -1, 2**53, 2**63 - 1, 2**63, 2**64 - 1, -(2**63) - 1]),
        st.sampled_from([0.5, 1e308, -1e308]),
        HOSTILE_TEXT,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(HOSTILE_TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)
TIMES = st.sampled_from(
    [None, "2026-05-01T12:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "nope", 5]
)


@st.composite
def valid_message(draw: Any, kind: str) -> dict[str, Any]:
    text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
    message: dict[str, Any] = {
        "type": kind,
        "messageId": f"fz-{uuid.uuid4().hex}",
        "userId": "fuzz-user",
        "anonymousId": "fuzz-anon",
        "properties": draw(st.dictionaries(text, st.one_of(text, st.integers(0, 10**6)))),
    }
    if kind == "track":
        message["event"] = draw(st.sampled_from(["demo_request", "email_open", "한국어 ✓"]))
    if kind in ("page", "screen"):
        message["name"] = draw(text)
    if kind == "group":
        message["groupId"] = "g-fuzz"
        message["traits"] = {"employees": draw(st.integers(0, 10**6)), "name": draw(text)}
    if kind == "alias":
        message["previousId"] = "fuzz-anon"
    return message


@st.composite
def messages(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["identify", "track", "page", "screen", "group", "alias"]))
    if draw(st.integers(0, 2)) > 0:  # two in three messages are valid ones
        return draw(valid_message(kind))
    message: dict[str, Any] = {
        "type": kind,
        "messageId": f"fz-{uuid.uuid4().hex}",
        "userId": draw(st.one_of(st.just("fuzz-user"), HOSTILE_TEXT)),
        "anonymousId": draw(st.one_of(st.just("fuzz-anon"), HOSTILE_TEXT)),
    }
    if kind == "track":
        message["event"] = draw(st.one_of(st.just("demo_request"), HOSTILE_TEXT))
    if kind in ("page", "screen"):
        message["name"] = draw(st.one_of(st.just("Pricing"), HOSTILE_TEXT))
    if kind == "group":
        message["groupId"] = draw(st.one_of(st.just("g-fuzz"), HOSTILE_TEXT))
        message["traits"] = {"employees": draw(HOSTILE_VALUE)}
    if kind == "alias":
        message["previousId"] = draw(st.one_of(st.just("fuzz-anon"), HOSTILE_TEXT))
    if kind == "identify":
        company = {"name": draw(HOSTILE_TEXT), "id": draw(HOSTILE_VALUE)}
        message["traits"] = {"company": company, "title": draw(HOSTILE_TEXT)}
    if draw(st.booleans()):
        message["properties"] = draw(st.dictionaries(HOSTILE_TEXT, HOSTILE_VALUE, max_size=3))
    if draw(st.booleans()):
        message["context"] = {"traits": draw(HOSTILE_VALUE)}
    if (when := draw(TIMES)) is not None:
        message["timestamp"] = when
    return message


def stored(services: Services, ids: list[str]) -> set[str]:
    with services.engine.connect() as conn:
        rows = conn.execute(select(events.c.message_id).where(events.c.message_id.in_(ids)))
        return {r[0] for r in rows}


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(messages(), min_size=1, max_size=4))
def test_hostile_batches_never_5xx_and_are_stored_whole_or_not_at_all(
    client: Any, services: Services, write_key: str, batch: list[dict[str, Any]]
) -> None:
    # json.dumps escapes as ASCII: a lone surrogate reaches the server as "\ud800".
    r = client.post(
        "/v1/batch",
        content=json.dumps({"batch": batch}).encode(),
        headers={"content-type": "application/json"},
        auth=(write_key, ""),
    )
    assert r.status_code < 500, r.text
    ids = [m["messageId"] for m in batch]
    event(f"status {r.status_code}")
    if r.status_code == 200:
        assert stored(services, ids) == set(ids)
    else:
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["message"].startswith(body["field"] + ": ")
        assert stored(services, ids) == set()
