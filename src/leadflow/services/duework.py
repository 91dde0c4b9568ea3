"""Generic due work: rows in ``due_work`` with a due time, claimed by workers.

- :func:`schedule` is idempotent by ``key`` (insert-ignore), inside the caller's
  transaction, so the decision and its follow-up commit together.
- :func:`claim` leases due rows to one worker: on PostgreSQL the candidates are selected
  ``FOR UPDATE SKIP LOCKED`` (two workers never wait for or take the same row); on SQLite
  the claim is one write transaction (``BEGIN IMMEDIATE``). A claim is a lease: a row whose
  ``lease_until`` has passed (its worker crashed) is claimable again.
- :func:`complete`, :func:`retry`, :func:`defer` and :func:`cancel` finish or move a row,
  inside the caller's transaction (normally the one that did the work); :func:`retry`
  waits as the one retry policy (:mod:`leadflow.core.retry`) says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, or_, select, update
from sqlalchemy.sql.dml import Insert

from leadflow.adapters.db.engine import insert_ignore, is_postgres
from leadflow.adapters.db.tables import due_work
from leadflow.core.retry import DUE_WORK_RETRY, RetryPolicy

_INSERT: dict[str, Insert] = {}
_COMPLETE = (
    update(due_work)
    .where(due_work.c.id == bindparam("work_id"))
    .values(status="done", done_at=bindparam("at"), lease_until=None)
)


def _insert(conn: Connection) -> Insert:
    """The dialect's INSERT ... ON CONFLICT (key) DO NOTHING, built once."""
    name = conn.engine.dialect.name
    stmt = _INSERT.get(name)
    if stmt is None:
        stmt = _INSERT[name] = insert_ignore(conn.engine, due_work, "key")
    return stmt


def schedule(
    conn: Connection,
    key: str,
    kind: str,
    due_at: datetime,
    ref_id: int | None = None,
    data: Mapping[str, Any] | None = None,
    *,
    created_at: datetime | None = None,
) -> bool:
    """Schedule work once per ``key``; returns False when the key already exists."""
    result = conn.execute(
        _insert(conn),
        {
            "key": key,
            "kind": kind,
            "ref_id": ref_id,
            "data": dict(data or {}),
            "due_at": due_at,
            "status": "pending",
            "attempts": 0,
            "created_at": created_at or due_at,
        },
    )
    return bool(result.rowcount)


def schedule_many(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Schedule several rows (``key``, ``kind``, ``due_at``, optional ``ref_id``,
    ``data``) at once; existing keys are left alone. Returns how many were new."""
    values = [
        {
            "key": r["key"],
            "kind": r["kind"],
            "ref_id": r.get("ref_id"),
            "data": dict(r.get("data") or {}),
            "due_at": r["due_at"],
            "status": "pending",
            "attempts": 0,
            "created_at": r.get("created_at", r["due_at"]),
        }
        for r in rows
    ]
    if not values:
        return 0
    result = conn.execute(_insert(conn), values)
    return max(int(result.rowcount or 0), 0)


def _claimable(now: datetime, kinds: Iterable[str]) -> Any:
    return and_(
        due_work.c.kind.in_(list(kinds)),
        or_(
            and_(due_work.c.status == "pending", due_work.c.due_at <= now),
            and_(due_work.c.status == "claimed", due_work.c.lease_until < now),
        ),
    )


def claim(
    engine: Engine,
    worker_id: str,
    now: datetime,
    kinds: Iterable[str],
    limit: int = 100,
    lease_seconds: float = 300,
) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due rows of ``kinds`` to ``worker_id``, oldest due first."""
    kinds = list(kinds)
    lease_until = now + timedelta(seconds=lease_seconds)
    with engine.begin() as conn:
        query = (
            select(due_work.c.id)
            .where(_claimable(now, kinds))
            .order_by(due_work.c.due_at, due_work.c.id)
            .limit(limit)
        )
        if is_postgres(engine):
            query = query.with_for_update(skip_locked=True)
        ids = list(conn.execute(query).scalars())
        if not ids:
            return []
        conn.execute(
            update(due_work)
            .where(due_work.c.id.in_(ids))
            .values(status="claimed", claimed_by=worker_id, lease_until=lease_until)
        )
        rows = conn.execute(
            select(due_work)
            .where(due_work.c.id.in_(ids))
            .order_by(due_work.c.due_at, due_work.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def complete(conn: Connection, work_id: int, now: datetime) -> None:
    conn.execute(_COMPLETE, {"work_id": work_id, "at": now})


def retry(
    conn: Connection,
    work_id: int,
    failed_at: datetime,
    error: str | None,
    *,
    policy: RetryPolicy = DUE_WORK_RETRY,
) -> str:
    """Count a failed attempt and run again when ``policy`` says (by default
    :data:`~leadflow.core.retry.DUE_WORK_RETRY`: 1 minute doubling up to an hour); once it
    gives up the row is ``failed`` (kept, with the error, for an operator). Returns the new
    status."""
    attempts = conn.execute(
        select(due_work.c.attempts).where(due_work.c.id == work_id)
    ).scalar_one_or_none()
    if attempts is None:
        return "missing"
    at = policy.next_at(attempts + 1, failed_at)
    status = "failed" if at is None else "pending"
    conn.execute(
        update(due_work)
        .where(due_work.c.id == work_id)
        .values(
            status=status,
            due_at=at or failed_at,
            attempts=attempts + 1,
            last_error=(error or "")[:4000] or None,
            claimed_by=None,
            lease_until=None,
        )
    )
    return status


def defer(conn: Connection, work_id: int, at: datetime) -> None:
    """Run the row again at ``at`` without counting a failure (e.g. a frequency cap)."""
    conn.execute(
        update(due_work)
        .where(due_work.c.id == work_id)
        .values(status="pending", due_at=at, claimed_by=None, lease_until=None)
    )


def cancel(conn: Connection, work_id: int, now: datetime) -> None:
    conn.execute(
        update(due_work)
        .where(due_work.c.id == work_id)
        .values(status="cancelled", done_at=now, lease_until=None)
    )
