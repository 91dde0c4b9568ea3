"""The ready queue: leads due for a hand-off join it once per stay (:func:`enqueue`),
leave it when no longer due (:func:`drop_stale`); :func:`queue` lists it in drain order."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, exists, or_, select

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import (
    accounts,
    assignments,
    lead_states,
    leads,
    ready_queue,
    stage_changes,
)
from leadflow.core.config import LeadModel
from leadflow.core.routing import handoff_stages, priority


def _entry_rule() -> Any:
    """How a lead entered its current stage: the rule of that stage change (correlated on
    ``lead_states``)."""
    return (
        select(stage_changes.c.rule)
        .where(
            stage_changes.c.lead_id == lead_states.c.lead_id,
            stage_changes.c.to_stage == lead_states.c.stage,
            stage_changes.c.at == lead_states.c.stage_since,
        )
        .order_by(stage_changes.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def enqueue(
    conn: Connection, model: LeadModel, now: datetime, lead_ids: Iterable[int] | None = None
) -> int:
    """Queue leads due for a hand-off (in a hand-off stage, or fast-passed into a stage
    sales works in) that have no open hand-off, are not queued and were not handed off since
    they entered the stage. Returns how many were queued."""
    stages = handoff_stages(model)
    a = assignments.alias("a")
    query = select(
        lead_states.c.lead_id,
        lead_states.c.engagement,
        lead_states.c.fit,
        lead_states.c.qualification,
        lead_states.c.stage,
        _entry_rule().label("entry_rule"),
    ).where(
        lead_states.c.stage.in_(sorted(stages.sales)),
        ~exists().where(ready_queue.c.lead_id == lead_states.c.lead_id),
        ~exists().where(
            a.c.lead_id == lead_states.c.lead_id,
            or_(
                a.c.active_lead_id.is_not(None),
                lead_states.c.stage_since.is_(None),
                a.c.assigned_at >= lead_states.c.stage_since,
            ),
        ),
    )
    ids = None if lead_ids is None else sorted(set(lead_ids))
    rows: list[Any] = []
    if ids is None:
        rows = list(conn.execute(query.order_by(lead_states.c.lead_id)))
    else:
        for i in range(0, len(ids), 500):
            rows += conn.execute(query.where(lead_states.c.lead_id.in_(ids[i : i + 500]))).all()
    rows = [r for r in rows if stages.needs_handoff(r.stage, r.entry_rule)]
    if not rows:
        return 0
    res = conn.execute(
        insert_ignore(conn.engine, ready_queue, "lead_id"),
        [
            {
                "lead_id": r.lead_id,
                "priority": priority(r.engagement, r.fit, r.qualification),
                "queued_at": now,
                "reason": "handoff",
                "exclude_reps": [],
            }
            for r in rows
        ],
    )
    count = res.rowcount
    return count if count is not None and count >= 0 else len(rows)


def drop_stale(conn: Connection, model: LeadModel) -> int:
    """Queued leads no longer due for a hand-off leave the queue: they left the hand-off and
    sales stages (dead end, reject...) or a sales action moved them on (qualified straight
    from the appointment stage). One fast-passed from MQL to the appointment stage stays."""
    stages = handoff_stages(model)
    res = conn.execute(
        delete(ready_queue).where(
            ~exists().where(
                lead_states.c.lead_id == ready_queue.c.lead_id,
                lead_states.c.stage.in_(sorted(stages.sales)),
            )
        )
    )
    dropped = max(res.rowcount or 0, 0)
    rows = conn.execute(
        select(lead_states.c.lead_id, lead_states.c.stage, _entry_rule().label("entry_rule"))
        .join(ready_queue, ready_queue.c.lead_id == lead_states.c.lead_id)
        .where(lead_states.c.stage.not_in(sorted(stages.handoff)))
    ).all()
    gone = [r.lead_id for r in rows if not stages.needs_handoff(r.stage, r.entry_rule)]
    if gone:
        conn.execute(delete(ready_queue).where(ready_queue.c.lead_id.in_(gone)))
    return dropped + len(gone)


def queue(conn: Connection, limit: int | None = None) -> list[dict[str, Any]]:
    """The ready queue in drain order, with what a person needs to read it."""
    query = (
        select(
            ready_queue.c.lead_id,
            leads.c.email,
            accounts.c.name.label("account"),
            ready_queue.c.priority,
            lead_states.c.engagement,
            lead_states.c.fit,
            lead_states.c.qualification,
            ready_queue.c.queued_at,
            ready_queue.c.reason,
        )
        .select_from(
            ready_queue.join(leads, leads.c.id == ready_queue.c.lead_id)
            .outerjoin(lead_states, lead_states.c.lead_id == ready_queue.c.lead_id)
            .outerjoin(accounts, accounts.c.id == leads.c.account_id)
        )
        .order_by(ready_queue.c.priority.desc(), ready_queue.c.queued_at, ready_queue.c.lead_id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]
