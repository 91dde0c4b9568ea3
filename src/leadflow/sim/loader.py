"""Load a demo world through the ingestion service, chunk by chunk, in time order.

The messages go through :func:`leadflow.core.tracking.parse_message` and
:func:`leadflow.services.ingest.ingest` exactly as a ``/v1/batch`` call would, one
transaction per chunk (at most ``chunk_size`` messages of one simulated day). Each chunk is
"received" at the time of its last message, so stored rows (a lead's ``created_at``, an
event's ``received_at``) carry simulated time, not the time of loading. Message ids are
deterministic, so loading the same world again stores nothing new.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from leadflow.adapters.db.tables import accounts, events, leads
from leadflow.core.tracking import parse_message
from leadflow.services.ingest import ingest
from leadflow.sim.stream import iter_days
from leadflow.sim.world import World

CHUNK_SIZE = 500
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
    progress: Progress | None = None,
) -> LoadReport:
    started = time.perf_counter()
    messages = stored = duplicates = 0
    days = world.config.days
    for day, day_messages in iter_days(world):
        for i in range(0, len(day_messages), chunk_size):
            chunk = day_messages[i : i + chunk_size]
            first = parse_message(chunk[0], received_at=world.config.until)
            parsed = [first] + [
                parse_message(raw, received_at=first.occurred_at) for raw in chunk[1:]
            ]
            received_at = max(m.occurred_at for m in parsed)
            result = ingest(engine, parsed, received_at)
            messages += len(chunk)
            stored += result.stored
            duplicates += result.duplicates
            if progress is not None:
                progress(messages, day, days)
        if progress is not None:
            progress(messages, day + 1, days)
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
