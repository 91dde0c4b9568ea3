"""Read models of the sales queue (open hand-offs, the waiting queue) and the checks of a
rep's access to a lead."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.tables import (
    accounts,
    assignments,
    lead_states,
    leads,
    opportunities,
    ready_queue,
)

# ---------------------------------------------------------------- sales access


def assigned_to(engine: Engine, lead_id: int, rep: str) -> bool:
    """Whether the lead was ever handed to ``rep`` (their queue links to it)."""
    with read_only(engine).connect() as conn:
        found = conn.execute(
            select(assignments.c.id)
            .where(assignments.c.lead_id == lead_id, assignments.c.rep_key == rep)
            .limit(1)
        ).first()
    return found is not None


def active_rep(engine: Engine, lead_id: int) -> str | None:
    """The rep holding the lead's open hand-off, if any."""
    with read_only(engine).connect() as conn:
        found = conn.execute(
            select(assignments.c.rep_key).where(assignments.c.active_lead_id == lead_id)
        ).first()
    return found[0] if found else None


# ---------------------------------------------------------------- sales queue

QUEUE_LIMIT = 100


def sales_queue(engine: Engine, rep: str | None, limit: int = QUEUE_LIMIT) -> list[dict[str, Any]]:
    """Open hand-offs (routed, accepted, escalated), the rep's own or everyone's, oldest
    first; for everyone's view also the leads still waiting in the ready queue."""
    columns = (
        leads.c.id.label("lead_id"),
        leads.c.email,
        leads.c.first_name,
        leads.c.last_name,
        leads.c.title,
        accounts.c.name.label("account_name"),
        lead_states.c.stage,
        lead_states.c.engagement,
        lead_states.c.fit_grade,
        lead_states.c.qualification,
    )
    open_q = (
        select(
            *columns,
            assignments.c.id.label("assignment_id"),
            assignments.c.rep_key,
            assignments.c.status,
            assignments.c.assigned_at,
            assignments.c.due_at,
            assignments.c.summary,
        )
        .select_from(
            assignments.join(leads, leads.c.id == assignments.c.active_lead_id)
            .outerjoin(accounts, accounts.c.id == leads.c.account_id)
            .outerjoin(lead_states, lead_states.c.lead_id == leads.c.id)
        )
        .where(assignments.c.active_lead_id.is_not(None))
        .order_by(assignments.c.assigned_at, assignments.c.id)
        .limit(limit)
    )
    if rep is not None:
        open_q = open_q.where(assignments.c.rep_key == rep)
    with read_only(engine).connect() as conn:
        rows = [dict(r) for r in conn.execute(open_q).mappings()]
        if rep is None:
            waiting = (
                select(*columns, ready_queue.c.queued_at, ready_queue.c.priority)
                .select_from(
                    ready_queue.join(leads, leads.c.id == ready_queue.c.lead_id)
                    .outerjoin(accounts, accounts.c.id == leads.c.account_id)
                    .outerjoin(lead_states, lead_states.c.lead_id == leads.c.id)
                )
                .order_by(ready_queue.c.priority.desc(), ready_queue.c.queued_at)
                .limit(limit)
            )
            for queued in conn.execute(waiting).mappings():
                rows.append(
                    {
                        **dict(queued),
                        "status": "waiting",
                        "rep_key": None,
                        "assignment_id": None,
                        "assigned_at": None,
                        "due_at": None,
                        "summary": {},
                    }
                )
        opp_rows = conn.execute(
            select(opportunities.c.lead_id, opportunities.c.amount, opportunities.c.currency)
            .where(
                opportunities.c.stage == "open",
                opportunities.c.lead_id.in_([r["lead_id"] for r in rows]),
            )
            .order_by(opportunities.c.id)
        ).all()
    opps = {lead_id: (amount, currency) for lead_id, amount, currency in opp_rows}
    for r in rows:
        r["opportunity"] = opps.get(r["lead_id"])
        if not isinstance(r.get("summary"), dict):
            r["summary"] = {}
    return rows
