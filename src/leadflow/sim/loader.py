"""Load a demo world through the ingestion service, chunk by chunk, in time order.

The messages go through :func:`leadflow.core.tracking.parse_message` and
:func:`leadflow.services.ingest.ingest` exactly as a ``/v1/batch`` call would, one
transaction per group of chunks (a chunk: at most ``chunk_size`` messages of one simulated
day; a transaction: about ``transaction_size`` messages, see ``ingest_parts``). Each chunk is
"received" at the time of its last message, so stored rows (a lead's ``created_at``, an
event's ``received_at``) carry simulated time, not the time of loading. Message ids are
deterministic, so loading the same world again stores nothing new.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from leadflow.adapters.db.tables import accounts, events, leads
from leadflow.core.tracking import TrackedMessage, parse_message
from leadflow.services.ingest import ingest_parts
from leadflow.sim.stream import iter_days
from leadflow.sim.world import World

CHUNK_SIZE = 500
# Messages per transaction: quiet days are grouped so that a commit (and the per-transaction
# look-ups) serves a few thousand messages instead of a few dozen.
TRANSACTION_SIZE = 2000
# Called after every chunk with (messages so far, days done, days in the world).
Progress = Callable[[int, int, int], None]


@dataclass(frozen=True, slots=True)
class LoadReport:
    messages: int
    stored: int
    duplicates: int
    seconds: float
    accounts: int  # rows in the database after loading
    leads: int
    events: int


def load_world(
    engine: Engine,
    world: World,
    *,
    chunk_size: int = CHUNK_SIZE,
    transaction_size: int = TRANSACTION_SIZE,
    progress: Progress | None = None,
) -> LoadReport:
    started = time.perf_counter()
    messages = stored = duplicates = 0
    days = world.config.days
    pending: list[tuple[list[TrackedMessage], datetime]] = []
    pending_size = 0

    def flush() -> None:
        nonlocal stored, duplicates, pending_size
        if pending:
            for result in ingest_parts(engine, pending):
                stored += result.stored
                duplicates += result.duplicates
            pending.clear()
            pending_size = 0

    for day, day_messages in iter_days(world):
        for i in range(0, len(day_messages), chunk_size):
            chunk = day_messages[i : i + chunk_size]
            first = parse_message(chunk[0], received_at=world.config.until)
            parsed = [first] + [
                parse_message(raw, received_at=first.occurred_at) for raw in chunk[1:]
            ]
            # Each chunk keeps its own received_at; several chunks (quiet days) share one
            # transaction, stored in order exactly as if ingested one after the other.
            pending.append((parsed, max(m.occurred_at for m in parsed)))
            pending_size += len(parsed)
            messages += len(chunk)
            if pending_size >= transaction_size:
                flush()
                if progress is not None:
                    progress(messages, day, days)
        if progress is not None and not pending:
            progress(messages, day + 1, days)
    flush()
    if progress is not None:
        progress(messages, days, days)
    with engine.connect() as conn:
        counts = [
            int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (accounts, leads, events)
        ]
    return LoadReport(
        messages=messages,
        stored=stored,
        duplicates=duplicates,
        seconds=time.perf_counter() - started,
        accounts=counts[0],
        leads=counts[1],
        events=counts[2],
    )
