"""Claims: leasing due rows of a work table to one worker, the same way for every kind of
background work (e-mail sends, webhook deliveries, due work).

A work table has ``id``, ``claimed_by`` and ``lease_until`` columns. A row is free when it
is *ready* (the table's own condition: status, due time, kind) and nobody holds it
(``lease_until`` is null or has passed: a lease "until t" is over at t, so a worker that
died gives its rows back by itself). :func:`claim` takes up to N free rows, oldest first,
for worker W until a lease end; the claim is identified by (``claimed_by``,
``lease_until``), and every later write of the worker checks both (:func:`held`), so a
claim that ran out and went to another worker is never written over. :func:`release`
gives rows back, :func:`extend` moves the lease of rows still held.

The dialect differences live here and nowhere else:

- PostgreSQL: the candidates are selected ``FOR UPDATE SKIP LOCKED`` (:func:`lock_free`):
  two workers never wait for, or take, the same row; the UPDATE re-checks that each row is
  still free (compare-and-set), so a row whose lock was released by a committed claim just
  before is not taken twice.
- SQLite: every writing transaction begins ``IMMEDIATE`` (``adapters.db.engine``), so the
  select and the update run under the database's write lock: claims are serialised.

The ready queue of the sales hand-off is not leased (a routed lead's row is deleted in the
router's transaction): it uses :func:`lock_free` alone.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    or_,
    select,
    update,
)

from leadflow.adapters.db.engine import is_postgres

# Bound parameter names used by the statements of this module and by :func:`held`.
WORKER = "claim_worker"
UNTIL = "claim_until"
NOW = "claim_now"


_NEW_UNTIL: BindParameter[Any] = bindparam("claim_new_until")


def _is_until(value: Any) -> bool:
    return getattr(value, "key", None) == UNTIL


@dataclass(frozen=True)
class WorkTable:
    """How a table's rows are claimed.

    ``ready``: rows that may run now, leases aside (may use ``bindparam(NOW)`` and
    parameters the caller passes to :func:`claim`). ``order_by``: the order rows are taken
    in. ``on_claim``: values a claim (and an :func:`extend`) sets besides the lease; a value
    may be ``bindparam(UNTIL)`` (e.g. a due time moved to the lease end, which hides the row
    from readers of the due time while it is held). Build one per table, once (at import):
    its statements are compiled with it.
    """

    table: Table
    ready: ColumnElement[bool]
    order_by: Sequence[ColumnElement[Any]]
    on_claim: Mapping[str, Any] = field(default_factory=dict)
    _select: Select[Any] = field(init=False, repr=False, compare=False)
    _claim: Update = field(init=False, repr=False, compare=False)
    _extend: Update = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = self.table.c
        for name in ("id", "claimed_by", "lease_until"):
            if name not in c:
                raise ValueError(f"{self.table.name} has no {name} column to claim rows by")
        lease = c.lease_until
        free = and_(self.ready, or_(lease.is_(None), lease <= bindparam(NOW)))
        ids = c.id.in_(bindparam("claim_ids", expanding=True))
        select_free = select(c.id).where(free).order_by(*self.order_by)
        extended = {k: _NEW_UNTIL if _is_until(v) else v for k, v in self.on_claim.items()}
        setters = {
            "_select": select_free.limit(bindparam("claim_limit")),
            "_claim": update(self.table)
            .where(ids, free)
            .values(claimed_by=bindparam(WORKER), lease_until=bindparam(UNTIL), **self.on_claim)
            .returning(c.id),
            "_extend": update(self.table)
            .where(ids, held(self.table))
            .values(lease_until=_NEW_UNTIL, **extended)
            .returning(c.id),
        }
        for name, value in setters.items():
            object.__setattr__(self, name, value)


def worker_name() -> str:
    """A name for the calling worker: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:64]


def held(table: Table) -> ColumnElement[bool]:
    """Rows still held by the claim bound as ``WORKER`` / ``UNTIL`` (pass :func:`mine`)."""
    return and_(table.c.claimed_by == bindparam(WORKER), table.c.lease_until == bindparam(UNTIL))


def mine(worker: str, until: datetime) -> dict[str, Any]:
    """The parameters of :func:`held` for one claim."""
    return {WORKER: worker[:64], UNTIL: until}


def lock_free(conn: Connection, query: Select[Any], *, of: Table | None = None) -> Select[Any]:
    """``query`` skipping rows another transaction holds: ``FOR UPDATE SKIP LOCKED`` (of
    ``of``) on PostgreSQL; on SQLite the query as is (the writing transaction holds the
    database's write lock, so nobody else holds a row)."""
    if not is_postgres(conn.engine):
        return query
    return query.with_for_update(skip_locked=True, of=of)


def claim_in(
    conn: Connection,
    work: WorkTable,
    worker: str,
    now: datetime,
    until: datetime,
    limit: int,
    params: Mapping[str, Any] | None = None,
) -> list[int]:
    """Inside the caller's writing transaction: claim up to ``limit`` free rows of ``work``
    for ``worker`` until ``until``; their ids in ``order_by`` order. ``params`` binds the
    table's own parameters of ``ready``."""
    query = lock_free(conn, work._select)
    bound = {**(params or {}), NOW: now}
    ids = list(conn.execute(query, {**bound, "claim_limit": limit}).scalars())
    if not ids:
        return []
    taken = set(
        conn.execute(work._claim, {**bound, **mine(worker, until), "claim_ids": ids}).scalars()
    )
    return [i for i in ids if i in taken]


def claim(
    engine: Engine,
    work: WorkTable,
    worker: str,
    now: datetime,
    until: datetime,
    limit: int,
    params: Mapping[str, Any] | None = None,
) -> list[int]:
    """:func:`claim_in` in a transaction of its own, committed when it returns."""
    with engine.begin() as conn:
        return claim_in(conn, work, worker, now, until, limit, params)


def release(
    conn: Connection,
    work: WorkTable,
    ids: Iterable[int],
    worker: str,
    until: datetime,
    values: Mapping[str, Any] | None = None,
    where: ColumnElement[bool] | None = None,
) -> int:
    """Give back the rows of ``ids`` still held by this claim (and matching ``where``):
    no worker, no lease, plus ``values``. Returns how many were given back."""
    ids = list(ids)
    if not ids:
        return 0
    c = work.table.c
    stmt = update(work.table).where(c.id.in_(ids), held(work.table))
    if where is not None:
        stmt = stmt.where(where)
    stmt = stmt.values(claimed_by=None, lease_until=None, **(values or {}))
    return int(conn.execute(stmt, mine(worker, until)).rowcount or 0)


def extend(
    conn: Connection,
    work: WorkTable,
    ids: Iterable[int],
    worker: str,
    until: datetime,
    new_until: datetime,
) -> list[int]:
    """Move the lease of the rows of ``ids`` still held by this claim to ``new_until``; the
    ids extended (a row missing was taken back: the worker must leave it alone)."""
    ids = list(ids)
    if not ids:
        return []
    params = {**mine(worker, until), "claim_ids": ids, "claim_new_until": new_until}
    return sorted(int(i) for i in conn.execute(work._extend, params).scalars())
