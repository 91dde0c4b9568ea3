"""Read models of the accounts list and an account's page, and the owner filter options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.sql import ColumnElement

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.repositories.common import PAGE_SIZE, prefix
from leadflow.adapters.db.tables import accounts, events, leads


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
            or_(prefix(func.lower(accounts.c.name), text), prefix(accounts.c.domain, text))
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
