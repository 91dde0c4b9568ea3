"""Paced routing: queued and freshly due leads assigned to reps with capacity left today
(:func:`route_due`), the live path's handler (:func:`on_leads_recomputed`) and the release
of leads an automatic rule took out of the sales stages (:func:`release_departed`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from leadflow.adapters.db import claims
from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import accounts, assignments, lead_states, leads, ready_queue
from leadflow.core.config import LeadModel
from leadflow.core.routing import QueuedLead, WorkCalendar, handoff_stages, priority, route
from leadflow.services.handoff.common import _close, _lock, _signal, sales_spec
from leadflow.services.handoff.queueing import drop_stale, enqueue
from leadflow.services.handoff.reps import _reps_and_counts, _sync_config_reps_once
from leadflow.services.handoff.summary import engagement_summary
from leadflow.services.lifecycle import LeadOutcome


@dataclass(slots=True)
class RouteReport:
    routed: int = 0
    waiting: int = 0
    queued: int = 0
    skipped: bool = False
    """Another router held the lock (the ingest hook does not wait)."""
    by_rep: dict[str, int] = field(default_factory=dict)
    lead_ids: list[int] = field(default_factory=list)


def _claim(conn: Connection) -> list[Any]:
    query = (
        select(
            ready_queue.c.id,
            ready_queue.c.lead_id,
            ready_queue.c.queued_at,
            ready_queue.c.priority,
            ready_queue.c.exclude_reps,
            lead_states.c.engagement,
            lead_states.c.fit,
            lead_states.c.qualification,
            leads.c.account_id,
            accounts.c.industry,
            accounts.c.country,
            accounts.c.domain,
            accounts.c.external_id,
            accounts.c.owner,
        )
        .select_from(
            ready_queue.join(leads, leads.c.id == ready_queue.c.lead_id)
            .join(lead_states, lead_states.c.lead_id == ready_queue.c.lead_id)
            .outerjoin(accounts, accounts.c.id == leads.c.account_id)
        )
        .order_by(ready_queue.c.id)
    )
    return list(conn.execute(claims.lock_free(conn, query, of=ready_queue)))


def route_due(
    conn: Connection,
    model: LeadModel,
    now: datetime,
    *,
    wait: bool = True,
    scan: bool = True,
    fresh: Sequence[LeadOutcome] = (),
) -> RouteReport:
    """Queue what is due and hand off as much as today's capacity allows.

    ``scan``: look at every lead in a hand-off stage (the CLI and worker); the live path
    passes the leads it just made due as ``fresh`` instead: they are routed straight from
    what the recompute decided (not queued first and read back) and queued only if they
    must wait. ``wait``: wait for a concurrent router (else skip, queueing ``fresh``).
    """
    report = RouteReport()
    if not _lock(conn, wait=wait):
        report.skipped = True
        report.queued = _queue_fresh(conn, fresh, now)
        return report
    spec = sales_spec(model)
    cal = WorkCalendar.from_spec(spec)
    _sync_config_reps_once(conn, model, now)
    if scan:
        report.queued = enqueue(conn, model, now)
        drop_stale(conn, model)
    reps, today, recent = _reps_and_counts(conn, spec, cal, now)
    capacity_left = sum(max(r.daily_capacity - today.get(r.key, 0), 0) for r in reps if r.active)
    if capacity_left <= 0:
        report.queued += _queue_fresh(conn, fresh, now)
        report.waiting = conn.execute(select(func.count()).select_from(ready_queue)).scalar_one()
        return report
    claimed = _claim(conn)
    queued: list[QueuedLead] = []
    owners: dict[int, str] = {}
    reprioritised = []
    in_queue: set[int] = set()
    for row in claimed:
        in_queue.add(row.lead_id)
        prio = priority(row.engagement, row.fit, row.qualification)
        if prio != row.priority:
            reprioritised.append({"qid": row.id, "p": prio})
        queued.append(_queued(row.lead_id, prio, row.queued_at, row._mapping, row.exclude_reps))
        if row.account_id is not None and row.owner:
            owners[row.account_id] = row.owner
    fresh_by_id: dict[int, LeadOutcome] = {}
    for outcome in fresh:
        if outcome.lead_id in in_queue:
            continue
        fresh_by_id[outcome.lead_id] = outcome
        prio = priority(outcome.engagement, outcome.fit, outcome.qualification)
        queued.append(_queued(outcome.lead_id, prio, now, outcome.account, ()))
        account = outcome.account
        if account and account.get("owner"):
            owners[account["account_id"]] = account["owner"]
    if reprioritised:
        conn.execute(
            update(ready_queue)
            .where(ready_queue.c.id == bindparam("qid"))
            .values(priority=bindparam("p")),
            reprioritised,
        )
    plan = route(
        queued,
        reps,
        today,
        owners,
        now,
        calendar=cal,
        sla_hours=spec.sla_hours,
        recent_counts=recent,
    )
    for a in plan.assignments:
        made_due = fresh_by_id.get(a.lead_id)
        state = made_due.state if made_due is not None else None
        summary = engagement_summary(conn, a.lead_id, model, now, state=state)
        stored = conn.execute(
            insert_ignore(conn.engine, assignments, "active_lead_id")
            .values(
                lead_id=a.lead_id,
                active_lead_id=a.lead_id,
                rep_key=a.rep_key,
                rule=a.rule,
                priority=a.priority,
                assigned_at=a.assigned_at,
                due_at=a.due_at,
                status="routed",
                summary=summary,
            )
            .returning(assignments.c.id)
        ).first()
        if a.lead_id in in_queue:
            conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == a.lead_id))
        if stored is None:  # the lead already has an open hand-off
            continue
        if a.account_id is not None and not owners.get(a.account_id):  # the first owner
            conn.execute(
                update(accounts)
                .where(accounts.c.id == a.account_id, accounts.c.owner.is_(None))
                .values(owner=a.rep_key)
            )
        _signal(
            conn,
            "lead.routed",
            a.lead_id,
            now,
            f"routing.{a.rule}",
            model,
            {
                "rep": a.rep_key,
                "rule": a.rule,
                "due_at": a.due_at,
                "priority": a.priority,
                "summary": summary,
            },
        )
        report.by_rep[a.rep_key] = report.by_rep.get(a.rep_key, 0) + 1
        report.lead_ids.append(a.lead_id)
    routed = set(report.lead_ids)
    report.queued += _queue_fresh(
        conn, [o for o in fresh_by_id.values() if o.lead_id not in routed], now
    )
    report.routed = len(report.lead_ids)
    report.waiting = len(plan.still_waiting)
    return report


def _queued(
    lead_id: int,
    prio: float,
    queued_at: datetime,
    account: Mapping[str, Any],
    exclude: Iterable[Any] | None,
) -> QueuedLead:
    account_id = account.get("account_id")
    keys = {str(account_id)} if account_id is not None else set()
    keys |= {str(k).lower() for k in (account.get("domain"), account.get("external_id")) if k}
    return QueuedLead(
        lead_id=lead_id,
        priority=prio,
        queued_at=queued_at,
        account_id=account_id,
        account_keys=frozenset(keys),
        industry=account.get("industry"),
        country=account.get("country"),
        exclude=frozenset(str(x) for x in (exclude or [])),
    )


def _queue_fresh(conn: Connection, fresh: Iterable[LeadOutcome], now: datetime) -> int:
    """Put leads that must wait in the ready queue (already queued ones stay as they are)."""
    rows = [
        {
            "lead_id": o.lead_id,
            "priority": priority(o.engagement, o.fit, o.qualification),
            "queued_at": now,
            "reason": "handoff",
            "exclude_reps": [],
        }
        for o in fresh
    ]
    if not rows:
        return 0
    res = conn.execute(insert_ignore(conn.engine, ready_queue, "lead_id"), rows)
    count = res.rowcount
    return count if count is not None and count >= 0 else len(rows)


def on_leads_recomputed(
    conn: Connection, model: LeadModel, outcomes: Iterable[LeadOutcome], now: datetime
) -> None:
    """The live path's hand-off step, from what the recompute decided: leads an automatic
    rule took out of the sales stages are released (open assignment closed, queue row
    dropped); leads that just entered a stage due for a hand-off (MQLs, fast-passes into a
    sales stage) are routed if the team has capacity and no other router is busy, else
    queued. Leads whose stage did not change need nothing here (the worker's scan catches
    anything that came another way)."""
    stages = handoff_stages(model)
    keep = stages.sales
    departed: list[int] = []
    due: list[LeadOutcome] = []
    for o in outcomes:
        if o.before == o.stage:
            continue
        if o.before in keep and o.stage not in keep:
            departed.append(o.lead_id)
        if o.stage in keep and stages.needs_handoff(o.stage, o.entry_rule):
            due.append(o)
    if departed:
        release_departed(conn, model, departed, now)
    if due:
        route_due(conn, model, now, wait=False, scan=False, fresh=due)


NOT_ACCEPTED = ", not accepted"
"""Suffix of ``close_reason`` when an assignment closed before sales accepted it."""


def sales_stages(model: LeadModel) -> set[str]:
    """The hand-off stages and the stages sales works in (targets of accept and qualify)."""
    return set(handoff_stages(model).sales)


def release_departed(
    conn: Connection, model: LeadModel, lead_ids: Iterable[int], now: datetime
) -> int:
    """Leads among ``lead_ids`` that an automatic rule took out of the hand-off and sales
    stages (a hard bounce to the dead end...) leave the ready queue and their open
    assignment is closed, its reason naming the new stage. Returns assignments closed."""
    ids = sorted(set(lead_ids))
    keep = sorted(sales_stages(model))
    closed = 0
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        gone = select(lead_states.c.lead_id).where(
            lead_states.c.lead_id.in_(chunk), lead_states.c.stage.not_in(keep)
        )
        conn.execute(delete(ready_queue).where(ready_queue.c.lead_id.in_(gone)))
        rows = conn.execute(
            select(assignments.c.id, assignments.c.status, lead_states.c.stage)
            .join(lead_states, lead_states.c.lead_id == assignments.c.active_lead_id)
            .where(assignments.c.active_lead_id.in_(chunk), lead_states.c.stage.not_in(keep))
        ).all()
        for row in rows:
            suffix = "" if row.status == "accepted" else NOT_ACCEPTED
            _close(conn, row.id, "closed", now, f"stage {row.stage}{suffix}")
            closed += 1
    return closed
