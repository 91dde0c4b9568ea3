"""The worker pass: ended pauses, routing, SLA and webhooks, as `leadflow worker` runs it."""

from __future__ import annotations

from datetime import UTC, timedelta

from sqlalchemy import select
from tests.integration.test_handoff import T0, Clock, _lead_id, _mql

from leadflow.adapters.db.tables import assignments, lead_states
from leadflow.adapters.webhooks import HttpSender
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import handoff
from leadflow.services.worker import run_once


def _stage(services, lead_id):
    with services.engine.connect() as conn:
        return conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
        ).scalar_one()


def test_a_pass_ends_recycle_pauses_and_routes_waiting_mqls(client, services, write_key):
    clock = Clock(T0)
    services.clock = clock
    _mql(client, write_key, "eve", T0)
    lead_id = _lead_id(services, "eve")
    with services.engine.begin() as conn:
        model = services.models.active(conn, clock())
        handoff.accept(conn, model, lead_id, clock())
        handoff.not_now(conn, model, lead_id, clock())
    assert _stage(services, lead_id) == "recycle_a"
    with HttpSender() as sender:
        quiet = run_once(services, sender, now=clock())
        assert quiet.pauses_ended == 0 and _stage(services, lead_id) == "recycle_a"
        later = (T0 + timedelta(days=91)).astimezone(UTC)
        report = run_once(services, sender, now=later)
    assert report.pauses_ended == 1
    assert _stage(services, lead_id) == "nurturing"


def test_worker_command_runs_one_pass(client, services, write_key, db_url, capsys):
    _mql(client, write_key, "fay", T0)
    with services.engine.begin() as conn:
        conn.execute(assignments.delete())  # as if the hook had found no capacity
    assert run_guarded(app, ["worker", "--once", "--database-url", db_url]) == 0
    out = capsys.readouterr().out
    assert "routed 1" in out
    lead_id = _lead_id(services, "fay")
    with services.engine.connect() as conn:
        assert conn.execute(select(assignments.c.lead_id)).scalars().all() == [lead_id]
