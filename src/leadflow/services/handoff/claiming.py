"""A rep claims a lead from the waiting pool (:func:`claim`); an admin assigns a waiting
lead or moves an open hand-off to another rep (:func:`assign`).

Command -> load -> decide in core (:func:`leadflow.core.queue.decide_claim`) -> save, in
the caller's transaction. Claims and assignments take the router lock (an advisory lock on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so capacity counts are exact and of two reps
claiming one lead one wins: the other finds the lead gone from the pool and is told who
has it. ``assignments.active_lead_id`` is unique besides, so a lead never gets two open
hand-offs whatever happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import accounts, assignments, leads, ready_queue, sales_reps
from leadflow.core import queue as core_queue
from leadflow.core.config import LeadModel
from leadflow.core.queue import ClaimCheck, ClaimDecision, Reason
from leadflow.services.handoff.common import (
    _close,
    _lock,
    _signal,
    active_assignment,
    calendar_for,
    require_lead,
    sales_spec,
)
from leadflow.services.handoff.reps import _sync_config_reps_once
from leadflow.services.handoff.summary import engagement_summary
from leadflow.services.lifecycle import ActionRefused

RULE_CLAIM = "claim"
RULE_MANUAL = "manual"


class ClaimRefused(ActionRefused):
    """A claim or assignment core refused; ``reason`` says why (key and values)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_WORDS = {
    "taken": "{rep} already has it",
    "yours": "{rep} already has it",
    "not_waiting": "it is not waiting for a rep",
    "no_rep": "no sales rep with key '{rep}'",
    "inactive": "{rep} is not active",
    "owner": "its account belongs to {rep} (one account, one rep)",
    "excluded": "it was taken from you when its SLA ran out",
    "capacity": "{rep} has had {n} of {capacity} new leads today",
}


def explain(reason: Reason) -> str:
    """A refusal in plain English (the dashboard words it per locale from the key)."""
    text = _WORDS.get(reason.key, reason.key)
    for name, value in reason.values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


@dataclass(slots=True)
class ClaimResult:
    lead_id: int
    rep_key: str
    assignment_id: int
    status: str
    due_at: datetime
    previous_rep: str | None = None
    used: int = 0
    capacity: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "rep": self.rep_key,
            "assignment_id": self.assignment_id,
            "status": self.status,
            "due_at": self.due_at,
            "previous_rep": self.previous_rep,
            "used_today": self.used,
            "capacity": self.capacity,
        }


def _today(conn: Connection, model: LeadModel, rep_key: str, now: datetime) -> int:
    begin, end = calendar_for(model).day_bounds(calendar_for(model).local_day(now))
    return int(
        conn.execute(
            select(func.count())
            .select_from(assignments)
            .where(
                assignments.c.rep_key == rep_key,
                and_(assignments.c.assigned_at >= begin, assignments.c.assigned_at < end),
            )
        ).scalar_one()
    )


def _check(
    conn: Connection, model: LeadModel, lead_id: int, rep_key: str, now: datetime
) -> tuple[ClaimCheck, Any, dict[str, Any] | None]:
    """Load what the decision needs: the rep, today's count, the pool row, the holder and
    the account's owner."""
    spec = sales_spec(model)
    rep = conn.execute(select(sales_reps).where(sales_reps.c.key == rep_key)).mappings().first()
    queued = conn.execute(
        select(ready_queue.c.id, ready_queue.c.exclude_reps).where(ready_queue.c.lead_id == lead_id)
    ).first()
    current = active_assignment(conn, lead_id)
    owner_row = conn.execute(
        select(accounts.c.id, accounts.c.owner)
        .select_from(leads.join(accounts, accounts.c.id == leads.c.account_id))
        .where(leads.c.id == lead_id)
    ).first()
    owner = owner_row.owner if owner_row is not None else None
    owner_active = False
    if owner:
        owner_active = bool(
            conn.execute(
                select(sales_reps.c.active).where(sales_reps.c.key == owner)
            ).scalar_one_or_none()
        )
    capacity = 0
    if rep is not None:
        capacity = int(
            rep["daily_capacity"] if rep["daily_capacity"] is not None else spec.default_capacity
        )
    check = ClaimCheck(
        rep_key=rep_key,
        rep_known=rep is not None,
        rep_active=bool(rep["active"]) if rep is not None else False,
        capacity=capacity,
        today=_today(conn, model, rep_key, now),
        waiting=queued is not None and current is None,
        holder=current["rep_key"] if current is not None else None,
        account_owner=owner,
        owner_active=owner_active,
        excluded=frozenset(str(x) for x in (queued.exclude_reps if queued else None) or []),
    )
    return check, owner_row, current


def _refuse(decision: ClaimDecision, lead_id: int) -> ClaimRefused:
    return ClaimRefused(decision.reason, f"lead {lead_id}: {explain(decision.reason)}")


def _open(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    rep_key: str,
    rule: str,
    status: str,
    now: datetime,
) -> tuple[int, datetime]:
    due = calendar_for(model).add_working_hours(now, sales_spec(model).sla_hours)
    stored = conn.execute(
        insert_ignore(conn.engine, assignments, "active_lead_id")
        .values(
            lead_id=lead_id,
            active_lead_id=lead_id,
            rep_key=rep_key,
            rule=rule,
            priority=0.0,
            assigned_at=now,
            due_at=due,
            status=status,
            summary=engagement_summary(conn, lead_id, model, now),
        )
        .returning(assignments.c.id)
    ).first()
    if stored is None:  # only if something bypassed the lock: the unique key still holds
        holder = active_assignment(conn, lead_id)
        raise _refuse(
            ClaimDecision(False, Reason("taken", {"rep": holder["rep_key"] if holder else "?"})),
            lead_id,
        )
    return int(stored[0]), due


def claim(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    rep_key: str,
    now: datetime,
    *,
    actor: str | None = None,
) -> ClaimResult:
    """The rep takes a lead from the waiting pool: a hand-off to them (rule ``claim``) with
    the SLA running from now, counted against today's capacity. Refused (nothing stored)
    with :class:`ClaimRefused` naming the reason."""
    require_lead(conn, lead_id)
    _lock(conn, wait=True)
    _sync_config_reps_once(conn, model, now)
    check, owner_row, _current = _check(conn, model, lead_id, rep_key, now)
    decision = core_queue.decide_claim(check)
    if not decision.ok:
        raise _refuse(decision, lead_id)
    taken = conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == lead_id)).rowcount
    if taken == 0:
        raise _refuse(ClaimDecision(False, Reason("not_waiting")), lead_id)
    assignment_id, due = _open(conn, model, lead_id, rep_key, RULE_CLAIM, "routed", now)
    _own_account(conn, owner_row, rep_key)
    _signal(
        conn,
        "lead.routed",
        lead_id,
        now,
        f"routing.{RULE_CLAIM}",
        model,
        {"rep": rep_key, "rule": RULE_CLAIM, "due_at": due, "actor": actor},
    )
    return ClaimResult(
        lead_id, rep_key, assignment_id, "routed", due, used=check.today + 1,
        capacity=check.capacity,
    )  # fmt: skip


def assign(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    rep_key: str,
    now: datetime,
    *,
    actor: str | None = None,
) -> ClaimResult:
    """An admin gives a waiting lead to ``rep_key``, or moves an open hand-off to them (the
    old one closes as ``rerouted``, reason ``reassigned``; an accepted hand-off stays
    accepted with its new rep). Within the rep's capacity; the account owner rule does not
    bind an admin."""
    require_lead(conn, lead_id)
    _lock(conn, wait=True)
    _sync_config_reps_once(conn, model, now)
    check, owner_row, current = _check(conn, model, lead_id, rep_key, now)
    if current is None:
        decision = core_queue.decide_claim(check, by_admin=True)
    else:
        decision = core_queue.decide_reassign(check)
    if not decision.ok:
        raise _refuse(decision, lead_id)
    previous = None
    status = "routed"
    if current is not None:
        previous = current["rep_key"]
        status = "accepted" if current["status"] == "accepted" else "routed"
        _close(conn, current["id"], "rerouted", now, "reassigned")
        _signal(
            conn,
            "lead.rerouted",
            lead_id,
            now,
            "sales.reassign",
            model,
            {"rep": previous, "to": rep_key, "reason": "reassigned", "actor": actor},
        )
    conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == lead_id))
    assignment_id, due = _open(conn, model, lead_id, rep_key, RULE_MANUAL, status, now)
    if current is None:
        _own_account(conn, owner_row, rep_key)
    _signal(
        conn,
        "lead.routed",
        lead_id,
        now,
        f"routing.{RULE_MANUAL}",
        model,
        {"rep": rep_key, "rule": RULE_MANUAL, "due_at": due, "actor": actor},
    )
    return ClaimResult(
        lead_id, rep_key, assignment_id, status, due, previous_rep=previous,
        used=check.today + 1, capacity=check.capacity,
    )  # fmt: skip


def _own_account(conn: Connection, owner_row: Any, rep_key: str) -> None:
    """The rep of an account's first hand-off becomes its owner (as routing does)."""
    if owner_row is not None and not owner_row.owner:
        conn.execute(
            update(accounts)
            .where(accounts.c.id == owner_row.id, accounts.c.owner.is_(None))
            .values(owner=rep_key)
        )


def capacity_today(
    conn: Connection, model: LeadModel, rep_key: str, now: datetime
) -> tuple[int, int] | None:
    """(hand-offs today, daily capacity) of a rep in the table; None for an unknown key."""
    rep = conn.execute(
        select(sales_reps.c.daily_capacity).where(sales_reps.c.key == rep_key)
    ).first()
    if rep is None:
        return None
    cap = rep.daily_capacity
    return _today(conn, model, rep_key, now), int(
        cap if cap is not None else sales_spec(model).default_capacity
    )


__all__ = ["ClaimRefused", "ClaimResult", "assign", "capacity_today", "claim", "explain"]
