"""Read models of the leads list and a lead's page (keyset pages, capped counts, prefix
search: see :mod:`leadflow.adapters.db.repositories.common`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, literal, or_, select, union
from sqlalchemy.sql import ColumnElement

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.repositories.common import (
    COUNT_CAP,
    LEAD_COLUMNS,
    PAGE_SIZE,
    aware,
    lead_scope,
    prefix,
    rep_accounts,
)
from leadflow.adapters.db.tables import accounts, events, identities, lead_states, leads

TIMELINE_LIMIT = 200
COMMITTEE_LIMIT = 25

# ---------------------------------------------------------------- leads list


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
    companies = select(accounts.c.id).where(prefix(func.lower(accounts.c.name), q))
    return [
        prefix(leads.c.email, q),
        prefix(func.lower(leads.c.first_name), q),
        prefix(func.lower(leads.c.last_name), q),
        leads.c.account_id.in_(companies),
    ]


def _search(q: str, dense: bool) -> ColumnElement[bool]:
    """Prefix search on email, first name, last name and company name.

    A *dense* term (more than COUNT_CAP candidate rows) is an OR, so walking the newest
    leads finds a page at once; a sparse one is a union of index range scans, so a term
    that matches few rows (or none) never walks the whole table."""
    q = q.strip().lower()
    if "@" in q:
        return prefix(leads.c.email, q)
    parts = q.split()
    if len(parts) >= 2:
        return and_(
            prefix(func.lower(leads.c.first_name), parts[0]),
            prefix(func.lower(leads.c.last_name), " ".join(parts[1:])),
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
        where.append(leads.c.account_id.in_(rep_accounts(filters.owner)))
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
                select(*LEAD_COLUMNS)
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
        first_seen=aware(first),
        last_seen=aware(last),
    )


def lead_stage(engine: Engine, lead_id: int) -> dict[str, Any] | None:
    with read_only(engine).connect() as conn:
        row = conn.execute(
            select(lead_states.c.stage, lead_states.c.stage_since, lead_states.c.pause_until).where(
                lead_states.c.lead_id == lead_id
            )
        ).first()
    return dict(row._mapping) if row is not None else None
