"""Sales hand-off: the ready queue, paced routing, sales actions, SLA and opportunities.

- A lead that enters a hand-off stage (``sales.handoff_stages``, default: role ``handoff``),
  or that an automatic rule (a fast-pass) moved straight into a stage sales works in (appointment,
  opportunity), joins the ready queue once per stay (:func:`enqueue`, deciding with core
  :func:`~leadflow.core.routing.handoff_stages`); :func:`route_due` assigns queued leads,
  highest priority first, to reps with capacity left today (core
  :func:`~leadflow.core.routing.route`). It runs from ``leadflow sales route`` (a worker)
  and on the live path (:func:`on_leads_recomputed`, a handler of the pipeline's
  ``LeadsRecomputed`` event): leads the recompute just made due are routed straight from
  what it decided, with no read-back, and queued only when they must wait; routing is
  skipped while another router holds the lock. The same handler releases leads an
  automatic rule took out of the hand-off and sales stages (a hard bounce to the dead
  end): queue row dropped, open assignment closed (:func:`release_departed`).
- Routers are serialised (a transaction-scoped advisory lock on PostgreSQL, ``BEGIN
  IMMEDIATE`` on SQLite) so capacity counts are exact; queue rows are claimed with ``FOR
  UPDATE SKIP LOCKED`` and ``assignments.active_lead_id`` is unique, so a lead can never
  have two open hand-offs.
- Sales actions (:func:`accept`, :func:`reject`, :func:`not_now`, :func:`qualify`,
  :func:`win`, :func:`lose`) go through :func:`leadflow.services.lifecycle.record_action`,
  so they are stage changes in the history log; a refused action raises
  :class:`~leadflow.services.lifecycle.ActionRefused` and stores nothing.
- Every hand-off and outcome is a row in ``signals`` (``lead.routed``, ``lead.accepted``,
  ``lead.rejected``, ``lead.recycled``, ``lead.escalated``, ``lead.rerouted``,
  ``opportunity.created|won|lost``) for the outbox to deliver.

Every function works inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from leadflow.adapters.db.engine import insert_ignore, is_postgres
from leadflow.adapters.db.rows import as_record
from leadflow.adapters.db.tables import (
    accounts,
    assignments,
    events,
    lead_states,
    leads,
    opportunities,
    opportunity_contacts,
    ready_queue,
    sales_actions,
    sales_reps,
    signals,
    stage_changes,
)
from leadflow.core.config import LeadModel, SalesSpec
from leadflow.core.lifecycle import LeadState
from leadflow.core.model import Bant, SalesAction
from leadflow.core.routing import (
    ACTIVE_STATUSES,
    OpenAssignment,
    QueuedLead,
    Rep,
    Territory,
    WorkCalendar,
    check_lost_reason,
    handoff_stages,
    priority,
    reject_action,
    route,
    sla_breaches,
)
from leadflow.services import lifecycle, privacy
from leadflow.services.lifecycle import ActionRefused, LeadOutcome

ROUTER_LOCK = 0x1EAD_F105
ROUND_ROBIN_WINDOW = timedelta(days=30)
SUMMARY_EVENTS = 5000
"""The hand-off summary reads a lead's newest events up to this many."""
BUYING_ROLES = (
    "decision_maker",
    "economic_buyer",
    "influencer",
    "champion",
    "user",
    "technical_evaluator",
    "gatekeeper",
    "contact",
)
CONTENT_WORDS = {
    "white_paper": "read the white paper",
    "case_study": "read the case study",
    "demo_video": "watched the demo video",
    "pricing": "downloaded the price list",
    "webinar": "downloaded the webinar recording",
    "trial": "downloaded the trial",
    "blog_post": "read the blog post",
}


def sales_spec(model: LeadModel) -> SalesSpec:
    """The model's ``sales`` section, or the defaults (no reps) when it has none."""
    return model.spec.sales or SalesSpec()


def calendar_for(model: LeadModel) -> WorkCalendar:
    return WorkCalendar.from_spec(sales_spec(model))


# --------------------------------------------------------------------------- signals


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


# --------------------------------------------------------------------------- reps


def _rep_row(rep: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": rep["key"],
        "name": rep["name"],
        "email": rep["email"],
        "active": rep["active"],
        "daily_capacity": rep["daily_capacity"],
        "weight": rep["weight"],
        "territories": list(rep.get("territories") or []),
    }


_SYNCED: set[tuple[int, str]] = set()
"""(engine, model hash) pairs whose config reps this process has already added."""


def sync_config_reps(conn: Connection, model: LeadModel, now: datetime) -> int:
    """Add the reps of ``sales.reps`` that the table lacks (the table is authoritative)."""
    spec = sales_spec(model)
    added = 0
    for rep in spec.reps:
        res = conn.execute(
            insert_ignore(conn.engine, sales_reps, "key").values(
                key=rep.key,
                name=rep.name,
                email=rep.email,
                active=rep.active,
                daily_capacity=rep.daily_capacity
                if rep.daily_capacity is not None
                else spec.default_capacity,
                weight=rep.weight,
                territories=[t.model_dump(exclude_none=True) for t in rep.territories],
                source="config",
                created_at=now,
                updated_at=now,
            )
        )
        added += max(res.rowcount or 0, 0)
    return added


def list_reps(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(sales_reps).order_by(sales_reps.c.key)).mappings()
    return [dict(r) for r in rows]


def get_rep(conn: Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(sales_reps).where(sales_reps.c.key == key)).mappings().first()
    return dict(row) if row is not None else None


def create_rep(conn: Connection, rep: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Add a rep; a key already taken raises ``ValueError`` naming ``key``."""
    if get_rep(conn, rep["key"]) is not None:
        raise ValueError(f"key: a rep with key '{rep['key']}' exists")
    conn.execute(
        insert(sales_reps).values(**_rep_row(rep), source="api", created_at=now, updated_at=now)
    )
    found = get_rep(conn, rep["key"])
    assert found is not None
    return found


def update_rep(
    conn: Connection, key: str, changes: Mapping[str, Any], now: datetime
) -> dict[str, Any] | None:
    allowed = {"name", "email", "active", "daily_capacity", "weight", "territories"}
    values = {k: v for k, v in changes.items() if k in allowed}
    if get_rep(conn, key) is None:
        return None
    if values:
        conn.execute(
            update(sales_reps).where(sales_reps.c.key == key).values(**values, updated_at=now)
        )
    return get_rep(conn, key)


def _rep(r: Mapping[str, Any], default_capacity: int) -> Rep:
    territories = tuple(
        Territory.of(
            industries=t.get("industries"),
            countries=t.get("countries"),
            accounts=t.get("accounts"),
        )
        for t in (r["territories"] or [])
        if isinstance(t, dict)
    )
    capacity = r["daily_capacity"]
    return Rep(
        key=r["key"],
        name=r["name"],
        email=r["email"],
        active=bool(r["active"]),
        daily_capacity=int(capacity if capacity is not None else default_capacity),
        weight=float(r["weight"]),
        territories=territories,
    )


def load_reps(conn: Connection, default_capacity: int = 20) -> list[Rep]:
    return [_rep(r, default_capacity) for r in list_reps(conn)]


# --------------------------------------------------------------------------- queue


def _lock(conn: Connection, *, wait: bool) -> bool:
    """Serialise routers. SQLite writers are already serial (BEGIN IMMEDIATE)."""
    if not is_postgres(conn.engine):
        return True
    if wait:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ROUTER_LOCK})
        return True
    return bool(
        conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ROUTER_LOCK}).scalar()
    )


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


# --------------------------------------------------------------------------- routing


@dataclass(slots=True)
class RouteReport:
    routed: int = 0
    waiting: int = 0
    queued: int = 0
    skipped: bool = False
    """Another router held the lock (the ingest hook does not wait)."""
    by_rep: dict[str, int] = field(default_factory=dict)
    lead_ids: list[int] = field(default_factory=list)


def _sync_config_reps_once(conn: Connection, model: LeadModel, now: datetime) -> None:
    """:func:`sync_config_reps` once per model and database in this process: the router
    runs on every hand-off, and the config does not change under a model hash."""
    key = (id(conn.engine.pool), model.content_hash)
    if key not in _SYNCED:
        sync_config_reps(conn, model, now)
        _SYNCED.add(key)


def _reps_and_counts(
    conn: Connection, spec: SalesSpec, cal: WorkCalendar, now: datetime
) -> tuple[list[Rep], Counter[str], Counter[str]]:
    """The reps with their hand-offs today and over the round-robin window: one statement."""
    begin, end = cal.day_bounds(cal.local_day(now))
    since = min(begin, now - ROUND_ROBIN_WINDOW)
    today = func.sum(
        case(
            (and_(assignments.c.assigned_at >= begin, assignments.c.assigned_at < end), 1), else_=0
        ),
    )
    recent = func.sum(case((assignments.c.assigned_at >= now - ROUND_ROBIN_WINDOW, 1), else_=0))
    counts = (
        select(assignments.c.rep_key, today.label("today"), recent.label("recent"))
        .where(assignments.c.assigned_at >= since)
        .group_by(assignments.c.rep_key)
        .subquery()
    )
    rows = conn.execute(
        select(sales_reps, counts.c.today, counts.c.recent)
        .select_from(sales_reps.outerjoin(counts, counts.c.rep_key == sales_reps.c.key))
        .order_by(sales_reps.c.key)
    ).mappings()
    reps, today_counts, recent_counts = [], Counter[str](), Counter[str]()
    for r in rows:
        reps.append(_rep(as_record(r), spec.default_capacity))
        if r["today"]:
            today_counts[r["key"]] = int(r["today"])
        if r["recent"]:
            recent_counts[r["key"]] = int(r["recent"])
    return reps, today_counts, recent_counts


def _today_counts(conn: Connection, cal: WorkCalendar, now: datetime) -> Counter[str]:
    begin, end = cal.day_bounds(cal.local_day(now))
    rows = conn.execute(
        select(assignments.c.rep_key, func.count())
        .where(assignments.c.assigned_at >= begin, assignments.c.assigned_at < end)
        .group_by(assignments.c.rep_key)
    )
    return Counter({k: n for k, n in rows})


def _recent_counts(conn: Connection, now: datetime) -> Counter[str]:
    rows = conn.execute(
        select(assignments.c.rep_key, func.count())
        .where(assignments.c.assigned_at >= now - ROUND_ROBIN_WINDOW)
        .group_by(assignments.c.rep_key)
    )
    return Counter({k: n for k, n in rows})


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
    if is_postgres(conn.engine):
        query = query.with_for_update(skip_locked=True, of=ready_queue)
    return list(conn.execute(query))


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


# --------------------------------------------------------------------------- summary


def engagement_summary(
    conn: Connection,
    lead_id: int,
    model: LeadModel,
    now: datetime,
    *,
    top: int = 5,
    state: LeadState | None = None,
) -> dict[str, Any]:
    """What sales reads with the hand-off: content, seminars, pages, score breakdown.

    ``state``: the lead folded to ``now``, when the caller has it (the live path): its
    events and scores are used instead of reading and replaying the lead again."""
    if state is not None:
        newest = islice(reversed(state.events), SUMMARY_EVENTS)
        return _summary(newest, lifecycle.explanation(state, model, now), top)
    rows = conn.execute(
        select(
            events.c.type,
            events.c.name,
            events.c.properties,
            events.c.page_url,
            events.c.occurred_at,
        )
        .where(events.c.lead_id == lead_id)
        .order_by(events.c.occurred_at.desc(), events.c.id.desc())
        .limit(SUMMARY_EVENTS)
    ).all()
    return _summary(rows, lifecycle.explain(conn, lead_id, model, now), top)


def _summary(rows: Iterable[Any], explained: Mapping[str, Any], top: int) -> dict[str, Any]:
    """The summary of a lead's events (newest first) and its score explanation."""
    content: list[dict[str, Any]] = []
    webinars: list[dict[str, Any]] = []
    seminars: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    pages: Counter[str] = Counter()
    clicks = 0
    for r in rows:
        props = r.properties if isinstance(r.properties, Mapping) else {}
        at = r.occurred_at.isoformat()
        if r.type == "page":
            path = _path(r.page_url)
            if path:
                pages[path] += 1
        elif r.name == "content_download":
            content.append(
                {
                    "asset": _text(props.get("asset")),
                    "asset_type": _text(props.get("asset_type")),
                    "at": at,
                }
            )
        elif r.name == "webinar_attended":
            webinars.append({"webinar": _text(props.get("webinar") or props.get("name")), "at": at})
        elif r.name == "event_attended":
            seminars.append({"event": _text(props.get("event") or props.get("name")), "at": at})
        elif r.name in ("demo_request", "quote_request", "catalogue_request", "contact_request"):
            requests.append({"request": r.name, "at": at})
        elif r.name == "email_click":
            clicks += 1
    rules = sorted(explained["engagement"]["rules"], key=lambda c: -abs(c["points_after_decay"]))[
        : top * 2
    ]
    highlights = []
    for c in content[:top]:
        verb = CONTENT_WORDS.get(c["asset_type"] or "", "downloaded")
        highlights.append(f"{verb} '{c['asset']}'" if c["asset"] else verb)
    highlights += [f"attended the webinar '{w['webinar']}'" for w in webinars[:top] if w["webinar"]]
    highlights += [f"attended our event '{s['event']}'" for s in seminars[:top] if s["event"]]
    highlights += [f"sent a {q['request'].replace('_', ' ')}" for q in requests[:top]]
    highlights += [f"visited {p} {n} times" for p, n in pages.most_common(3) if n > 1]
    return {
        "highlights": highlights,
        "content": content[:20],
        "webinars": webinars[:20],
        "events": seminars[:20],
        "requests": requests[:20],
        "pages": [{"path": p, "views": n} for p, n in pages.most_common(top)],
        "email_clicks": clicks,
        "score": {
            "engagement": explained["engagement"]["total"],
            "fit": explained["fit"]["score"],
            "fit_grade": explained["fit"]["grade"],
            "qualification": explained["qualification"]["score"],
            "rules": [
                {
                    "rule": c["rule"],
                    "points": round(c["points_after_decay"], 2),
                    "occurrences": c["occurrences"],
                }
                for c in rules
            ],
        },
        "model_version": explained["model_version"],
    }


def _text(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) and value else None


def _path(url: str | None) -> str | None:
    if not url:
        return None
    from urllib.parse import urlsplit

    path = urlsplit(url).path.lower().rstrip("/") or "/"
    return path[:255]


# --------------------------------------------------------------------------- actions


@dataclass(slots=True)
class ActionResult:
    lead_id: int
    action: str
    stage: str
    duplicate: bool = False
    assignment_id: int | None = None
    opportunity_id: int | None = None
    qualification: float | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "action": self.action,
            "stage": self.stage,
            "duplicate": self.duplicate,
            "assignment_id": self.assignment_id,
            "opportunity_id": self.opportunity_id,
            "qualification": self.qualification,
            "detail": self.detail,
        }


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


def _seen(conn: Connection, action_id: str, lead_id: int) -> bool:
    row = conn.execute(
        select(sales_actions.c.lead_id).where(sales_actions.c.action_id == action_id)
    ).first()
    if row is None:
        return False
    if row.lead_id != lead_id:
        raise ActionRefused(f"action_id {action_id!r} was used for another lead")
    return True


def _record(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    name: str,
    now: datetime,
    *,
    action_id: str | None,
    actor: str | None,
    **extra: Any,
) -> tuple[str, bool]:
    """Record the action; returns (action_id, duplicate). Sales acted on the lead, so it
    leaves the ready queue (e.g. one fast-passed to the appointment stage that a rep
    qualified before routing reached it)."""
    require_lead(conn, lead_id)
    action_id = action_id or f"{name}:{uuid.uuid4()}"
    if _seen(conn, action_id, lead_id):
        return action_id, True
    if extra.get("reason") is not None or actor is not None:
        # Notes never keep an erased person's address.
        actor, extra["reason"] = privacy.without_suppressed(conn, actor, extra.get("reason"))
    lifecycle.record_action(
        conn,
        SalesAction(action_id=action_id, name=name, at=now, lead_id=lead_id, actor=actor, **extra),
        model,
        now,
    )
    conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == lead_id))
    return action_id, False


def accept(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """Sales accepted the hand-off and set a meeting (MQL -> appointment)."""
    require_lead(conn, lead_id)
    current = active_assignment(conn, lead_id)
    accept_to = model.spec.actions["accept"].to if "accept" in model.spec.actions else None
    duplicate = False
    if (current is None or current["status"] != "accepted") and _stage(
        conn, lead_id, model.initial_stage
    ) == accept_to:
        # Already at the appointment stage (a fast-pass): accepting closes the SLA of the
        # hand-off, or takes the lead from the queue.
        pass
    else:
        _, duplicate = _record(
            conn, model, lead_id, "accept", now, action_id=action_id, actor=actor
        )
    if duplicate:
        return ActionResult(
            lead_id,
            "accept",
            _stage(conn, lead_id, model.initial_stage),
            duplicate=True,
            assignment_id=current["id"] if current else None,
        )
    conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == lead_id))
    if current is None:
        # Taken straight from the queue: the taker's hand-off counts against their capacity.
        res = conn.execute(
            insert(assignments).values(
                lead_id=lead_id,
                active_lead_id=lead_id,
                rep_key=(actor or "unassigned")[:64],
                rule="manual",
                priority=0.0,
                assigned_at=now,
                due_at=now,
                status="accepted",
                summary=engagement_summary(conn, lead_id, model, now),
            )
        )
        assignment_id = int(res.inserted_primary_key[0])  # type: ignore[index]  # an insert has a key
        rep = actor
    else:
        assignment_id = current["id"]
        rep = current["rep_key"]
        conn.execute(
            update(assignments).where(assignments.c.id == assignment_id).values(status="accepted")
        )
    _signal(
        conn,
        "lead.accepted",
        lead_id,
        now,
        "actions.accept",
        model,
        {"rep": rep, "assignment_id": assignment_id, "actor": actor},
    )
    return ActionResult(
        lead_id, "accept", _stage(conn, lead_id, model.initial_stage), assignment_id=assignment_id
    )


def reject(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    reason: str,
    now: datetime,
    *,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """Sales rejected the hand-off with a configured reason: back to nurturing, or the dead
    end for reasons marked ``dead_end``."""
    action = reject_action(sales_spec(model), reason)
    _, duplicate = _record(
        conn, model, lead_id, action, now, action_id=action_id, actor=actor, reason=reason
    )
    current = active_assignment(conn, lead_id)
    if duplicate:
        return ActionResult(
            lead_id, "reject", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == lead_id))
    if current is not None:
        _close(conn, current["id"], "rejected", now, reason)
    _signal(
        conn,
        "lead.rejected",
        lead_id,
        now,
        f"actions.{action}",
        model,
        {
            "reason": reason,
            "dead_end": action == "disqualify",
            "rep": current["rep_key"] if current else None,
            "actor": actor,
        },
    )
    return ActionResult(
        lead_id,
        "reject",
        _stage(conn, lead_id, model.initial_stage),
        assignment_id=current["id"] if current else None,
        detail=f"reason {reason}",
    )


def not_now(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    reason: str | None = None,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """ "Not evaluating for now": appointment -> recycle A with its mail pause."""
    _, duplicate = _record(
        conn, model, lead_id, "not_now", now, action_id=action_id, actor=actor, reason=reason
    )
    if duplicate:
        return ActionResult(
            lead_id, "not_now", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    return _recycled(conn, model, lead_id, now, "not_now", reason, actor)


def _recycled(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    action: str,
    reason: str | None,
    actor: str | None,
) -> ActionResult:
    current = active_assignment(conn, lead_id)
    if current is not None:
        _close(conn, current["id"], "closed", now, action)
    stage = _stage(conn, lead_id, model.initial_stage)
    pause = conn.execute(
        select(lead_states.c.pause_until).where(lead_states.c.lead_id == lead_id)
    ).scalar_one_or_none()
    _signal(
        conn,
        "lead.recycled",
        lead_id,
        now,
        f"actions.{action}",
        model,
        {"stage": stage, "pause_until": pause, "reason": reason, "actor": actor},
    )
    return ActionResult(lead_id, action, stage, assignment_id=current["id"] if current else None)


def _check_bant(model: LeadModel, bant: Mapping[str, Any]) -> dict[str, Any]:
    levels = model.spec.qualification.levels
    clean: dict[str, Any] = {}
    for key, value in bant.items():
        if key not in ("budget", "authority", "need", "timeframe"):
            raise ValueError(f"{key}: not a BANT field (budget, authority, need, timeframe)")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"{key}: expected a level name or a number from 0 to 1")
        if isinstance(value, str) and value not in levels:
            raise ValueError(f"{key}: unknown level '{value}' (known: {', '.join(levels)})")
        if not isinstance(value, str) and not 0 <= float(value) <= 1:
            raise ValueError(f"{key}: must be between 0 and 1")
        clean[key] = value
    return clean


def qualify(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    bant: Mapping[str, Any],
    amount: float | None = None,
    currency: str = "KRW",
    expected_close: date | None = None,
    name: str | None = None,
    role: str = "contact",
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """Record sales' BANT (the qualification score follows); with an amount, qualify the
    lead to the opportunity stage (refused below ``qualification.handoff_threshold``) and
    open an opportunity owned by the lead's rep."""
    require_lead(conn, lead_id)
    clean = _check_bant(model, bant)
    if role not in BUYING_ROLES:
        raise ValueError(f"role: unknown buying role '{role}' (known: {', '.join(BUYING_ROLES)})")
    if amount is not None and not amount > 0:
        raise ValueError("amount: must be greater than 0")
    if action_id is not None and _seen(conn, action_id, lead_id):
        opp = _open_opportunity(conn, lead_id)
        return ActionResult(
            lead_id,
            "qualify",
            _stage(conn, lead_id, model.initial_stage),
            duplicate=True,
            opportunity_id=opp["id"] if opp else None,
        )
    attrs = conn.execute(select(leads.c.attributes).where(leads.c.id == lead_id)).scalar_one()
    attrs = dict(attrs or {})
    known = attrs.get("bant")
    merged = {**(known if isinstance(known, dict) else {}), **clean}
    attrs["bant"] = merged
    conn.execute(
        update(leads).where(leads.c.id == lead_id).values(attributes=attrs, updated_at=now)
    )
    if amount is None:
        lifecycle.recompute(conn, [lead_id], model, now)
        score = conn.execute(
            select(lead_states.c.qualification).where(lead_states.c.lead_id == lead_id)
        ).scalar_one_or_none()
        return ActionResult(
            lead_id,
            "qualify",
            _stage(conn, lead_id, model.initial_stage),
            qualification=score,
            detail="BANT recorded; give an amount to open an opportunity",
        )
    full = Bant(**{k: merged.get(k) for k in ("budget", "authority", "need", "timeframe")})
    _record(
        conn,
        model,
        lead_id,
        "qualify",
        now,
        action_id=action_id,
        actor=actor,
        amount=float(amount),
        bant=full,
    )
    current = active_assignment(conn, lead_id)
    lead = conn.execute(
        select(leads.c.account_id, leads.c.email).where(leads.c.id == lead_id)
    ).one()
    account_name = None
    if lead.account_id is not None:
        account_name = conn.execute(
            select(accounts.c.name).where(accounts.c.id == lead.account_id)
        ).scalar_one_or_none()
    opp_id = create_opportunity(
        conn,
        {
            "name": name or f"{account_name or lead.email or f'lead {lead_id}'}",
            "account_id": lead.account_id,
            "lead_id": lead_id,
            "amount": float(amount),
            "currency": currency,
            "expected_close": expected_close,
            "owner": current["rep_key"] if current else actor,
            "contacts": [{"lead_id": lead_id, "role": role}],
        },
        now,
        model=model,
    )
    score = conn.execute(
        select(lead_states.c.qualification).where(lead_states.c.lead_id == lead_id)
    ).scalar_one_or_none()
    return ActionResult(
        lead_id,
        "qualify",
        _stage(conn, lead_id, model.initial_stage),
        opportunity_id=opp_id,
        qualification=score,
        assignment_id=current["id"] if current else None,
    )


def _open_opportunity(conn: Connection, lead_id: int) -> dict[str, Any] | None:
    as_contact = select(opportunity_contacts.c.opportunity_id).where(
        opportunity_contacts.c.lead_id == lead_id
    )
    row = (
        conn.execute(
            select(opportunities)
            .where(
                opportunities.c.stage == "open",
                or_(opportunities.c.lead_id == lead_id, opportunities.c.id.in_(as_contact)),
            )
            .order_by((opportunities.c.lead_id == lead_id).desc(), opportunities.c.id.desc())
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def win(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    amount: float | None = None,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """The deal closed: opportunity -> won; the lead's open opportunity is won."""
    if amount is not None and not amount > 0:
        raise ValueError("amount: must be greater than 0")
    _, duplicate = _record(
        conn, model, lead_id, "win", now, action_id=action_id, actor=actor, amount=amount
    )
    if duplicate:
        return ActionResult(
            lead_id, "win", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    opp = _open_opportunity(conn, lead_id)
    values: dict[str, Any] = {"stage": "won", "closed_at": now, "updated_at": now}
    if amount is not None:
        values["amount"] = float(amount)
    if opp is not None:
        conn.execute(update(opportunities).where(opportunities.c.id == opp["id"]).values(values))
        _signal(
            conn,
            "opportunity.won",
            lead_id,
            now,
            "actions.win",
            model,
            {
                "opportunity_id": opp["id"],
                "amount": values.get("amount", opp["amount"]),
                "currency": opp["currency"],
                "actor": actor,
            },
        )
    current = active_assignment(conn, lead_id)
    if current is not None:
        _close(conn, current["id"], "closed", now, "won")
    return ActionResult(
        lead_id,
        "win",
        _stage(conn, lead_id, model.initial_stage),
        opportunity_id=opp["id"] if opp else None,
    )


def lose(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    reason: str,
    now: datetime,
    *,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """The deal was lost (a configured reason): opportunity -> recycle B."""
    check_lost_reason(sales_spec(model), reason)
    _, duplicate = _record(
        conn, model, lead_id, "lose", now, action_id=action_id, actor=actor, reason=reason
    )
    if duplicate:
        return ActionResult(
            lead_id, "lose", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    opp = _open_opportunity(conn, lead_id)
    if opp is not None:
        conn.execute(
            update(opportunities)
            .where(opportunities.c.id == opp["id"])
            .values(stage="lost", lost_reason=reason, closed_at=now, updated_at=now)
        )
        _signal(
            conn,
            "opportunity.lost",
            lead_id,
            now,
            "actions.lose",
            model,
            {"opportunity_id": opp["id"], "reason": reason, "actor": actor},
        )
    result = _recycled(conn, model, lead_id, now, "lose", reason, actor)
    result.opportunity_id = opp["id"] if opp else None
    return result


# --------------------------------------------------------------------------- SLA


@dataclass(slots=True)
class SlaReport:
    escalated: list[dict[str, Any]] = field(default_factory=list)
    rerouted: list[dict[str, Any]] = field(default_factory=list)
    routed: RouteReport | None = None


def process_sla(conn: Connection, model: LeadModel, now: datetime) -> SlaReport:
    """Escalate or re-route hand-offs not accepted in time (``sales.sla_hours`` working
    hours); both are recorded (assignment status and a signal). Re-routed leads go back to
    the queue (never to the same rep) and are routed at once if capacity allows."""
    _lock(conn, wait=True)
    spec = sales_spec(model)
    cal = WorkCalendar.from_spec(spec)
    rows = (
        conn.execute(
            select(assignments).where(
                assignments.c.status.in_(("routed", "escalated")), assignments.c.due_at <= now
            )
        )
        .mappings()
        .all()
    )
    decisions = sla_breaches(
        [
            OpenAssignment(
                id=r["id"],
                lead_id=r["lead_id"],
                rep_key=r["rep_key"],
                status=r["status"],
                assigned_at=r["assigned_at"],
                due_at=r["due_at"],
            )
            for r in rows
        ],
        now,
        calendar=cal,
        on_breach=spec.on_breach,
        escalation_hours=spec.escalation_hours,
    )
    report = SlaReport()
    for d in decisions:
        item = {"lead_id": d.lead_id, "rep": d.rep_key, "overdue_hours": d.overdue_hours}
        if d.action == "escalate":
            values: dict[str, Any] = {"status": "escalated", "escalated_at": now}
            if d.new_due_at is not None:
                values["due_at"] = d.new_due_at
            conn.execute(
                update(assignments).where(assignments.c.id == d.assignment_id).values(values)
            )
            _signal(
                conn,
                "lead.escalated",
                d.lead_id,
                now,
                "sla.escalate",
                model,
                {**item, "assignment_id": d.assignment_id, "new_due_at": d.new_due_at},
            )
            report.escalated.append(item)
        else:
            _close(conn, d.assignment_id, "rerouted", now, "sla")
            excluded = {d.rep_key}
            excluded |= {
                r.rep_key
                for r in conn.execute(
                    select(assignments.c.rep_key).where(
                        assignments.c.lead_id == d.lead_id, assignments.c.status == "rerouted"
                    )
                )
            }
            st = conn.execute(
                select(
                    lead_states.c.engagement, lead_states.c.fit, lead_states.c.qualification
                ).where(lead_states.c.lead_id == d.lead_id)
            ).first()
            conn.execute(
                insert_ignore(conn.engine, ready_queue, "lead_id").values(
                    lead_id=d.lead_id,
                    priority=priority(st.engagement, st.fit, st.qualification) if st else 0.0,
                    queued_at=now,
                    reason="rerouted",
                    exclude_reps=sorted(excluded),
                )
            )
            _signal(
                conn,
                "lead.rerouted",
                d.lead_id,
                now,
                "sla.reroute",
                model,
                {**item, "assignment_id": d.assignment_id},
            )
            report.rerouted.append(item)
    if report.rerouted:
        report.routed = route_due(conn, model, now, scan=False)
    return report


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


# --------------------------------------------------------------------------- opportunities


def create_opportunity(
    conn: Connection,
    data: Mapping[str, Any],
    now: datetime,
    *,
    model: LeadModel | None = None,
) -> int:
    """Open an opportunity (amount, currency, close date, owner, account, contacts with
    buying roles). References to unknown leads or accounts raise ``LookupError``."""
    account_id = data.get("account_id")
    if (
        account_id is not None
        and conn.execute(select(accounts.c.id).where(accounts.c.id == account_id)).first() is None
    ):
        raise LookupError(f"account_id: no account with id {account_id}")
    contacts = list(data.get("contacts") or [])
    lead_ids = {c["lead_id"] for c in contacts}
    if data.get("lead_id") is not None:
        lead_ids.add(data["lead_id"])
    for lid in sorted(lead_ids):
        require_lead(conn, lid)
    for c in contacts:
        if c["role"] not in BUYING_ROLES:
            raise ValueError(f"role: unknown buying role '{c['role']}'")
    ext = data.get("external_id")
    if (
        ext is not None
        and conn.execute(
            select(opportunities.c.id).where(opportunities.c.external_id == ext)
        ).first()
        is not None
    ):
        raise ValueError(f"external_id: an opportunity with external_id '{ext}' exists")
    res = conn.execute(
        insert(opportunities).values(
            external_id=ext,
            account_id=account_id,
            lead_id=data.get("lead_id"),
            name=privacy.without_suppressed(conn, str(data["name"]))[0][:255],
            amount=data.get("amount"),
            currency=(data.get("currency") or "KRW").upper(),
            expected_close=data.get("expected_close"),
            stage="open",
            owner=data.get("owner"),
            created_at=now,
            updated_at=now,
        )
    )
    opp_id = int(res.inserted_primary_key[0])  # type: ignore[index]  # an insert has a key
    seen: set[int] = set()
    for c in contacts:
        if c["lead_id"] in seen:
            continue
        seen.add(c["lead_id"])
        conn.execute(
            insert(opportunity_contacts).values(
                opportunity_id=opp_id, lead_id=c["lead_id"], role=c["role"]
            )
        )
    primary = data.get("lead_id") or (contacts[0]["lead_id"] if contacts else None)
    if primary is not None and model is not None:
        _signal(
            conn,
            "opportunity.created",
            primary,
            now,
            "opportunity.create",
            model,
            {
                "opportunity_id": opp_id,
                "amount": data.get("amount"),
                "currency": (data.get("currency") or "KRW").upper(),
                "owner": data.get("owner"),
                "account_id": account_id,
            },
        )
    return opp_id


def get_opportunity(conn: Connection, opp_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(opportunities).where(opportunities.c.id == opp_id)).mappings().first()
    if row is None:
        return None
    found = dict(row)
    found["contacts"] = [
        dict(c)
        for c in conn.execute(
            select(opportunity_contacts.c.lead_id, leads.c.email, opportunity_contacts.c.role)
            .select_from(
                opportunity_contacts.join(leads, leads.c.id == opportunity_contacts.c.lead_id)
            )
            .where(opportunity_contacts.c.opportunity_id == opp_id)
            .order_by(opportunity_contacts.c.id)
        ).mappings()
    ]
    return found


def list_opportunities(
    conn: Connection,
    *,
    account_id: int | None = None,
    stage: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = select(opportunities).order_by(opportunities.c.id).limit(limit).offset(offset)
    if account_id is not None:
        query = query.where(opportunities.c.account_id == account_id)
    if stage is not None:
        query = query.where(opportunities.c.stage == stage)
    return [dict(r) for r in conn.execute(query).mappings()]


__all__ = [
    "ACTIVE_STATUSES",
    "ActionRefused",
    "ActionResult",
    "RouteReport",
    "SlaReport",
    "accept",
    "create_opportunity",
    "create_rep",
    "engagement_summary",
    "enqueue",
    "lose",
    "not_now",
    "process_sla",
    "qualify",
    "reject",
    "release_departed",
    "route_due",
    "sales_stages",
    "update_rep",
    "win",
]
