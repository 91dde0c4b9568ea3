"""Generic due work: rows in ``due_work`` with a due time, claimed by workers.

- :func:`schedule` is idempotent by ``key`` (insert-ignore), inside the caller's
  transaction, so the decision and its follow-up commit together.
- :func:`claim` leases due rows to one worker through the claim mechanism every worker
  uses (:mod:`leadflow.adapters.db.claims`: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
  write lock on SQLite; two workers never take the same row). A claim is a lease: a row
  whose ``lease_until`` has passed (its worker crashed) is claimable again.
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

from leadflow.adapters.db import claims
from leadflow.adapters.db.engine import insert_ignore
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


# Pending and due, or claimed by a worker whose lease has passed (it crashed); the lease
# itself is checked by the claim mechanism.
WORK = claims.WorkTable(
    due_work,
    ready=and_(
        due_work.c.kind.in_(bindparam("kinds", expanding=True)),
        or_(
            and_(due_work.c.status == "pending", due_work.c.due_at <= bindparam(claims.NOW)),
            due_work.c.status == "claimed",
        ),
    ),
    order_by=(due_work.c.due_at, due_work.c.id),
    on_claim={"status": "claimed"},
)
_CLAIMED = (
    select(due_work)
    .where(due_work.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(due_work.c.due_at, due_work.c.id)
)


def claim(
    engine: Engine,
    worker_id: str,
    now: datetime,
    kinds: Iterable[str],
    limit: int = 100,
    lease_seconds: float = 300,
) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due rows of ``kinds`` to ``worker_id``, oldest due first
    (:mod:`leadflow.adapters.db.claims`)."""
    until = now + timedelta(seconds=lease_seconds)
    with engine.begin() as conn:
        ids = claims.claim_in(conn, WORK, worker_id, now, until, limit, {"kinds": list(kinds)})
        if not ids:
            return []
        return [dict(r) for r in conn.execute(_CLAIMED, {"ids": ids}).mappings()]


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
