"""Read models for the dashboard pages (SQLAlchemy Core, same SQL on SQLite and PostgreSQL).

Built to stay fast at 1,000,000 leads:
- lists page by keyset (``id < cursor ORDER BY id DESC``), never OFFSET;
- filtered counts are capped (``COUNT`` over at most :data:`COUNT_CAP` + 1 rows);
- search is by prefix on indexed expressions (email, lower(first_name), lower(last_name),
  lower(account name)), as ranges so both backends use the indexes;
- a sales rep's scope is ``accounts.owner = rep`` (leads have no owner column yet, so a
  lead belongs to the owner of its account).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, and_, case, func, literal, or_, select, union
from sqlalchemy.sql import ColumnElement, Select

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.tables import (
    accounts,
    assignments,
    events,
    identities,
    lead_models,
    lead_states,
    leads,
    opportunities,
    ready_queue,
    stage_changes,
)

COUNT_CAP = 10_000
PAGE_SIZE = 50
TIMELINE_LIMIT = 200
COMMITTEE_LIMIT = 25

log = logging.getLogger(__name__)
T = TypeVar("T")


# How long a request waits for another thread's computation of the same figures.
WAIT_FOR_INFLIGHT = 300.0


class TTLCache:
    """A tiny per-process cache for aggregate figures (home tiles, reports, filter options).

    Stale-while-revalidate: an entry older than ``ttl`` is still served at once while one
    background thread recomputes it, so only the very first request for a view (or the first
    after :meth:`invalidate`, which a write the page shows calls) waits for the computation.
    A refresh that fails keeps the stale value and is retried on the next request.
    """

    def __init__(self, ttl: float = 30.0, max_items: int = 512) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._items: dict[Hashable, tuple[float, Any]] = {}
        self._refreshing: set[Hashable] = set()
        # Keys being computed for a first request: others asking wait instead of repeating it.
        self._inflight: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def invalidate(self, prefix: str) -> None:
        """Drop every entry whose key starts with ``prefix`` (after a write the page shows)."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k[:1] == (prefix,)]:
                del self._items[key]

    def _store(self, key: Hashable, value: Any) -> None:
        with self._lock:
            if key not in self._items and len(self._items) >= self.max_items:
                self._items.clear()
            self._items[key] = (time.monotonic() + self.ttl, value)

    def _refresh(self, key: Hashable, compute: Callable[[], Any]) -> None:
        try:
            self._store(key, compute())
        except Exception:  # keep serving the stale value; the next request retries
            log.exception("refreshing cached figures %r failed", key)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            hit = self._items.get(key)
            stale = hit is not None and hit[0] <= time.monotonic()
            start = stale and key not in self._refreshing
            if start:
                self._refreshing.add(key)
            waiting = self._inflight.get(key) if hit is None else None
            leader = hit is None and waiting is None
            if leader:
                self._inflight[key] = threading.Event()
        if waiting is not None:
            # Someone (a request or the start-up warmer) is computing it: use their result.
            waiting.wait(WAIT_FOR_INFLIGHT)
            with self._lock:
                done = self._items.get(key)
            return done[1] if done is not None else compute()
        if hit is None:
            try:
                value = compute()
                self._store(key, value)
            finally:
                with self._lock:
                    self._inflight.pop(key).set()
            return value
        if start:
            threading.Thread(
                target=self._refresh, args=(key, compute), name="leadflow-cache", daemon=True
            ).start()
        return hit[1]


def _prefix(column: ColumnElement[Any], text: str) -> ColumnElement[bool]:
    """``column`` starts with ``text``, as an index-friendly range."""
    upper = prefix_upper_bound(text)
    return column >= text if upper is None else and_(column >= text, column < upper)


def prefix_upper_bound(text: str) -> str | None:
    """The least string above every string that starts with ``text`` (its last character
    raised by one code point), or None when there is none (``text`` is all U+10FFFF).
    Surrogates are skipped: no backend can store or compare one."""
    stem = text.rstrip("\U0010ffff")
    if not stem:
        return None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:
        following = 0xE000
    return stem[:-1] + chr(following)


def _rep_accounts(rep: str) -> Select[Any]:
    return select(accounts.c.id).where(accounts.c.owner == rep)


def lead_scope(rep: str | None) -> list[ColumnElement[bool]]:
    if rep is None:
        return []
    return [leads.c.account_id.in_(_rep_accounts(rep))]


# ---------------------------------------------------------------- home


def activity_as_of(engine: Engine, now: datetime) -> datetime:
    """The end of the home page's 7/30-day windows: now, or the newest event when all
    events are older (an imported history or a demo world ending in the past)."""
    with read_only(engine).connect() as conn:
        newest = conn.execute(select(func.max(events.c.occurred_at))).scalar_one()
    newest = _aware(newest)
    if newest is None or newest >= now - timedelta(days=1):
        return now
    return newest


@dataclass(frozen=True, slots=True)
class HomeFigures:
    as_of: datetime
    leads: int
    accounts: int
    new_leads_30d: int
    events_7d: int
    events_30d: int
    identified_30d: int
    anonymous_30d: int
    by_source: list[tuple[str, int]]
    by_channel: list[tuple[str, int]]
    daily: list[tuple[str, int]]


def home_figures(engine: Engine, now: datetime, rep: str | None) -> HomeFigures:
    now = activity_as_of(engine, now)
    d7, d30 = now - timedelta(days=7), now - timedelta(days=30)
    scope = lead_scope(rep)
    with read_only(engine).connect() as conn:
        n_leads = conn.execute(select(func.count()).select_from(leads).where(*scope)).scalar_one()
        acct_where = [accounts.c.owner == rep] if rep is not None else []
        n_accounts = conn.execute(
            select(func.count()).select_from(accounts).where(*acct_where)
        ).scalar_one()
        new_leads = conn.execute(
            select(func.count()).select_from(leads).where(leads.c.created_at >= d30, *scope)
        ).scalar_one()
        by_source = conn.execute(
            select(leads.c.source, func.count())
            .where(*scope)
            .group_by(leads.c.source)
            .order_by(func.count().desc())
            .limit(12)
        ).all()
        if rep is None:
            ev_scope: list[ColumnElement[bool]] = []
        else:
            ev_scope = [
                events.c.lead_id.in_(select(leads.c.id).where(*scope)),
            ]
        window = select(events.c.occurred_at, events.c.channel, events.c.lead_id).where(
            events.c.occurred_at >= d30, *ev_scope
        )
        recent = window.subquery()
        e30, e7, identified = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((recent.c.occurred_at >= d7, 1), else_=0)), 0),
                func.count(func.distinct(recent.c.lead_id)),
            )
        ).one()
        if rep is None:
            anonymous = conn.execute(
                select(func.count(func.distinct(events.c.anonymous_id))).where(
                    events.c.occurred_at >= d30, events.c.lead_id.is_(None)
                )
            ).scalar_one()
        else:
            anonymous = 0  # anonymous visitors belong to no rep
        channel_counts: dict[str, int] = {}
        for channel, n in conn.execute(
            select(recent.c.channel, func.count()).group_by(recent.c.channel)
        ):
            name = channel or "direct"
            channel_counts[name] = channel_counts.get(name, 0) + int(n)
        by_channel = sorted(channel_counts.items(), key=lambda kv: -kv[1])
        day = func.date(recent.c.occurred_at)
        daily = conn.execute(select(day, func.count()).group_by(day).order_by(day)).all()
    return HomeFigures(
        as_of=now,
        leads=int(n_leads),
        accounts=int(n_accounts),
        new_leads_30d=int(new_leads),
        events_7d=int(e7),
        events_30d=int(e30),
        identified_30d=int(identified),
        anonymous_30d=int(anonymous),
        by_source=[(s or "—", int(n)) for s, n in by_source],
        by_channel=[(str(c), int(n)) for c, n in by_channel],
        daily=[(str(d), int(n)) for d, n in daily],
    )


def recent_leads(engine: Engine, rep: str | None, limit: int = 8) -> list[dict[str, Any]]:
    """Leads with the latest touchpoints (from the newest events, so it stays cheap)."""
    scope = lead_scope(rep)
    latest = (
        select(events.c.lead_id, func.max(events.c.occurred_at).label("last_seen"))
        .where(events.c.lead_id.is_not(None))
        .where(
            events.c.id > select(func.coalesce(func.max(events.c.id), 0) - 5000).scalar_subquery()
        )
        .group_by(events.c.lead_id)
        .subquery()
    )
    if scope:
        latest_q = select(latest).where(latest.c.lead_id.in_(select(leads.c.id).where(*scope)))
        latest = latest_q.subquery()
    with read_only(engine).connect() as conn:
        rows = conn.execute(
            select(*_LEAD_COLUMNS, latest.c.last_seen)
            .select_from(latest.join(leads, leads.c.id == latest.c.lead_id))
            .outerjoin(accounts, accounts.c.id == leads.c.account_id)
            .order_by(latest.c.last_seen.desc())
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]


# ---------------------------------------------------------------- leads list

_LEAD_COLUMNS = (
    leads.c.id,
    leads.c.email,
    leads.c.first_name,
    leads.c.last_name,
    leads.c.title,
    leads.c.source,
    leads.c.created_at,
    leads.c.account_id,
    accounts.c.name.label("account_name"),
    accounts.c.owner.label("owner"),
)


@dataclass(frozen=True, slots=True)
class LeadFilters:
    q: str = ""
    source: str = ""
    account_id: int | None = None
    owner: str = ""

    @property
    def active(self) -> bool:
        return bool(self.q or self.source or self.account_id or self.owner)


@dataclass(frozen=True, slots=True)
class LeadPage:
    rows: list[dict[str, Any]]
    next_cursor: int | None
    count: int
    count_capped: bool


def _search_branches(q: str) -> list[ColumnElement[bool]]:
    companies = select(accounts.c.id).where(_prefix(func.lower(accounts.c.name), q))
    return [
        _prefix(leads.c.email, q),
        _prefix(func.lower(leads.c.first_name), q),
        _prefix(func.lower(leads.c.last_name), q),
        leads.c.account_id.in_(companies),
    ]


def _search(q: str, dense: bool) -> ColumnElement[bool]:
    """Prefix search on email, first name, last name and company name.

    A *dense* term (more than COUNT_CAP candidate rows) is an OR, so walking the newest
    leads finds a page at once; a sparse one is a union of index range scans, so a term
    that matches few rows (or none) never walks the whole table."""
    q = q.strip().lower()
    if "@" in q:
        return _prefix(leads.c.email, q)
    parts = q.split()
    if len(parts) >= 2:
        return and_(
            _prefix(func.lower(leads.c.first_name), parts[0]),
            _prefix(func.lower(leads.c.last_name), " ".join(parts[1:])),
        )
    branches = _search_branches(q)
    if dense:
        return or_(*branches)
    return leads.c.id.in_(union(*(select(leads.c.id).where(b) for b in branches)))


def _is_dense(engine: Engine, q: str) -> bool:
    """Whether the search term's candidates exceed COUNT_CAP (each branch counted on its
    own index, at most COUNT_CAP + 1 entries each)."""
    q = q.strip().lower()
    if "@" in q or len(q.split()) != 1:
        return False
    total = 0
    with read_only(engine).connect() as conn:
        for branch in _search_branches(q):
            limited = select(literal(1)).select_from(leads).where(branch).limit(COUNT_CAP + 1)
            total += conn.execute(select(func.count()).select_from(limited.subquery())).scalar_one()
            if total > COUNT_CAP:
                return True
    return False


def _lead_conditions(
    filters: LeadFilters, rep: str | None, dense: bool = False
) -> list[ColumnElement[bool]]:
    where = lead_scope(rep)
    if filters.q.strip():
        where.append(_search(filters.q, dense))
    if filters.source:
        where.append(leads.c.source == filters.source)
    if filters.account_id is not None:
        where.append(leads.c.account_id == filters.account_id)
    if filters.owner:
        where.append(leads.c.account_id.in_(_rep_accounts(filters.owner)))
    return where


def list_leads(
    engine: Engine,
    filters: LeadFilters,
    *,
    rep: str | None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
) -> LeadPage:
    dense = bool(filters.q.strip()) and _is_dense(engine, filters.q)
    where = _lead_conditions(filters, rep, dense)
    page_where = [*where, leads.c.id < after] if after is not None else where
    with read_only(engine).connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(*_LEAD_COLUMNS)
                .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
                .where(*page_where)
                .order_by(leads.c.id.desc())
                .limit(limit + 1)
            ).mappings()
        ]
        if not where:
            count = conn.execute(select(func.count()).select_from(leads)).scalar_one()
            capped = False
        else:
            limited = select(literal(1)).select_from(leads).where(*where).limit(COUNT_CAP + 1)
            count = conn.execute(select(func.count()).select_from(limited.subquery())).scalar_one()
            capped = count > COUNT_CAP
            count = min(count, COUNT_CAP)
    next_cursor = int(rows[limit - 1]["id"]) if len(rows) > limit else None
    return LeadPage(
        rows=rows[:limit], next_cursor=next_cursor, count=int(count), count_capped=capped
    )


def lead_sources(engine: Engine) -> list[str]:
    with read_only(engine).connect() as conn:
        return [
            s
            for (s,) in conn.execute(
                select(leads.c.source).where(leads.c.source.is_not(None)).distinct().limit(200)
            )
        ]


def account_owners(engine: Engine) -> list[str]:
    with read_only(engine).connect() as conn:
        return sorted(
            o
            for (o,) in conn.execute(
                select(accounts.c.owner).where(accounts.c.owner.is_not(None)).distinct().limit(500)
            )
        )


def account_name(engine: Engine, account_id: int) -> str | None:
    with read_only(engine).connect() as conn:
        found = conn.execute(select(accounts.c.name).where(accounts.c.id == account_id)).first()
    return found[0] if found else None


# ---------------------------------------------------------------- lead page


@dataclass(frozen=True, slots=True)
class LeadDetail:
    lead: dict[str, Any]
    account: dict[str, Any] | None
    committee: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    identities: list[dict[str, Any]]
    touch_count: int
    first_seen: datetime | None
    last_seen: datetime | None


def lead_owner(engine: Engine, lead_id: int) -> tuple[bool, str | None]:
    """(exists, owner) for the 403 check before anything else is read."""
    with read_only(engine).connect() as conn:
        row = conn.execute(
            select(leads.c.id, accounts.c.owner)
            .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
            .where(leads.c.id == lead_id)
        ).first()
    return (row is not None, row.owner if row is not None else None)


def lead_detail(engine: Engine, lead_id: int) -> LeadDetail | None:
    with read_only(engine).connect() as conn:
        lead = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().first()
        if lead is None:
            return None
        account = None
        committee: list[dict[str, Any]] = []
        if lead["account_id"] is not None:
            account = (
                conn.execute(select(accounts).where(accounts.c.id == lead["account_id"]))
                .mappings()
                .first()
            )
            committee = [
                dict(r)
                for r in conn.execute(
                    select(
                        leads.c.id,
                        leads.c.first_name,
                        leads.c.last_name,
                        leads.c.title,
                        leads.c.email,
                    )
                    .where(leads.c.account_id == lead["account_id"], leads.c.id != lead_id)
                    .order_by(leads.c.id)
                    .limit(COMMITTEE_LIMIT)
                ).mappings()
            ]
        timeline = [
            dict(r)
            for r in conn.execute(
                select(
                    events.c.id,
                    events.c.type,
                    events.c.name,
                    events.c.page_url,
                    events.c.properties,
                    events.c.channel,
                    events.c.utm_campaign,
                    events.c.occurred_at,
                )
                .where(events.c.lead_id == lead_id)
                .order_by(events.c.occurred_at.desc(), events.c.id.desc())
                .limit(TIMELINE_LIMIT)
            ).mappings()
        ]
        count, first, last = conn.execute(
            select(
                func.count(), func.min(events.c.occurred_at), func.max(events.c.occurred_at)
            ).where(events.c.lead_id == lead_id)
        ).one()
        ids = [
            dict(r)
            for r in conn.execute(
                select(identities.c.kind, identities.c.value, identities.c.created_at)
                .where(identities.c.lead_id == lead_id)
                .order_by(identities.c.created_at)
                .limit(50)
            ).mappings()
        ]
    return LeadDetail(
        lead=dict(lead),
        account=dict(account) if account else None,
        committee=committee,
        timeline=timeline,
        identities=ids,
        touch_count=int(count),
        first_seen=_aware(first),
        last_seen=_aware(last),
    )


def _aware(value: Any) -> datetime | None:
    """Aggregates (min/max) bypass the column type on SQLite: re-apply UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


# ---------------------------------------------------------------- accounts


@dataclass(frozen=True, slots=True)
class AccountPage:
    rows: list[dict[str, Any]]
    next_cursor: int | None


def list_accounts(
    engine: Engine,
    *,
    q: str,
    owner: str,
    rep: str | None,
    after: int | None,
    limit: int = PAGE_SIZE,
) -> AccountPage:
    where: list[ColumnElement[bool]] = []
    if rep is not None:
        where.append(accounts.c.owner == rep)
    if owner:
        where.append(accounts.c.owner == owner)
    text = q.strip().lower()
    if text:
        where.append(
            or_(_prefix(func.lower(accounts.c.name), text), _prefix(accounts.c.domain, text))
        )
    if after is not None:
        where.append(accounts.c.id < after)
    people = (
        select(func.count())
        .select_from(leads)
        .where(leads.c.account_id == accounts.c.id)
        .scalar_subquery()
    )
    with read_only(engine).connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                select(
                    accounts.c.id,
                    accounts.c.name,
                    accounts.c.domain,
                    accounts.c.industry,
                    accounts.c.employee_count,
                    accounts.c.country,
                    accounts.c.owner,
                    accounts.c.is_target,
                    people.label("people"),
                )
                .where(*where)
                .order_by(accounts.c.id.desc())
                .limit(limit + 1)
            ).mappings()
        ]
    next_cursor = int(rows[limit - 1]["id"]) if len(rows) > limit else None
    return AccountPage(rows=rows[:limit], next_cursor=next_cursor)


@dataclass(frozen=True, slots=True)
class AccountDetail:
    account: dict[str, Any]
    people: list[dict[str, Any]]
    people_count: int
    activity: list[dict[str, Any]]


def account_detail(engine: Engine, account_id: int) -> AccountDetail | None:
    with read_only(engine).connect() as conn:
        account = (
            conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().first()
        )
        if account is None:
            return None
        people = [
            dict(r)
            for r in conn.execute(
                select(
                    leads.c.id,
                    leads.c.first_name,
                    leads.c.last_name,
                    leads.c.title,
                    leads.c.email,
                    leads.c.source,
                    leads.c.created_at,
                )
                .where(leads.c.account_id == account_id)
                .order_by(leads.c.id)
                .limit(100)
            ).mappings()
        ]
        people_count = conn.execute(
            select(func.count()).select_from(leads).where(leads.c.account_id == account_id)
        ).scalar_one()
        ids = [p["id"] for p in people]
        activity: list[dict[str, Any]] = []
        if ids:
            activity = [
                dict(r)
                for r in conn.execute(
                    select(
                        events.c.type,
                        events.c.name,
                        events.c.page_url,
                        events.c.properties,
                        events.c.channel,
                        events.c.occurred_at,
                        events.c.lead_id,
                        leads.c.first_name,
                        leads.c.last_name,
                        leads.c.email,
                    )
                    .join(leads, leads.c.id == events.c.lead_id)
                    .where(events.c.lead_id.in_(ids))
                    .order_by(events.c.occurred_at.desc())
                    .limit(30)
                ).mappings()
            ]
    return AccountDetail(
        account=dict(account), people=people, people_count=int(people_count), activity=activity
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


# ---------------------------------------------------------------- funnel / model


def newest_stage_change(engine: Engine) -> datetime | None:
    with read_only(engine).connect() as conn:
        return _aware(conn.execute(select(func.max(stage_changes.c.at))).scalar_one())


def lead_stage(engine: Engine, lead_id: int) -> dict[str, Any] | None:
    with read_only(engine).connect() as conn:
        row = conn.execute(
            select(lead_states.c.stage, lead_states.c.stage_since, lead_states.c.pause_until).where(
                lead_states.c.lead_id == lead_id
            )
        ).first()
    return dict(row._mapping) if row is not None else None


def active_model_row(engine: Engine) -> dict[str, Any] | None:
    with read_only(engine).connect() as conn:
        row = conn.execute(
            select(
                lead_models.c.version,
                lead_models.c.content_hash,
                lead_models.c.source,
                lead_models.c.activated_at,
            ).where(lead_models.c.active)
        ).first()
    return dict(row._mapping) if row is not None else None
