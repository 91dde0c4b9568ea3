"""The sales queue page's read model (``services.handoff.board.load_board``) on a busy team:
``--waiting`` leads in the ready queue, ``--open`` open hand-offs over 10 reps, 30 events
per lead (downloads, requests, page views). Prints the time to rank every lead of both
sections and decorate one page, for an admin (everyone's) and for one rep, per backend.

    python benchmarks/sales_queue.py --waiting 2000 --open 2000 --backends sqlite,postgresql
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from _databases import each_database
from sqlalchemy import insert

from leadflow.adapters.db import migrate
from leadflow.adapters.db.engine import create_db_engine, read_only
from leadflow.adapters.db.tables import assignments, events, lead_states, leads, ready_queue
from leadflow.core.config import load_default_model
from leadflow.services.handoff.board import Filters, load_board

REPS = [f"rep{i}" for i in range(10)]
NAMES = ("content_download", "demo_request", "contact_request", "webinar_attended")


def seed(url: str, waiting: int, open_: int, per_lead: int) -> None:
    rng = random.Random(3)
    now = datetime.now(UTC)
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    total = waiting + open_
    with engine.begin() as conn:
        conn.execute(
            insert(leads),
            [
                {
                    "id": i + 1,
                    "email": f"p{i}@example.com",
                    "first_name": f"P{i}",
                    "last_name": "Bench",
                    "consent_status": "granted",
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(total)
            ],
        )
        conn.execute(
            insert(lead_states),
            [
                {
                    "lead_id": i + 1,
                    "stage": "mql",
                    "stage_since": now - timedelta(days=2),
                    "engagement": rng.uniform(50, 300),
                    "fit": rng.uniform(0, 100),
                    "fit_grade": rng.choice("ABCD"),
                    "qualification": 0.0,
                    "scored_at": now,
                    "model_version": "bench",
                    "model_hash": "bench",
                    "updated_at": now,
                }
                for i in range(total)
            ],
        )
        conn.execute(
            insert(ready_queue),
            [
                {
                    "lead_id": i + 1,
                    "priority": rng.uniform(0, 300),
                    "queued_at": now - timedelta(hours=rng.uniform(0, 72)),
                    "reason": "handoff",
                    "exclude_reps": [],
                }
                for i in range(waiting)
            ],
        )
        conn.execute(
            insert(assignments),
            [
                {
                    "lead_id": i + 1,
                    "active_lead_id": i + 1,
                    "rep_key": REPS[i % len(REPS)],
                    "rule": "round_robin",
                    "priority": 1.0,
                    "assigned_at": now - timedelta(hours=rng.uniform(0, 72)),
                    "due_at": now + timedelta(hours=rng.uniform(-40, 40)),
                    "status": rng.choice(("routed", "accepted", "escalated")),
                    "summary": {},
                }
                for i in range(waiting, total)
            ],
        )
        batch = []
        for i in range(total):
            for k in range(per_lead):
                name = rng.choice(NAMES) if k % 3 else None
                batch.append(
                    {
                        "message_id": f"b-{i}-{k}",
                        "type": "track" if name else "page",
                        "name": name,
                        "lead_id": i + 1,
                        "properties": {"asset": "Price list", "asset_type": "pricing"},
                        "context": {},
                        "page_url": None if name else "https://example.com/pricing",
                        "occurred_at": now - timedelta(days=rng.uniform(0, 30)),
                        "received_at": now,
                    }
                )
            if len(batch) >= 20_000:
                conn.execute(insert(events), batch)
                batch = []
        if batch:
            conn.execute(insert(events), batch)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--waiting", type=int, default=2000)
    parser.add_argument("--open", type=int, default=2000)
    parser.add_argument("--events", type=int, default=30, help="events per lead")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    model = load_default_model()
    for backend, url in each_database(args.backends):
        seed(url, args.waiting, args.open, args.events)
        engine = create_db_engine(url)
        now = datetime.now(UTC)
        for who, rep in (("admin", None), ("rep", REPS[0])):
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                with read_only(engine).connect() as conn:
                    board = load_board(conn, model, now, rep=rep, filters=Filters())
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            p95 = times[max(int(len(times) * 0.95) - 1, 0)]
            print(
                f"[{backend}] {who}: {board.pool.total} waiting + {board.mine.total} open ranked,"
                f" {len(board.pool.cards) + len(board.mine.cards)} cards decorated:"
                f" median {statistics.median(times):.0f} ms, p95 {p95:.0f} ms"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
