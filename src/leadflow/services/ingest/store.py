"""Event rows and the ingest transaction: deduplicate, resolve leads, store the rows,
run the after-ingest hooks with what was stored; retry a race with a concurrent writer."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, bindparam, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from leadflow.adapters.db.engine import bind_processors, bulk_insert_ignore
from leadflow.adapters.db.tables import events
from leadflow.core.model import Event
from leadflow.core.tracking import TrackedMessage
from leadflow.services import privacy
from leadflow.services.ingest.identities import (
    _current_lead,
    _Identities,
    _resolve_alias,
    _resolve_event,
    _resolve_group,
    _resolve_identify,
    _select_in,
)
from leadflow.services.ingest.turn import _write_turn

log = logging.getLogger(__name__)

AfterIngest = Callable[[Connection, set[int], datetime], None]

STORED_EVENTS = "leadflow.stored_events"
"""``Connection.info`` key: while the after-ingest hooks run, the events this unit of work
stored, by lead (``dict[int, list[Event]]``), so that they are passed along rather than
read back; absent or None when not known."""


@dataclass(slots=True)
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    leads_touched: set[int] = field(default_factory=set)


EVENT_COLUMNS = (
    "message_id",
    "type",
    "name",
    "lead_id",
    "anonymous_id",
    "user_id",
    "properties",
    "context",
    "page_url",
    "referrer",
    "utm_campaign",
    "utm_source",
    "utm_medium",
    "channel",
    "occurred_at",
    "received_at",
)
_LEAD_INDEX = EVENT_COLUMNS.index("lead_id")
_SEEN = select(events.c.message_id).where(events.c.message_id.in_(bindparam("ids", expanding=True)))


def _event_properties(msg: TrackedMessage) -> dict[str, Any]:
    if msg.type not in ("identify", "group"):
        return dict(msg.properties)
    return {"traits": dict(msg.traits), **({"groupId": msg.group_id} if msg.group_id else {})}


class _EventRows:
    """Event rows as driver-ready tuples (SQLAlchemy's own conversions, applied once)."""

    def __init__(self, dialect: Dialect) -> None:
        procs = bind_processors(dialect, events, EVENT_COLUMNS)
        self.properties = procs[EVENT_COLUMNS.index("properties")] or _same
        self.context = procs[EVENT_COLUMNS.index("context")] or _same
        self.time = procs[EVENT_COLUMNS.index("occurred_at")] or _same
        self._received: dict[datetime, Any] = {}

    def row(
        self, msg: TrackedMessage, lead_id: int | None, received_at: datetime
    ) -> tuple[Any, ...]:
        received = self._received.get(received_at)
        if received is None:
            received = self._received[received_at] = self.time(received_at)
        return (
            msg.message_id,
            msg.type,
            msg.name,
            lead_id,
            msg.anonymous_id,
            msg.user_id,
            self.properties(_event_properties(msg)),
            self.context(dict(msg.context)),
            msg.page_url,
            msg.referrer,
            msg.utm_campaign,
            msg.utm_source,
            msg.utm_medium,
            msg.channel,
            self.time(msg.occurred_at),
            received,
        )


def _same(value: Any) -> Any:
    return value


Part = tuple[Sequence[TrackedMessage], datetime]


def ingest_in(
    conn: Connection, messages: Sequence[TrackedMessage], received_at: datetime
) -> IngestResult:
    """Store ``messages`` inside the caller's transaction."""
    results, _ = ingest_parts_in(conn, [(messages, received_at)])
    return results[0]


def _without_suppressed_emails(
    conn: Connection, fresh: list[tuple[int, TrackedMessage]]
) -> list[tuple[int, TrackedMessage]]:
    """An erased person asked never to be contacted: their address is taken out of every
    message (traits, context.traits, properties, URLs, ids) before anything is stored, so
    no lead is made or matched from it (:func:`leadflow.services.privacy.guard_messages`)."""
    guarded = privacy.guard_messages(conn, [m for _, m in fresh])
    return [(i, m) for (i, _), m in zip(fresh, guarded, strict=True) if m is not None]


def ingest_parts_in(conn: Connection, parts: Sequence[Part]) -> tuple[list[IngestResult], set[int]]:
    """Store several requests' messages inside the caller's transaction, in order, as if
    each part were ingested after the previous one; each keeps its own ``received_at``.

    Returns a result per part and every lead touched (after merges: leads merged away in
    this transaction are replaced by the lead they went into)."""
    results, touched, _ = _ingest_parts_in(conn, parts, None)
    return results, touched


_Prepared = dict[int, tuple[TrackedMessage, tuple[Any, ...]]]


def _prepare_rows(dialect: Dialect, parts: Sequence[Part]) -> _Prepared:
    """Event rows without their lead, built before the write transaction so that the
    database's write lock is held for less time (JSON encoding, date formatting). Keyed by
    the message object: a message replaced during ingestion gets its row rebuilt."""
    builder = _EventRows(dialect)
    return {
        id(msg): (msg, builder.row(msg, None, received_at))
        for messages, received_at in parts
        for msg in messages
    }


def _ingest_parts_in(
    conn: Connection, parts: Sequence[Part], prepared: _Prepared | None
) -> tuple[list[IngestResult], set[int], dict[int, list[Event]] | None]:
    results = [IngestResult() for _ in parts]
    unique: dict[str, tuple[int, TrackedMessage]] = {}
    for index, (messages, _) in enumerate(parts):
        for msg in messages:
            if msg.message_id in unique:
                results[index].duplicates += 1
            else:
                unique[msg.message_id] = (index, msg)
    if not unique:
        return results, set(), {}
    ids_list = list(unique)
    seen: set[str] = set()
    for start in range(0, len(ids_list), 5000):
        seen.update(
            row[0] for row in _select_in(conn, _SEEN, "ids", ids_list[start : start + 5000])
        )
    fresh: list[tuple[int, TrackedMessage]] = []
    for message_id, (index, msg) in unique.items():
        if message_id in seen:
            results[index].duplicates += 1
        else:
            fresh.append((index, msg))
    fresh = _without_suppressed_emails(conn, fresh)
    ids = _Identities(conn)
    ids.preload([m for _, m in fresh])
    resolved: list[tuple[int, TrackedMessage, int | None]] = []
    for index, msg in fresh:
        now = parts[index][1]
        if msg.type == "identify":
            lead_id = _resolve_identify(conn, ids, msg, now)
        elif msg.type == "alias":
            lead_id = _resolve_alias(conn, ids, msg, now)
        elif msg.type == "group":
            lead_id = _resolve_group(conn, ids, msg, now)
        else:
            lead_id = _resolve_event(conn, ids, msg, now)
        if lead_id is not None:
            results[index].leads_touched.add(lead_id)
        resolved.append((index, msg, lead_id))
    # Identities linked later in this transaction (a page view before the identify in the
    # same batch) and leads merged away during it: point every row at its lead now.
    rows = []
    builder: _EventRows | None = None
    for index, msg, lead_id in resolved:
        lead = _current_lead(ids, msg, lead_id)
        row = prepared.get(id(msg)) if prepared else None
        if row is None or row[0] is not msg:
            builder = builder or _EventRows(conn.dialect)
            rows.append(builder.row(msg, lead, parts[index][1]))
        else:
            rows.append((*row[1][:_LEAD_INDEX], lead, *row[1][_LEAD_INDEX + 1 :]))
    touched: set[int] = set()
    for result in results:
        result.leads_touched = {ids.current(lead_id) for lead_id in result.leads_touched}
        touched |= result.leads_touched
    passed: dict[int, list[Event]] = defaultdict(list)
    for (_, stored_msg, _), stored_row in zip(resolved, rows, strict=True):
        owner: int | None = stored_row[_LEAD_INDEX]
        if owner is not None:
            passed[owner].append(_as_event(stored_msg, owner))
    stored = 0
    for start in range(0, len(rows), 5000):
        stored += bulk_insert_ignore(
            conn, events, EVENT_COLUMNS, rows[start : start + 5000], ("message_id",)
        )
    # A concurrent writer stored some of the same message ids after our check (PostgreSQL
    # only; SQLite writers are serialised): they are duplicates. Which request they came
    # from is not known, so the shortfall is counted against the last parts.
    shortfall = len(rows) - stored
    per_part = [0] * len(parts)
    for index, _, _ in resolved:
        per_part[index] += 1
    for index in reversed(range(len(parts))):
        taken = min(shortfall, per_part[index])
        shortfall -= taken
        results[index].stored += per_part[index] - taken
        results[index].duplicates += taken
    # What was stored, passed along to the handlers; unknown when a concurrent writer took
    # some of the rows (they then read the store).
    return results, touched, (passed if len(rows) == stored else None)


def _as_event(msg: TrackedMessage, lead_id: int) -> Event:
    """The event as the store gives it back (:func:`lifecycle.event_from_row`)."""
    props = msg.traits if msg.type in ("identify", "group") else msg.properties
    return Event(
        message_id=msg.message_id,
        type=msg.type,
        occurred_at=msg.occurred_at,
        lead_id=lead_id,
        name=msg.name,
        properties=dict(props),
        page_url=msg.page_url,
        referrer=msg.referrer,
        utm_campaign=msg.utm_campaign,
        utm_source=msg.utm_source,
        utm_medium=msg.utm_medium,
        channel=msg.channel,
    )


def _is_retryable(exc: DBAPIError) -> bool:
    """A unique-key race, a deadlock or a serialization failure with a concurrent writer."""
    if isinstance(exc, IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40001", "40P01")


def ingest(
    engine: Engine,
    messages: Sequence[TrackedMessage],
    received_at: datetime,
    *,
    after: Iterable[AfterIngest] = (),
    attempts: int = 3,
) -> IngestResult:
    """Store ``messages`` in one transaction; commit before returning.

    ``after`` hooks run inside the same transaction with the leads the messages touched
    (scoring and stage changes hook in here). A unique-key race with a concurrent writer
    (two requests creating the same lead) is retried from scratch.
    """
    return ingest_parts(engine, [(messages, received_at)], after=after, attempts=attempts)[0]


def ingest_parts(
    engine: Engine,
    parts: Sequence[Part],
    *,
    after: Iterable[AfterIngest] = (),
    attempts: int = 3,
) -> list[IngestResult]:
    """Several requests' messages in ONE transaction (group commit); see :func:`ingest`.
    The hooks run once, with every lead touched and the latest ``received_at``."""
    latest = max(received_at for _, received_at in parts)
    prepared = _prepare_rows(engine.dialect, parts)
    for attempt in range(1, attempts + 1):
        try:
            with _write_turn(engine), engine.begin() as conn:
                results, touched, passed = _ingest_parts_in(conn, parts, prepared)
                conn.info[STORED_EVENTS] = passed
                try:
                    for hook in after:
                        hook(conn, touched, latest)
                finally:
                    conn.info.pop(STORED_EVENTS, None)
            return results
        except DBAPIError as exc:
            if attempt == attempts or not _is_retryable(exc):
                raise
            log.info("ingest: race with a concurrent writer, retrying (attempt %d)", attempt)
    raise AssertionError("unreachable")
