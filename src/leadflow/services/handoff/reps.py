"""Sales reps: the ``sales.reps`` of the model synced into the table (once per model and
database), CRUD, and the reps loaded with their hand-off counts for routing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.rows import as_record
from leadflow.adapters.db.tables import assignments, sales_reps
from leadflow.core.config import LeadModel, SalesSpec
from leadflow.core.routing import Rep, Territory, WorkCalendar
from leadflow.services.handoff.common import sales_spec

ROUND_ROBIN_WINDOW = timedelta(days=30)


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
