"""The deal list: one SQL query (SQLAlchemy Core) from a
:class:`~leadflow.core.deal_lists.DealQuery`, with the contact and account of each deal.

``status`` with ``as_of`` reads the deal's status at that instant exactly as the deal funnel
does (:func:`leadflow.core.deals.stage_at`), so a funnel cell and its list agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.repositories.common import COUNT_CAP, aware
from leadflow.adapters.db.tables import accounts, leads, opportunities
from leadflow.core.deal_lists import DealQuery
from leadflow.core.deals import LOST, OPEN, WON

deal_account = accounts.alias("deal_account")


@dataclass(frozen=True, slots=True)
class DealPage:
    rows: list[dict[str, Any]]
    query: DealQuery
    has_previous: bool
    has_next: bool
    count: int
    count_capped: bool


def _closed_before(moment: Any) -> ColumnElement[bool]:
    o = opportunities.c
    return and_(o.stage.in_((WON, LOST)), o.closed_at.is_not(None), o.closed_at < moment)


def conditions(query: DealQuery) -> list[ColumnElement[bool]]:
    o = opportunities.c
    where: list[ColumnElement[bool]] = []
    if query.statuses:
        if query.as_of is None:
            where.append(o.stage.in_(query.statuses))
        else:
            status = case((_closed_before(query.as_of), o.stage), else_=literal(OPEN))
            where += [o.created_at < query.as_of, status.in_(query.statuses)]
    elif query.as_of is not None:
        where.append(o.created_at < query.as_of)
    if query.created_after is not None:
        where.append(o.created_at >= query.created_after)
    if query.created_before is not None:
        where.append(o.created_at < query.created_before)
    if query.closed_after is not None or query.closed_before is not None:
        where += [o.stage.in_((WON, LOST)), o.closed_at.is_not(None)]
        if query.closed_after is not None:
            where.append(o.closed_at >= query.closed_after)
        if query.closed_before is not None:
            where.append(o.closed_at < query.closed_before)
    if query.owner:
        where.append(o.owner == query.owner)
    if query.currency:
        where.append(o.currency == query.currency)
    if query.account_id is not None:
        where.append(func.coalesce(o.account_id, leads.c.account_id) == query.account_id)
    if query.lead_id is not None:
        where.append(o.lead_id == query.lead_id)
    return where


def _from() -> Any:
    return opportunities.outerjoin(leads, leads.c.id == opportunities.c.lead_id).outerjoin(
        deal_account,
        deal_account.c.id == func.coalesce(opportunities.c.account_id, leads.c.account_id),
    )


def _order(query: DealQuery) -> list[Any]:
    column = {
        "amount": opportunities.c.amount,
        "created_at": opportunities.c.created_at,
        "closed_at": opportunities.c.closed_at,
        "expected_close": opportunities.c.expected_close,
        "name": func.lower(opportunities.c.name),
        "id": opportunities.c.id,
    }[query.sort]
    tie = opportunities.c.id.desc() if query.descending else opportunities.c.id.asc()
    key = column.desc() if query.descending else column.asc()
    return [tie] if query.sort == "id" else [key.nulls_last(), tie]


def list_page(engine: Engine, query: DealQuery) -> DealPage:
    """One page of deals in the query's order, and how many match (capped)."""
    where = conditions(query)
    stmt = (
        select(
            opportunities.c.id,
            opportunities.c.name,
            opportunities.c.amount,
            opportunities.c.currency,
            opportunities.c.stage,
            opportunities.c.owner,
            opportunities.c.lost_reason,
            opportunities.c.expected_close,
            opportunities.c.created_at,
            opportunities.c.closed_at,
            opportunities.c.lead_id,
            leads.c.first_name,
            leads.c.last_name,
            leads.c.email,
            deal_account.c.id.label("account_id"),
            deal_account.c.name.label("account_name"),
        )
        .select_from(_from())
        .where(*where)
        .order_by(*_order(query))
        .offset(query.offset)
        .limit(query.size + 1)
    )
    with read_only(engine).connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
        limited = (
            select(literal(1)).select_from(_from()).where(*where).limit(COUNT_CAP + 1).subquery()
        )
        found = int(conn.execute(select(func.count()).select_from(limited)).scalar_one())
    for row in rows:
        row["created_at"], row["closed_at"] = aware(row["created_at"]), aware(row["closed_at"])
    return DealPage(
        rows=rows[: query.size],
        query=query,
        has_previous=query.page > 1,
        has_next=len(rows) > query.size,
        count=min(found, COUNT_CAP),
        count_capped=found > COUNT_CAP,
    )


def currencies(engine: Engine) -> list[str]:
    with read_only(engine).connect() as conn:
        return [
            c
            for (c,) in conn.execute(
                select(opportunities.c.currency).distinct().order_by(opportunities.c.currency)
            )
        ]


def owners(engine: Engine) -> list[str]:
    with read_only(engine).connect() as conn:
        return [
            o
            for (o,) in conn.execute(
                select(opportunities.c.owner)
                .where(opportunities.c.owner.is_not(None))
                .distinct()
                .order_by(opportunities.c.owner)
                .limit(500)
            )
        ]
