"""Bulk ingestion: group commit (several requests, one transaction), the tracking fast path
of `leadflow serve`, and lead merges that follow every table referencing ``leads``."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import wait
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from leadflow.adapters.db.tables import (
    events,
    identities,
    lead_states,
    leads,
    metadata,
    signals,
    stage_changes,
)
from leadflow.bootstrap import Services
from leadflow.core.tracking import TrackedMessage, parse_message
from leadflow.entrypoints.api import build_app
from leadflow.entrypoints.asgi import build_server_app
from leadflow.services.ingest import IngestQueue, ingest, ingest_parts, merge_leads

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def msg(raw: dict[str, Any], at: datetime = T0) -> TrackedMessage:
    return parse_message({"timestamp": at.isoformat(), **raw}, received_at=at)


def count(services: Services, table: Any, *where: Any) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())


def test_group_commit_stitches_across_requests_as_if_sequential(services: Services) -> None:
    t1, t2, t3 = T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    parts = [
        ([msg({"type": "page", "anonymousId": "a-1", "messageId": "m1"}, t1)], t1),
        (
            [
                msg(
                    {
                        "type": "identify",
                        "anonymousId": "a-1",
                        "userId": "u-1",
                        "messageId": "m2",
                        "traits": {"email": "kim@acme.io"},
                    },
                    t2,
                )
            ],
            t2,
        ),
        ([msg({"type": "track", "anonymousId": "a-1", "event": "x", "messageId": "m3"}, t3)], t3),
    ]
    results = ingest_parts(services.engine, parts)
    assert [(r.stored, r.duplicates) for r in results] == [(1, 0), (1, 0), (1, 0)]
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.message_id, events.c.lead_id, events.c.received_at).order_by(
                events.c.message_id
            )
        ).all()
        lead_ids = set(conn.execute(select(leads.c.id)).scalars())
    assert len(lead_ids) == 1
    assert {r.lead_id for r in rows} == lead_ids
    # Every request keeps its own received_at.
    assert [r.received_at for r in rows] == [t1, t2, t3]
    assert all(results[i].leads_touched == lead_ids for i in (1, 2))


def test_group_commit_counts_a_message_repeated_in_two_requests_once(services: Services) -> None:
    page = {"type": "page", "anonymousId": "a-2", "messageId": "same"}
    results = ingest_parts(services.engine, [([msg(page)], T0), ([msg(page)], T0)])
    assert [(r.stored, r.duplicates) for r in results] == [(1, 0), (0, 1)]
    again = ingest(services.engine, [msg(page)], T0)
    assert (again.stored, again.duplicates) == (0, 1)
    assert count(services, events) == 1


def test_queue_stores_every_request_and_isolates_a_failing_one(services: Services) -> None:
    writer = IngestQueue(services.engine, idle_seconds=0.2)
    good = [
        writer.submit(
            [msg({"type": "track", "userId": f"u-{i % 7}", "event": "e", "messageId": f"q{i}"})],
            T0,
        )
        for i in range(60)
    ]
    # A message the database refuses (its CHECK constraint on the type): only its own
    # request fails, not the others that shared its transaction.
    poison = TrackedMessage(message_id="poison", type="bogus", occurred_at=T0, user_id="u-1")
    bad = writer.submit([poison], T0)
    more = [
        writer.submit([msg({"type": "page", "anonymousId": "a-9", "messageId": f"p{i}"})], T0)
        for i in range(20)
    ]
    wait([*good, bad, *more], timeout=60)
    assert all(f.result().stored == 1 for f in good + more)
    with pytest.raises(Exception, match=r"(?i)check|constraint"):
        bad.result()
    assert count(services, events) == 80
    assert count(services, events, events.c.message_id == "poison") == 0
    assert count(services, leads) == 7


def _merge_fixture(services: Services) -> tuple[int, int]:
    ingest(
        services.engine,
        [
            msg({"type": "track", "userId": "keep", "event": "e", "messageId": "k1"}),
            msg({"type": "track", "userId": "drop", "event": "e", "messageId": "d1"}),
            msg({"type": "page", "userId": "drop", "anonymousId": "dev-d", "messageId": "d2"}),
        ],
        T0,
    )
    with services.engine.connect() as conn:
        ids = dict(conn.execute(select(leads.c.user_id, leads.c.id)).all())
    return ids["keep"], ids["drop"]


def _state(lead_id: int, stage: str) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "stage": stage,
        "scored_at": T0,
        "model_version": "v1",
        "model_hash": "h",
        "updated_at": T0,
    }


def _signal(lead_id: int, name: str, at: datetime) -> dict[str, Any]:
    return {
        "name": name,
        "lead_id": lead_id,
        "at": at,
        "rule": "r",
        "model_version": "v1",
        "data": {},
        "created_at": T0,
    }


def test_merge_repoints_or_removes_rows_of_every_table_referencing_leads(
    services: Services,
) -> None:
    keep, drop = _merge_fixture(services)
    later = T0 + timedelta(days=1)
    with services.engine.begin() as conn:
        conn.execute(lead_states.delete())
        conn.execute(insert(lead_states), [_state(keep, "lead"), _state(drop, "mql")])
        conn.execute(stage_changes.delete())
        conn.execute(
            insert(stage_changes),
            [
                {
                    "lead_id": drop,
                    "from_stage": "new",
                    "to_stage": "mql",
                    "at": T0,
                    "rule": "r",
                    "model_version": "v1",
                    "recorded_at": T0,
                }
            ],
        )
        conn.execute(signals.delete())
        conn.execute(
            insert(signals),
            [
                _signal(keep, "lead.returning", T0),
                _signal(drop, "lead.returning", T0),  # collides with keep's once moved
                _signal(drop, "lead.returning", later),  # does not: moves
            ],
        )
    with services.engine.begin() as conn:
        merge_leads(conn, keep, drop, later)
    assert count(services, leads, leads.c.id == drop) == 0
    # One row per lead: the dropped lead's row is gone, the kept lead's row untouched.
    with services.engine.connect() as conn:
        states = conn.execute(select(lead_states.c.lead_id, lead_states.c.stage)).all()
        moved = conn.execute(select(signals.c.lead_id, signals.c.at).order_by(signals.c.at)).all()
    assert [tuple(s) for s in states] == [(keep, "lead")]
    assert [tuple(s) for s in moved] == [(keep, T0), (keep, later)]
    for table in (stage_changes, events, identities):
        assert count(services, table, table.c.lead_id == drop) == 0
    assert count(services, stage_changes, stage_changes.c.lead_id == keep) == 1
    assert count(services, events, events.c.lead_id == keep) == 3
    assert count(services, identities, identities.c.lead_id == keep) == 2  # both userIds


def test_merge_leaves_no_row_pointing_at_the_dropped_lead_in_any_table(
    services: Services,
) -> None:
    """Whatever tables reference leads (others are added over time), none keeps the id."""
    keep, drop = _merge_fixture(services)
    with services.engine.begin() as conn:
        merge_leads(conn, keep, drop, T0)
    referencing = [
        (table, fk.parent)
        for table in metadata.sorted_tables
        for fk in table.foreign_keys
        if fk.column.table is leads
    ]
    assert len(referencing) >= 5
    for table, column in referencing:
        assert count(services, table, column == drop) == 0, table.name


# --- the tracking fast path answers exactly like the FastAPI routes --------------------


@pytest.fixture
def both_clients(services: Services) -> Iterator[tuple[TestClient, TestClient]]:
    with TestClient(build_app(services)) as plain, TestClient(build_server_app(services)) as fast:
        yield plain, fast


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_fast_path_answers_exactly_like_the_routes(
    both_clients: tuple[TestClient, TestClient],
    services: Services,
    write_key: str,
    admin_token: str,
) -> None:
    plain, fast = both_clients
    big = "x" * (33 * 1024)
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("/v1/track", _auth(write_key), b'{"userId":"u1","event":"e","messageId":"f1"}'),
        ("/v1/page", _auth(write_key), b'{"anonymousId":"a1","messageId":"f2"}'),
        (
            "/v1/batch",
            _auth(write_key),
            b'{"batch":[{"type":"identify","userId":"u1","messageId":"f3"}]}',
        ),
        ("/v1/track", _auth(write_key), b'{"userId":"u1"}'),
        ("/v1/track", _auth(write_key), b'{"userId":"u1",'),
        ("/v1/track", {}, b'{"userId":"u1","event":"e"}'),
        ("/v1/track", _auth("lfw_wrong"), b'{"userId":"u1","event":"e"}'),
        ("/v1/track", _auth(admin_token), b'{"userId":"u1","event":"e"}'),
        ("/v1/identify", _auth(write_key), b'{"traits":{"email":"nope"},"userId":"u"}'),
        ("/v1/track", _auth(write_key), f'{{"userId":"u","event":"{big}"}}'.encode()),
        ("/v1/batch", _auth(write_key), f'{{"batch":[{{"userId":"u","p":"{big}"}}]}}'.encode()),
        ("/v1/batch", _auth(write_key), b'{"batch":[{"type":"track","userId":"u1"}]}'),
        ("/v1/alias", _auth(write_key), b'{"userId":"u1"}'),
    ]
    for path, headers, body in cases:
        a = plain.post(path, content=body, headers=headers)
        b = fast.post(path, content=body, headers=headers)
        assert (b.status_code, b.json()) == (a.status_code, a.json()), (path, body[:60])
        assert b.headers.get("www-authenticate") == a.headers.get("www-authenticate")
    # Both stored the valid calls (once: the second sends were duplicates).
    assert count(services, events) == 3
    # Other paths and methods still reach the app.
    assert fast.get("/healthz").status_code == 200
    assert fast.get("/v1/track").status_code == plain.get("/v1/track").status_code
