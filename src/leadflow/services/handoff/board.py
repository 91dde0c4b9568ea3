"""The sales queue as a rep's day (read model of the dashboard's ``/queue``): the waiting
pool and the open hand-offs (a rep's own, or everyone's for an admin), ranked by core
:func:`leadflow.core.queue.rank` with reasons and SLA timers, filtered, sorted and paged,
each card with its dated highlights (:func:`leadflow.core.queue.highlights`), notes and
open deal, and for a rep whether they may claim it.

Only reads: the caller passes a read-only connection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, and_, func, select

from leadflow.adapters.db.tables import (
    accounts,
    assignments,
    events,
    lead_states,
    leads,
    opportunities,
    ready_queue,
    sales_reps,
)
from leadflow.core import queue as core_queue
from leadflow.core.config import LeadModel
from leadflow.core.queue import HIGH_INTENT, INTENT_WINDOW, Activity, ClaimCheck, QueueItem
from leadflow.services.handoff.common import calendar_for, sales_spec
from leadflow.services.handoff.notes import notes_for

STATUSES = ("all", "waiting", "routed", "accepted", "escalated")
SORTS = ("priority", "due", "waiting", "engagement", "name")
PAGE_SIZE = 10
LOAD_CAP = 2000
"""At most this many leads of each section are ranked (the highest priority first)."""
HIGHLIGHT_EVENTS = 1000
HIGHLIGHT_NAMES = ("content_download", "webinar_attended", "event_attended", *HIGH_INTENT)


@dataclass(frozen=True, slots=True)
class Filters:
    status: str = "all"
    overdue: bool = False
    owner: str | None = None
    sort: str = "priority"
    pool_page: int = 1
    mine_page: int = 1

    @classmethod
    def of(
        cls,
        *,
        status: str = "all",
        overdue: bool = False,
        owner: str | None = None,
        sort: str = "priority",
        pool_page: int = 1,
        mine_page: int = 1,
    ) -> Filters:
        """Unknown values fall back to the defaults (a query string is user input)."""
        return cls(
            status=status if status in STATUSES else "all",
            overdue=overdue,
            owner=owner or None,
            sort=sort if sort in SORTS else "priority",
            pool_page=max(pool_page, 1),
            mine_page=max(mine_page, 1),
        )


@dataclass(slots=True)
class Section:
    key: str
    total: int = 0
    overdue: int = 0
    shown: int = 0
    page: int = 1
    pages: int = 1
    cards: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Board:
    pool: Section
    mine: Section
    reps: list[dict[str, Any]]
    capacity: tuple[int, int] | None
    """The signed-in rep's (hand-offs today, daily capacity)."""
    truncated: bool = False


def _columns() -> tuple[Any, ...]:
    return (
        leads.c.id.label("lead_id"),
        leads.c.email,
        leads.c.first_name,
        leads.c.last_name,
        leads.c.title,
        accounts.c.name.label("account_name"),
        accounts.c.owner.label("account_owner"),
        lead_states.c.stage,
        lead_states.c.engagement,
        lead_states.c.fit,
        lead_states.c.fit_grade,
        lead_states.c.qualification,
    )


def _open_rows(conn: Connection, rep: str | None) -> list[dict[str, Any]]:
    query = (
        select(
            *_columns(),
            assignments.c.id.label("assignment_id"),
            assignments.c.rep_key,
            assignments.c.status,
            assignments.c.assigned_at,
            assignments.c.due_at,
        )
        .select_from(
            assignments.join(leads, leads.c.id == assignments.c.active_lead_id)
            .outerjoin(accounts, accounts.c.id == leads.c.account_id)
            .outerjoin(lead_states, lead_states.c.lead_id == leads.c.id)
        )
        .where(assignments.c.active_lead_id.is_not(None))
        .order_by(assignments.c.due_at, assignments.c.id)
        .limit(LOAD_CAP)
    )
    if rep is not None:
        query = query.where(assignments.c.rep_key == rep)
    return [dict(r) for r in conn.execute(query).mappings()]


def _pool_rows(conn: Connection) -> list[dict[str, Any]]:
    query = (
        select(
            *_columns(),
            ready_queue.c.queued_at,
            ready_queue.c.priority.label("queue_priority"),
            ready_queue.c.exclude_reps,
        )
        .select_from(
            ready_queue.join(leads, leads.c.id == ready_queue.c.lead_id)
            .outerjoin(accounts, accounts.c.id == leads.c.account_id)
            .outerjoin(lead_states, lead_states.c.lead_id == leads.c.id)
        )
        .order_by(ready_queue.c.priority.desc(), ready_queue.c.queued_at, ready_queue.c.lead_id)
        .limit(LOAD_CAP)
    )
    rows = []
    for r in conn.execute(query).mappings():
        row = dict(r)
        row.update(status="waiting", rep_key=None, assignment_id=None, assigned_at=None)
        row["due_at"] = None
        rows.append(row)
    return rows


def _chunks(ids: Sequence[int], size: int = 500) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


def _last_intent(
    conn: Connection, lead_ids: Sequence[int], now: datetime
) -> dict[int, tuple[str, datetime]]:
    """Each lead's newest high-intent event of the last week."""
    found: dict[int, tuple[str, datetime]] = {}
    since = now - INTENT_WINDOW
    for chunk in _chunks(sorted(set(lead_ids))):
        rows = conn.execute(
            select(events.c.lead_id, events.c.name, func.max(events.c.occurred_at))
            .where(
                events.c.lead_id.in_(chunk),
                events.c.name.in_(HIGH_INTENT),
                events.c.occurred_at >= since,
                events.c.occurred_at <= now,
            )
            .group_by(events.c.lead_id, events.c.name)
        ).all()
        for lead_id, name, at in rows:
            if lead_id not in found or at > found[lead_id][1]:
                found[lead_id] = (name, at)
    return found


def _activities(conn: Connection, lead_id: int, now: datetime) -> list[Activity]:
    rows = conn.execute(
        select(
            events.c.type,
            events.c.name,
            events.c.properties,
            events.c.page_url,
            events.c.occurred_at,
        )
        .where(
            events.c.lead_id == lead_id,
            events.c.occurred_at <= now,
            (events.c.type == "page") | events.c.name.in_(HIGHLIGHT_NAMES),
        )
        .order_by(events.c.occurred_at.desc(), events.c.id.desc())
        .limit(HIGHLIGHT_EVENTS)
    ).all()
    found = []
    for r in rows:
        props = r.properties if isinstance(r.properties, Mapping) else {}
        if r.type == "page":
            path = urlsplit(r.page_url or "").path.lower().rstrip("/") if r.page_url else ""
            found.append(
                Activity("page", r.occurred_at, (path or "/")[:255] if r.page_url else None)
            )
            continue
        subject = props.get("asset") or props.get("title") or props.get("webinar")
        subject = subject or props.get("event") or props.get("name")
        asset_type = props.get("asset_type")
        found.append(
            Activity(
                str(r.name),
                r.occurred_at,
                str(subject)[:255] if isinstance(subject, str) else None,
                asset_type if isinstance(asset_type, str) else None,
            )
        )
    return found


def _reps(conn: Connection, model: LeadModel, now: datetime) -> list[dict[str, Any]]:
    cal = calendar_for(model)
    begin, end = cal.day_bounds(cal.local_day(now))
    today: dict[str, int] = {
        key: int(n)
        for key, n in conn.execute(
            select(assignments.c.rep_key, func.count())
            .where(and_(assignments.c.assigned_at >= begin, assignments.c.assigned_at < end))
            .group_by(assignments.c.rep_key)
        ).all()
    }
    default = sales_spec(model).default_capacity
    reps = []
    for r in conn.execute(select(sales_reps).order_by(sales_reps.c.key)).mappings():
        cap = r["daily_capacity"] if r["daily_capacity"] is not None else default
        reps.append(
            {
                "key": r["key"],
                "name": r["name"],
                "active": bool(r["active"]),
                "capacity": int(cap),
                "today": int(today.get(r["key"], 0)),
            }
        )
    return reps


def _sort_key(sort: str, now: datetime) -> Any:
    if sort == "due":
        return lambda c: (c["sla"].due_at or c["queued_at"] or now, c["lead_id"])
    if sort == "waiting":
        return lambda c: (c["queued_at"] or c["assigned_at"] or now, c["lead_id"])
    if sort == "engagement":
        return lambda c: (-(c["engagement"] or 0.0), c["lead_id"])
    if sort == "name":
        return lambda c: (
            f"{c['last_name'] or ''} {c['first_name'] or ''} {c['email'] or ''}".strip().lower(),
            c["lead_id"],
        )
    return None


def _section(
    key: str,
    rows: list[dict[str, Any]],
    model: LeadModel,
    now: datetime,
    intents: Mapping[int, tuple[str, datetime]],
    filters: Filters,
    page: int,
) -> Section:
    spec = sales_spec(model)
    items = [
        QueueItem(
            lead_id=r["lead_id"],
            status=r["status"],
            stage_role=model.role_of(r["stage"]) if r["stage"] in model.spec.stages else None,
            engagement=float(r["engagement"] or 0.0),
            fit=float(r["fit"] or 0.0),
            qualification=r["qualification"],
            rep_key=r["rep_key"],
            queued_at=r.get("queued_at"),
            assigned_at=r["assigned_at"],
            due_at=r["due_at"],
            last_intent=intents.get(r["lead_id"]),
        )
        for r in rows
    ]
    by_id = {r["lead_id"]: r for r in rows}
    ranked = core_queue.rank(items, now, calendar=calendar_for(model), sla_hours=spec.sla_hours)
    cards = []
    for n, rk in enumerate(ranked, start=1):
        card = dict(by_id[rk.item.lead_id])
        card.update(rank=n, priority=rk.priority, reasons=rk.reasons, sla=rk.sla)
        cards.append(card)
    section = Section(key, total=len(cards), overdue=sum(1 for c in cards if c["sla"].overdue))
    if filters.status not in ("all", "waiting") and key == "mine":
        cards = [c for c in cards if c["status"] == filters.status]
    if filters.overdue:
        cards = [c for c in cards if c["sla"].overdue]
    if filters.owner and key == "mine":
        cards = [c for c in cards if c["rep_key"] == filters.owner]
    order = _sort_key(filters.sort, now)
    if order is not None:
        cards.sort(key=order)
    section.shown = len(cards)
    section.pages = max((len(cards) + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    section.page = min(page, section.pages)
    start = (section.page - 1) * PAGE_SIZE
    section.cards = cards[start : start + PAGE_SIZE]
    return section


def load_board(
    conn: Connection, model: LeadModel, now: datetime, *, rep: str | None, filters: Filters
) -> Board:
    """The queue page: the waiting pool and the open hand-offs (``rep``'s, or everyone's
    when ``rep`` is None), each ranked, filtered, sorted and paged; the cards shown carry
    their highlights, notes and open deal."""
    want_pool = filters.status in ("all", "waiting") and not (filters.owner and rep is None)
    want_mine = filters.status != "waiting"
    pool_rows = _pool_rows(conn) if want_pool else []
    open_rows = _open_rows(conn, rep) if want_mine else []
    intents = _last_intent(conn, [r["lead_id"] for r in pool_rows + open_rows], now)
    pool = _section("pool", pool_rows, model, now, intents, filters, filters.pool_page)
    mine = _section("mine", open_rows, model, now, intents, filters, filters.mine_page)
    reps = _reps(conn, model, now)
    capacity = None
    if rep is not None:
        me = next((r for r in reps if r["key"] == rep), None)
        capacity = (me["today"], me["capacity"]) if me else None
    shown = pool.cards + mine.cards
    _decorate(conn, model, now, shown, rep, reps)
    return Board(
        pool,
        mine,
        reps,
        capacity,
        truncated=len(pool_rows) >= LOAD_CAP or len(open_rows) >= LOAD_CAP,
    )


def _decorate(
    conn: Connection,
    model: LeadModel,
    now: datetime,
    cards: list[dict[str, Any]],
    rep: str | None,
    reps: list[dict[str, Any]],
) -> None:
    ids = [c["lead_id"] for c in cards]
    notes = notes_for(conn, ids, per_lead=3)
    opps: dict[int, tuple[float | None, str]] = {}
    for chunk in _chunks(ids):
        for lead_id, amount, currency in conn.execute(
            select(opportunities.c.lead_id, opportunities.c.amount, opportunities.c.currency)
            .where(opportunities.c.stage == "open", opportunities.c.lead_id.in_(chunk))
            .order_by(opportunities.c.id)
        ).all():
            opps[lead_id] = (amount, currency)
    bant: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        for lead_id, attrs in conn.execute(
            select(leads.c.id, leads.c.attributes).where(leads.c.id.in_(chunk))
        ).all():
            bant[lead_id] = core_queue.known_bant(attrs if isinstance(attrs, Mapping) else None)
    by_key = {r["key"]: r for r in reps}
    for c in cards:
        c["bant"] = bant.get(c["lead_id"], {})
        c["highlights"] = core_queue.highlights(_activities(conn, c["lead_id"], now), top=4)
        c["notes"] = notes.get(c["lead_id"], [])
        c["open_tasks"] = sum(1 for n in c["notes"] if n["kind"] == "task" and not n["done_at"])
        c["opportunity"] = opps.get(c["lead_id"])
        c["claim"] = None
        if rep is not None and c["status"] == "waiting":
            me = by_key.get(rep)
            owner = c.get("account_owner")
            c["claim"] = core_queue.decide_claim(
                ClaimCheck(
                    rep_key=rep,
                    rep_known=me is not None,
                    rep_active=bool(me and me["active"]),
                    capacity=me["capacity"] if me else 0,
                    today=me["today"] if me else 0,
                    waiting=True,
                    account_owner=owner,
                    owner_active=bool(owner and by_key.get(owner, {}).get("active")),
                    excluded=frozenset(str(x) for x in c.get("exclude_reps") or []),
                )
            )


def lead_brief(conn: Connection, lead_id: int) -> dict[str, Any] | None:
    """A lead's name, e-mail, stage and stored BANT (for the queue's messages)."""
    row = (
        conn.execute(
            select(
                leads.c.first_name,
                leads.c.last_name,
                leads.c.email,
                leads.c.attributes,
                lead_states.c.stage,
            )
            .select_from(leads.outerjoin(lead_states, lead_states.c.lead_id == leads.c.id))
            .where(leads.c.id == lead_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    found = dict(row)
    attrs = found.pop("attributes")
    found["bant"] = core_queue.known_bant(attrs if isinstance(attrs, Mapping) else None)
    return found


def lead_bant(conn: Connection, lead_id: int) -> dict[str, Any]:
    """The BANT stored on the lead (``attributes.bant``)."""
    brief = lead_brief(conn, lead_id)
    return brief["bant"] if brief is not None else {}
