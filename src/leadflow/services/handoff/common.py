"""What the hand-off modules share: the model's sales section, signals, the router
lock and the open assignment of a lead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text, update

from leadflow.adapters.db.engine import insert_ignore, is_postgres
from leadflow.adapters.db.tables import assignments, lead_states, leads, signals
from leadflow.core.config import LeadModel, SalesSpec
from leadflow.core.routing import WorkCalendar
from leadflow.services import lifecycle, privacy

ROUTER_LOCK = 0x1EAD_F105


def sales_spec(model: LeadModel) -> SalesSpec:
    """The model's ``sales`` section, or the defaults (no reps) when it has none."""
    return model.spec.sales or SalesSpec()


def calendar_for(model: LeadModel) -> WorkCalendar:
    return WorkCalendar.from_spec(sales_spec(model))


def _signal(
    conn: Connection,
    name: str,
    lead_id: int,
    at: datetime,
    rule: str,
    model: LeadModel,
    data: Mapping[str, Any],
) -> None:
    conn.execute(
        insert_ignore(conn.engine, signals, "name", "lead_id", "at", "rule").values(
            name=name,
            lead_id=lead_id,
            at=at,
            rule=rule,
            model_version=model.version,
            data=privacy.without_suppressed(conn, lifecycle._plain(dict(data)))[0],
            created_at=at,
        )
    )


def _lock(conn: Connection, *, wait: bool) -> bool:
    """Serialise routers. SQLite writers are already serial (BEGIN IMMEDIATE). On
    PostgreSQL a transaction-scoped advisory lock, keyed by the schema too: leadflow
    installations (or test runs) in other schemas of the same database route independently
    instead of skipping each other's routing."""
    if not is_postgres(conn.engine):
        return True
    call = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    taken = conn.execute(
        text(f"SELECT {call}(:k, hashtext(current_schema()))"), {"k": ROUTER_LOCK}
    ).scalar()
    return True if wait else bool(taken)


def require_lead(conn: Connection, lead_id: int) -> None:
    if conn.execute(select(leads.c.id).where(leads.c.id == lead_id)).first() is None:
        raise LookupError(f"lead_id: no lead with id {lead_id}")


def _stage(conn: Connection, lead_id: int, initial: str) -> str:
    """The lead's stored stage; ``initial`` (the model's) for a lead not yet scored."""
    found = conn.execute(
        select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
    ).scalar_one_or_none()
    return str(found) if found is not None else initial


def active_assignment(conn: Connection, lead_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(assignments).where(assignments.c.active_lead_id == lead_id))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def _close(conn: Connection, assignment_id: int, status: str, now: datetime, reason: str) -> None:
    conn.execute(
        update(assignments)
        .where(assignments.c.id == assignment_id)
        .values(status=status, active_lead_id=None, closed_at=now, close_reason=reason[:64])
    )


def assignments_for(
    conn: Connection,
    *,
    lead_id: int | None = None,
    rep_key: str | None = None,
    statuses: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    query = select(assignments).order_by(assignments.c.assigned_at, assignments.c.id)
    if lead_id is not None:
        query = query.where(assignments.c.lead_id == lead_id)
    if rep_key is not None:
        query = query.where(assignments.c.rep_key == rep_key)
    if statuses:
        query = query.where(assignments.c.status.in_(statuses))
    return [dict(r) for r in conn.execute(query).mappings()]
