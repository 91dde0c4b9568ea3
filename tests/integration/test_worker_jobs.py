"""Worker jobs are isolated: a job that raises (in Python or in SQL) is logged with its name
and counted, and every other job of that pass, and later passes, still run. On SQLite and
PostgreSQL."""

from __future__ import annotations

import logging
import time
from datetime import UTC, timedelta

from sqlalchemy import select, text
from tests.integration.test_handoff import T0, Clock, _lead_id, _mql

from leadflow.adapters.db.tables import lead_states
from leadflow.adapters.webhooks import HttpSender
from leadflow.services import handoff, worker
from leadflow.services.worker import JOBS, Job, PassContext, WorkerThread, run_once


def explode(ctx: PassContext) -> None:
    raise RuntimeError(f"deliberate failure at {ctx.now:%Y-%m-%d}")


def broken_sql(ctx: PassContext) -> None:
    with ctx.services.engine.begin() as conn:
        conn.execute(text("UPDATE lead_states SET stage = 'x' WHERE lead_id < 0"))
        conn.execute(text("SELECT * FROM no_such_table"))


# The failing jobs first and in the middle: whatever follows them must still run.
FAILING = (Job("explode", explode), *JOBS[:3], Job("broken_sql", broken_sql), *JOBS[3:])


def _stage(services, lead_id):
    with services.engine.connect() as conn:
        return conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
        ).scalar_one()


def _recycled(client, services, write_key, name):
    clock = Clock(T0)
    services.clock = clock
    _mql(client, write_key, name, T0)
    lead_id = _lead_id(services, name)
    with services.engine.begin() as conn:
        model = services.models.active(conn, clock())
        handoff.accept(conn, model, lead_id, clock())
        handoff.not_now(conn, model, lead_id, clock())
    assert _stage(services, lead_id) == "recycle_a"
    return lead_id


def test_a_failing_job_never_stops_the_others_of_its_pass(client, services, write_key, caplog):
    lead_id = _recycled(client, services, write_key, "gus")
    later = (T0 + timedelta(days=91)).astimezone(UTC)
    with HttpSender() as sender, caplog.at_level(logging.ERROR, logger=worker.__name__):
        report = run_once(services, sender, now=later, jobs=FAILING)
    assert set(report.failed_jobs) == {"explode", "broken_sql"}
    assert report.failed_jobs["explode"] == f"RuntimeError: deliberate failure at {later:%Y-%m-%d}"
    assert "no_such_table" in report.failed_jobs["broken_sql"]
    assert report.pauses_ended == 1 and _stage(services, lead_id) == "nurturing"
    assert report.busy()
    logged = [r.getMessage() for r in caplog.records]
    assert "worker job explode failed" in logged and "worker job broken_sql failed" in logged
    # Every job after the failures ran: the same pass without them reports the same work
    # left to do (none), and the jobs after broken_sql found a working connection.
    with HttpSender() as sender:
        again = run_once(services, sender, now=later)
    assert again.failed_jobs == {} and again.pauses_ended == 0


def test_a_failing_job_never_stops_later_passes(client, services, write_key):
    lead_id = _recycled(client, services, write_key, "hal")
    ran: list[str] = []

    def after(ctx: PassContext) -> None:
        ran.append(ctx.now.isoformat())

    services.clock = lambda: (T0 + timedelta(days=91)).astimezone(UTC)
    thread = WorkerThread(services, 0.05, jobs=(*FAILING, Job("after", after)))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while thread.passes < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        thread.stop()
        thread.join(timeout=60)
    assert thread.passes >= 3 and len(ran) >= 3
    assert thread.job_failures["explode"] >= 3 and thread.job_failures["broken_sql"] >= 3
    assert set(thread.job_failures) == {"explode", "broken_sql"}
    assert thread.last_errors["explode"].startswith("RuntimeError: deliberate failure")
    assert _stage(services, lead_id) == "nurturing"


def test_the_worker_command_names_a_failed_job_and_fails(monkeypatch, services, db_url, capsys):
    from leadflow.entrypoints.cli import app
    from leadflow.entrypoints.cli.common import run_guarded

    monkeypatch.setattr(worker, "JOBS", (Job("explode", explode), *JOBS))  # registered
    assert run_guarded(app, ["worker", "--once", "--database-url", db_url]) == 1
    captured = capsys.readouterr()
    assert "job explode failed: RuntimeError: deliberate failure" in captured.err
    assert "pauses ended 0" in captured.out
