"""Read models of the home page and the funnel pages' freshness stamp."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, func, select
from sqlalchemy.sql import ColumnElement

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.repositories.common import LEAD_COLUMNS, aware, lead_scope
from leadflow.adapters.db.tables import accounts, events, leads, stage_changes

# ---------------------------------------------------------------- home


def activity_as_of(engine: Engine, now: datetime) -> datetime:
    """The end of the home page's 7/30-day windows: now, or the newest event when all
    events are older (an imported history or a demo world ending in the past)."""
    with read_only(engine).connect() as conn:
        newest = conn.execute(select(func.max(events.c.occurred_at))).scalar_one()
    newest = aware(newest)
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
            select(*LEAD_COLUMNS, latest.c.last_seen)
            .select_from(latest.join(leads, leads.c.id == latest.c.lead_id))
            .outerjoin(accounts, accounts.c.id == leads.c.account_id)
            .order_by(latest.c.last_seen.desc())
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]


# ---------------------------------------------------------------- funnel


def newest_stage_change(engine: Engine) -> datetime | None:
    with read_only(engine).connect() as conn:
        return aware(conn.execute(select(func.max(stage_changes.c.at))).scalar_one())
