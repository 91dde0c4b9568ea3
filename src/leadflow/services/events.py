"""Events leadflow records itself (email opens and clicks, form submissions, seminar steps).

They go into the same ``events`` table as tracked calls, as ``track`` events of a known
lead, and the after-ingest hooks (scoring, stages, hand-off) run in the same transaction,
so an email click moves a lead exactly as a tracked click would. ``message_id`` makes a
repeat of the same fact (a second pixel load, a retried request) a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import events
from leadflow.services.ingest import AfterIngest

# Segment-style channel for events leadflow records: what the scoring rules and the
# attribution reports group them by.
EMAIL_CHANNEL = "email"


@dataclass(frozen=True, slots=True)
class LeadEvent:
    lead_id: int
    name: str
    at: datetime
    message_id: str
    properties: Mapping[str, Any]
    channel: str | None = None
    page_url: str | None = None
    anonymous_id: str | None = None
    utm_campaign: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    context: Mapping[str, Any] | None = None


def record_events_in(
    conn: Connection,
    items: Iterable[LeadEvent],
    received_at: datetime,
    *,
    after: Iterable[AfterIngest] = (),
) -> int:
    """Insert the events (duplicates by ``message_id`` are skipped) inside the caller's
    transaction, then run ``after`` hooks for the leads that got a new event. Returns the
    number of new events."""
    stmt = insert_ignore(conn.engine, events, "message_id")
    stored = 0
    touched: set[int] = set()
    for item in items:
        result = conn.execute(
            stmt.values(
                message_id=item.message_id,
                type="track",
                name=item.name,
                lead_id=item.lead_id,
                anonymous_id=item.anonymous_id,
                user_id=None,
                properties=dict(item.properties),
                context=dict(item.context or {}),
                page_url=item.page_url,
                referrer=None,
                utm_campaign=item.utm_campaign,
                utm_source=item.utm_source,
                utm_medium=item.utm_medium,
                channel=item.channel,
                occurred_at=item.at,
                received_at=received_at,
            )
        )
        if result.rowcount:
            stored += 1
            touched.add(item.lead_id)
    if touched:
        for hook in after:
            hook(conn, touched, received_at)
    return stored
