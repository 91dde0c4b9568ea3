"""Due work retried by the one retry policy (core/retry), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from leadflow.adapters.db.tables import due_work
from leadflow.core.retry import DUE_WORK_RETRY, RetryPolicy
from leadflow.services import duework

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _row(services, key):
    with services.engine.connect() as conn:
        return conn.execute(select(due_work).where(due_work.c.key == key)).mappings().one()


def test_a_failed_row_waits_as_the_policy_says_then_fails(services):
    with services.engine.begin() as conn:
        duework.schedule(conn, "retry-me", "program_step", T0)
    work_id = _row(services, "retry-me")["id"]
    now = T0
    waits = []
    for _ in range(DUE_WORK_RETRY.max_attempts or 0):
        with services.engine.begin() as conn:
            status = duework.retry(conn, work_id, now, "boom")
        row = _row(services, "retry-me")
        if status == "pending":
            waits.append(row["due_at"] - now)
            now = row["due_at"]
    minute = timedelta(minutes=1)
    assert waits == [minute * m for m in (1, 2, 4, 8, 16, 32, 60, 60, 60)]
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 10, "boom")

    with services.engine.begin() as conn:
        duework.schedule(conn, "once", "program_step", T0)
    once = RetryPolicy(base=minute, cap=minute, max_attempts=1)
    once_id = _row(services, "once")["id"]
    with services.engine.begin() as conn:
        assert duework.retry(conn, once_id, T0, "x", policy=once) == "failed"
    with services.engine.begin() as conn:
        assert duework.retry(conn, 10**9, T0, "x") == "missing"
