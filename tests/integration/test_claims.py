"""The one claim mechanism (adapters.db.claims) under two workers at once, on SQLite and
PostgreSQL: for e-mail sends, webhook deliveries and due work, two workers with separate
engines claiming the same due rows never both get one, and together they get every row.
Then the lease itself: held rows are skipped, a lease that ran out is free again, and the
worker that lost it can neither extend it nor write over the new holder's claim."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from leadflow.adapters.db import claims
from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import (
    due_work,
    email_sends,
    leads,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)
from leadflow.adapters.webhooks import SendResult
from leadflow.services import duework, webhooks
from leadflow.services.mailing import delivery

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
N = 400
LEASE = timedelta(minutes=5)


def _seed_email(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        lead_id = conn.execute(
            insert(leads)
            .values(email="claims@acme.example", attributes={}, created_at=T0, updated_at=T0)
            .returning(leads.c.id)
        ).scalar_one()
        conn.execute(
            insert(email_sends),
            [
                {
                    "idempotency_key": f"k{i}",
                    "message_id": f"<m{i}@acme.example>",
                    "lead_id": lead_id,
                    "category": "transactional",
                    "template": "t",
                    "to_email": "claims@acme.example",
                    "subject": "s",
                    "status": "planned",
                    "attempts": 0,
                    "planned_at": T0 - timedelta(seconds=i % 7),
                }
                for i in range(n)
            ],
        )


def _endpoint(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(webhook_endpoints)
                .values(
                    url="http://127.0.0.1:9/hook",
                    event_types=["*"],
                    secret="whsec_test",
                    active=True,
                    created_at=T0,
                    updated_at=T0,
                )
                .returning(webhook_endpoints.c.id)
            ).scalar_one()
        )


def _seed_webhooks(engine: Engine, n: int) -> None:
    endpoint_id = _endpoint(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(webhook_deliveries),
            [
                {
                    "endpoint_id": endpoint_id,
                    "source_kind": "signal",
                    "source_id": i,
                    "event_type": "lead.routed",
                    "payload": {"type": "lead.routed", "n": i},
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": T0 - timedelta(seconds=i % 5),
                    "expires_at": T0 + timedelta(hours=24),
                    "created_at": T0,
                }
                for i in range(n)
            ],
        )


def _seed_due_work(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        duework.schedule_many(
            conn,
            [
                {"key": f"w{i}", "kind": "test", "due_at": T0 - timedelta(seconds=i % 3)}
                for i in range(n)
            ],
        )


CASES: dict[str, tuple[claims.WorkTable, Callable[[Engine, int], None], dict[str, Any]]] = {
    "email": (delivery.WORK, _seed_email, {}),
    "webhooks": (webhooks.WORK, _seed_webhooks, {}),
    "due_work": (duework.WORK, _seed_due_work, {"kinds": ["test"]}),
}


def _race(db_url: str, work: Callable[[Engine, str], list[int]]) -> dict[str, list[int]]:
    """Run ``work(engine, name)`` in two threads, each with its own engine, until both
    claim nothing; the ids each worker got."""
    engines = [create_db_engine(db_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    got: dict[str, list[int]] = {"w0": [], "w1": []}
    errors: list[BaseException] = []

    def run(engine: Engine, name: str) -> None:
        try:
            barrier.wait()
            while True:
                ids = work(engine, name)
                if not ids:
                    return
                got[name] += ids
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(e, f"w{i}")) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert errors == []
    return got


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_workers_never_claim_the_same_row(db_url, services, case):
    work, seed, params = CASES[case]
    seed(services.engine, N)

    def claim(engine: Engine, name: str) -> list[int]:
        return claims.claim(engine, work, name, T0, T0 + LEASE, 15, params)

    got = _race(db_url, claim)
    counts = Counter(got["w0"] + got["w1"])
    assert len(counts) == N  # every due row was claimed ...
    assert max(counts.values()) == 1  # ... by exactly one worker
    table = work.table
    with services.engine.connect() as conn:
        rows = conn.execute(select(table.c.id, table.c.claimed_by, table.c.lease_until)).all()
    holder = {i: name for name, ids in got.items() for i in ids}
    assert {(r.id, r.claimed_by, r.lease_until) for r in rows} == {
        (i, holder[i], T0 + LEASE) for i in holder
    }


def test_two_webhook_workers_send_each_delivery_once(db_url, services):
    _seed_webhooks(services.engine, 200)
    sent: Counter[str] = Counter()
    lock = threading.Lock()

    class Counting:
        def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
            with lock:
                sent[headers[webhooks.DELIVERY_HEADER]] += 1
            return SendResult(status_code=200, error=None)

    def deliver(engine: Engine, name: str) -> list[int]:
        report = webhooks.deliver_due(engine, T0, Counting(), limit=10, worker_id=name)
        return list(range(report.attempted))

    _race(db_url, deliver)
    assert len(sent) == 200 and max(sent.values()) == 1
    with services.engine.connect() as conn:
        statuses = Counter(conn.execute(select(webhook_deliveries.c.status)).scalars())
        attempts = conn.execute(select(webhook_attempts.c.delivery_id)).scalars().all()
    assert statuses == {"delivered": 200}
    assert len(attempts) == len(set(attempts)) == 200


def test_a_due_work_race_through_the_service(db_url, services):
    _seed_due_work(services.engine, N)

    def claim(engine: Engine, name: str) -> list[int]:
        return [int(r["id"]) for r in duework.claim(engine, name, T0, ["test"], 15)]

    got = _race(db_url, claim)
    counts = Counter(got["w0"] + got["w1"])
    assert len(counts) == N and max(counts.values()) == 1


def test_a_lease_holds_until_it_runs_out(services):
    _seed_due_work(services.engine, 3)
    work, engine, params = duework.WORK, services.engine, {"kinds": ["test"]}
    until = T0 + LEASE
    mine = claims.claim(engine, work, "a", T0, until, 2, params)
    assert len(mine) == 2
    # Held rows are skipped: the other worker gets the one left, then nothing.
    other = claims.claim(engine, work, "b", T0, until, 10, params)
    assert len(other) == 1 and not set(other) & set(mine)
    assert claims.claim(engine, work, "b", T0 + LEASE / 2, until, 10, params) == []
    # Extended: still held past the first lease end.
    later = until + LEASE
    with engine.begin() as conn:
        assert claims.extend(conn, work, mine, "a", until, later) == sorted(mine)
        assert claims.extend(conn, work, mine, "a", until, later) == []  # not that claim now
    assert claims.claim(engine, work, "b", until, until + LEASE, 10, params) == other
    # Run out (a lease "until t" is over at t): free again, taken by b; a lost it.
    taken = claims.claim(engine, work, "b", later, later + LEASE, 10, params)
    assert set(mine) <= set(taken)
    with engine.begin() as conn:
        assert claims.extend(conn, work, mine, "a", later, later + LEASE) == []
        assert claims.release(conn, work, mine, "a", later) == 0
        stale = conn.execute(
            update(due_work)
            .where(due_work.c.id.in_(mine), claims.held(due_work))
            .values(status="done"),
            claims.mine("a", later),
        )
        assert stale.rowcount == 0
        # The holder releases: free at once, nobody's.
        assert claims.release(conn, work, mine, "b", later + LEASE, {"status": "pending"}) == 2
        rows = conn.execute(
            select(due_work.c.claimed_by, due_work.c.lease_until).where(due_work.c.id.in_(mine))
        ).all()
    assert {tuple(r) for r in rows} == {(None, None)}
    assert sorted(claims.claim(engine, work, "c", later, later + LEASE, 10, params)) == sorted(mine)


def test_a_webhook_worker_that_lost_its_lease_does_not_write_over_the_new_holder(services):
    _seed_webhooks(services.engine, 1)

    class Ok:
        def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
            return SendResult(status_code=200, error=None)

    # Worker a claimed it and died; past its lease worker b sends it.
    assert claims.claim(services.engine, webhooks.WORK, "a", T0, T0 + LEASE, 10) != []
    assert webhooks.deliver_due(services.engine, T0, Ok(), worker_id="b").attempted == 0
    after = T0 + LEASE
    assert webhooks.deliver_due(services.engine, after, Ok(), worker_id="b").delivered == 1
    with services.engine.connect() as conn:
        row = conn.execute(select(webhook_deliveries)).one()
    assert (row.status, row.claimed_by, row.lease_until, row.attempts) == (
        "delivered",
        "b",
        None,
        1,
    )
