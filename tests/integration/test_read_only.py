"""Readers never stop writers: dashboard pages, report loads and key checks read through
``Services.reader``, whose SQLite transactions begin DEFERRED (a snapshot, no write lock)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select, text

from leadflow.adapters.db.engine import ReadOnlyViolation
from leadflow.adapters.db.tables import events, leads
from leadflow.bootstrap import Services
from leadflow.core.tracking import parse_batch
from leadflow.services.ingest import ingest

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _track(n: int) -> list:
    return parse_batch(
        {
            "batch": [
                {"type": "track", "userId": f"u{i}", "event": "e", "messageId": f"m{n}-{i}"}
                for i in range(3)
            ]
        },
        received_at=NOW,
    )


def test_a_write_through_the_reader_is_refused(services: Services) -> None:
    with services.reader.connect() as conn, pytest.raises(ReadOnlyViolation, match="read-only"):
        conn.execute(insert(leads).values(created_at=NOW, updated_at=NOW))
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(leads)).scalar_one() == 0


def test_an_open_read_does_not_hold_the_write_lock(services: Services) -> None:
    """A long report load (a reader with an open transaction) while events arrive: the
    writer gets the lock at once (busy timeout 0 would fail with 'database is locked'),
    and the reader keeps its snapshot."""
    ingest(services.engine, _track(1), NOW, after=services.after_ingest)
    with services.reader.connect() as reader:
        before = reader.execute(select(func.count()).select_from(events)).scalar_one()
        with services.engine.connect() as writer:
            raw = writer.connection.driver_connection
            if services.engine.dialect.name == "sqlite":
                raw.execute("PRAGMA busy_timeout=0")
            with writer.begin():
                writer.execute(text("SELECT 1"))  # BEGIN IMMEDIATE on SQLite: takes the lock
            if services.engine.dialect.name == "sqlite":
                raw.execute("PRAGMA busy_timeout=30000")
        ingest(services.engine, _track(2), NOW, after=services.after_ingest)
        same = reader.execute(select(func.count()).select_from(events)).scalar_one()
    assert before == 3
    if services.engine.dialect.name == "sqlite":
        assert same == before  # the reader's snapshot (PostgreSQL reads committed rows)
    with services.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 6


def test_the_active_model_is_read_without_a_write_transaction(services: Services) -> None:
    """On a fresh database the shipped model is installed once; after that the dashboard
    reads it through the reader."""
    first = services.active_model()
    with services.reader.connect() as conn:
        assert services.models.installed(conn) is not None
    assert services.active_model().content_hash == first.content_hash
