"""The outbox read path (services/outbox.py): signals and stage changes through one
function, each batch handed over once it is done with, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, insert, select

from leadflow.adapters.db.tables import leads, signals, stage_changes
from leadflow.services import outbox

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def _lead(conn: Connection) -> int:
    return int(
        conn.execute(
            insert(leads)
            .values(email="o@acme.example", attributes={}, created_at=T0, updated_at=T0)
            .returning(leads.c.id)
        ).scalar_one()
    )


def _write(conn: Connection, lead_id: int, n: int, at: datetime, tag: str = "") -> None:
    common = {"lead_id": lead_id, "at": at, "rule": "r", "model_version": "v"}
    conn.execute(
        insert(signals),
        [{**common, "name": f"lead.s{tag}{i}", "data": {}, "created_at": at} for i in range(n)],
    )
    conn.execute(
        insert(stage_changes),
        [
            {**common, "from_stage": f"a{i}", "to_stage": f"b{i}", "recorded_at": at}
            for i in range(n)
        ],
    )


def _read(conn: Connection, now: datetime, batch: int = 500) -> list[tuple[str, int]]:
    return [(e.kind, e.id) for b in outbox.read_new(conn, now, batch) for e in b]


def test_signals_and_stage_changes_through_one_read_path(services):
    with services.engine.begin() as conn:
        lead_id = _lead(conn)
        _write(conn, lead_id, 2, T0)
        outbox.start(conn, T0)  # history before the start is never read
        _write(conn, lead_id, 3, T0, "new")
        new_signals = conn.execute(select(signals.c.id).order_by(signals.c.id)).scalars().all()
        new_stages = (
            conn.execute(select(stage_changes.c.id).order_by(stage_changes.c.id)).scalars().all()
        )
        later = T0 + timedelta(minutes=1)
        found = _read(conn, later, batch=2)
        assert found == [("signal", i) for i in new_signals[2:]] + [
            ("stage", i) for i in new_stages[2:]
        ]
        delivered = dict(conn.execute(select(signals.c.id, signals.c.delivered_at)).all())
        assert set(delivered.values()) == {T0, later}
        # Signals are handed over once; the last stage changes are read again (LOOKBACK:
        # late commits on PostgreSQL), so consumers are idempotent per (kind, id).
        assert _read(conn, later) == [("stage", i) for i in new_stages[2:]]


def test_a_consumer_that_stops_gets_its_batch_again(services):
    with services.engine.begin() as conn:
        lead_id = _lead(conn)
        outbox.start(conn, T0)
        _write(conn, lead_id, 3, T0)
        reader = outbox.read_new(conn, T0, batch=2)
        first = next(reader)
        second = next(reader)  # asking for it handed the first one over
        reader.close()  # stopped while working on the second
        assert [e.kind for e in first + second] == ["signal"] * 3
        again = _read(conn, T0)
        assert [("signal", e.id) for e in second] == again[:1]
        assert [k for k, _ in again[1:]] == ["stage"] * 3


def test_skip_hands_everything_over_to_nobody(services):
    with services.engine.begin() as conn:
        lead_id = _lead(conn)
        outbox.start(conn, T0)
        _write(conn, lead_id, 2, T0)
        outbox.skip(conn, T0)
        assert _read(conn, T0) == []
        _write(conn, lead_id, 1, T0, "new")
        assert [k for k, _ in _read(conn, T0)] == ["signal", "stage"]
