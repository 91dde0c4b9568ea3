"""The transactional outbox: what happened to leads, read in one place for whoever hands it
on (the webhook fan-out, :func:`leadflow.services.webhooks.enqueue_new`).

Two tables are written with the change that caused them, in the same transaction:
``signals`` (``lead.routed``, ``lead.accepted``, ``opportunity.won``, ...) and
``stage_changes`` (the stage log; ``lead.mql`` and ``lead.stage_changed`` are made from
it). :func:`read_new` is the one read path over both: batches of :class:`Entry`, signals
first, each batch marked handed over when the next one is asked for. How "new" is tracked
differs by source and stays here:

- a signal is new until its ``delivered_at`` is set;
- a stage change is new above the high-water mark in ``webhook_cursors``; the last
  :data:`LOOKBACK` ids below it are read again, so rows committed late on PostgreSQL (an id
  taken before a row committed after it) are not skipped. A consumer must therefore be
  idempotent per (kind, id): the webhook deliveries have a unique key for it.

:func:`start` begins the outbox at the present (older history is not handed on);
:func:`skip` hands everything new over to nobody (no consumer is listening).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, func, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.rows import as_record
from leadflow.adapters.db.tables import signals, stage_changes, webhook_cursors

LOOKBACK = 1000
BATCH = 500
STAGE_CURSOR = "stage_changes"

Kind = Literal["signal", "stage"]
SIGNAL: Kind = "signal"
STAGE: Kind = "stage"


@dataclass(frozen=True)
class Entry:
    """One outbox row: ``kind`` (its table), ``id`` (its id there) and the row itself."""

    kind: Kind
    id: int
    lead_id: int
    row: Mapping[str, Any]


@dataclass
class _Cursor:
    exists: bool
    last_id: int
    floor_id: int


def _cursor(conn: Connection) -> _Cursor:
    row = (
        conn.execute(select(webhook_cursors).where(webhook_cursors.c.name == STAGE_CURSOR))
        .mappings()
        .first()
    )
    if row is None:
        return _Cursor(False, 0, 0)
    return _Cursor(True, int(row["last_id"]), int(row["floor_id"]))


def _save(conn: Connection, cursor: _Cursor, now: datetime) -> None:
    if cursor.exists:
        conn.execute(
            update(webhook_cursors)
            .where(webhook_cursors.c.name == STAGE_CURSOR)
            .values(last_id=cursor.last_id, floor_id=cursor.floor_id, updated_at=now)
        )
    else:
        conn.execute(
            insert_ignore(conn.engine, webhook_cursors, "name").values(
                name=STAGE_CURSOR,
                last_id=cursor.last_id,
                floor_id=cursor.floor_id,
                updated_at=now,
            )
        )


def _top_stage_change(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(stage_changes.c.id), 0))).scalar_one())


def _mark_signals(conn: Connection, ids: list[int] | None, now: datetime) -> None:
    stmt = update(signals).where(signals.c.delivered_at.is_(None))
    if ids is not None:
        stmt = stmt.where(signals.c.id.in_(ids))
    conn.execute(stmt.values(delivered_at=now))


def started(conn: Connection) -> bool:
    return conn.execute(select(webhook_cursors.c.name)).first() is not None


def start(conn: Connection, now: datetime) -> None:
    """Begin the outbox at the present, once: what happened before is never handed on."""
    if started(conn):
        return
    top = _top_stage_change(conn)
    conn.execute(
        insert_ignore(conn.engine, webhook_cursors, "name").values(
            name=STAGE_CURSOR, last_id=top, floor_id=top, updated_at=now
        )
    )
    _mark_signals(conn, None, now)


def skip(conn: Connection, now: datetime) -> None:
    """Hand everything new over to nobody (no consumer is listening): signals are marked,
    and the stage cursor and its floor move to the newest stage change, so the
    :data:`LOOKBACK` of a later read does not bring the skipped ones back."""
    _mark_signals(conn, None, now)
    cursor = _cursor(conn)
    cursor.last_id = cursor.floor_id = max(cursor.last_id, _top_stage_change(conn))
    _save(conn, cursor, now)


def read_new(conn: Connection, now: datetime, batch: int = BATCH) -> Iterator[list[Entry]]:
    """What is new in the outbox, in batches of at most ``batch`` entries of one kind:
    signals (oldest first), then stage changes (from the cursor, less :data:`LOOKBACK`).

    A batch is marked handed over (``signals.delivered_at`` = ``now``; the stage cursor
    moved) when the next batch is asked for, or when the iteration ends: a consumer that
    stops early (or fails) gets the batch it was working on again. Works inside the
    caller's transaction."""
    while True:
        rows = [
            as_record(r)
            for r in conn.execute(
                select(signals)
                .where(signals.c.delivered_at.is_(None))
                .order_by(signals.c.id)
                .limit(batch)
            ).mappings()
        ]
        if not rows:
            break
        yield [Entry(SIGNAL, int(r["id"]), int(r["lead_id"]), r) for r in rows]
        _mark_signals(conn, [int(r["id"]) for r in rows], now)
    cursor = _cursor(conn)
    after = max(cursor.floor_id, cursor.last_id - LOOKBACK)
    while True:
        rows = [
            as_record(r)
            for r in conn.execute(
                select(stage_changes)
                .where(stage_changes.c.id > after)
                .order_by(stage_changes.c.id)
                .limit(batch)
            ).mappings()
        ]
        if not rows:
            break
        yield [Entry(STAGE, int(r["id"]), int(r["lead_id"]), r) for r in rows]
        after = int(rows[-1]["id"])
        cursor.last_id = max(cursor.last_id, after)
    _save(conn, cursor, now)
