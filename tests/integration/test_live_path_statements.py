"""The live path passes data along instead of reading it back.

One ``track`` that makes a known lead an MQL and routes it, as ``leadflow serve`` runs it
(``Services.after_ingest``): at most 15 SQL statements, exactly one fold of one event, no
replay of the lead's history; and the stored outcome equals a replay from the store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

import leadflow.core.lifecycle as core_lifecycle
import leadflow.services.lifecycle as service_lifecycle
import leadflow.services.lifecycle.queries as lifecycle_queries
import leadflow.services.lifecycle.recomputing as lifecycle_recomputing
from leadflow.adapters.db.tables import assignments, lead_states, ready_queue
from leadflow.bootstrap import Services
from leadflow.core.tracking import parse_batch
from leadflow.services.handoff import engagement_summary
from leadflow.services.ingest import ingest

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # Monday 10:00 in Seoul: reps are working


def _send(services: Services, at: datetime, *messages: dict[str, Any]) -> None:
    batch = [{"timestamp": at.isoformat(), **m} for m in messages]
    ingest(
        services.engine,
        parse_batch({"batch": batch}, received_at=at),
        at,
        after=services.after_ingest,
    )


def _known_lead(services: Services, user: str, company: str, at: datetime) -> None:
    """A lead that gave its contact and consent and clicked an e-mail: nurturing."""
    _send(
        services,
        at,
        {
            "type": "identify",
            "userId": user,
            "messageId": f"{user}-id",
            "traits": {"email": f"{user}@{company}.io", "consent": "granted", "company": company},
        },
    )
    _send(
        services,
        at + timedelta(minutes=1),
        {"type": "track", "userId": user, "event": "email_click", "messageId": f"{user}-c"},
    )


class Counter:
    def __init__(self) -> None:
        self.replays = 0
        self.folded = 0


def test_one_mql_track_is_at_most_15_statements_and_one_fold(services: Services) -> None:
    # Another lead routed first: the process has met the model and its reps once.
    _known_lead(services, "warm", "warmco", T0)
    _send(
        services,
        T0 + timedelta(minutes=2),
        {"type": "track", "userId": "warm", "event": "contact_request", "messageId": "w-q"},
    )
    _known_lead(services, "u1", "acme", T0 + timedelta(minutes=5))

    counter = Counter()
    real_replay, real_apply = lifecycle_recomputing.replay, lifecycle_recomputing.apply_events
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split("\n")[0])

    def replay(*args: Any, **kwargs: Any) -> Any:
        counter.replays += 1
        return real_replay(*args, **kwargs)

    def apply_event(*args: Any, **kwargs: Any) -> Any:
        counter.folded += 1
        return real_apply(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lifecycle_recomputing, "replay", replay)
        mp.setattr(lifecycle_queries, "replay", replay)
        mp.setattr(lifecycle_recomputing, "apply_events", apply_event)
        mp.setattr(core_lifecycle, "replay", replay)
        event.listen(services.engine, "before_cursor_execute", record)
        try:
            _send(
                services,
                T0 + timedelta(minutes=8),
                {"type": "track", "userId": "u1", "event": "contact_request", "messageId": "q"},
            )
        finally:
            event.remove(services.engine, "before_cursor_execute", record)

    with services.engine.connect() as conn:
        stage = dict(conn.execute(select(lead_states.c.lead_id, lead_states.c.stage)).all())
        routed = conn.execute(select(assignments.c.lead_id, assignments.c.summary)).all()
        waiting = conn.execute(select(ready_queue.c.lead_id)).scalars().all()
    model = services.active_model()
    handoff = model.handoff_stage
    assert sorted(stage.values()).count(handoff) == 2, stage
    assert len(routed) == 2 and waiting == []
    summary = dict(routed[-1].summary)
    assert any("contact request" in h for h in summary["highlights"]), summary
    assert len(statements) <= 15, "\n".join(statements)
    assert counter.folded == 1
    assert counter.replays == 0


def test_the_live_outcome_equals_a_replay_from_the_store(services: Services) -> None:
    """What the live path stored (passed along, not read back) is what a cold replay gives."""
    _known_lead(services, "u2", "globex", T0)
    for i in range(2):  # below the MQL score: the contact request makes it an MQL
        _send(
            services,
            T0 + timedelta(minutes=3 + i),
            {
                "type": "page",
                "userId": "u2",
                "messageId": f"p{i}",
                "properties": {"url": "https://x.io/products/a"},
            },
            {
                "type": "track",
                "userId": "u2",
                "event": "content_download",
                "messageId": f"d{i}",
                "properties": {"asset": f"Guide {i}", "asset_type": "white_paper"},
            },
        )
    _send(
        services,
        T0 + timedelta(minutes=20),
        {"type": "track", "userId": "u2", "event": "contact_request", "messageId": "q2"},
    )
    at = T0 + timedelta(minutes=20)
    with services.engine.connect() as conn:
        live = conn.execute(
            select(
                lead_states.c.lead_id,
                lead_states.c.stage,
                lead_states.c.engagement,
                lead_states.c.fit,
            )
        ).one()
        summary, assigned_at = conn.execute(
            select(assignments.c.summary, assignments.c.assigned_at)
        ).one()
    services.states.clear()
    with services.engine.begin() as conn:
        model = services.models.active(conn, at)
        result = service_lifecycle.recompute(conn, [live.lead_id], model, at)
        cold_summary = engagement_summary(conn, live.lead_id, model, at)
    assert assigned_at == at
    assert result.incremental == 0
    assert result.outcomes[live.lead_id].stage == live.stage
    assert result.outcomes[live.lead_id].engagement == pytest.approx(live.engagement)
    assert result.changes_added == 0 and result.changes_removed == 0
    assert summary["highlights"] == cold_summary["highlights"]
    assert summary["content"] == cold_summary["content"]
