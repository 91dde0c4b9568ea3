"""Two workers at once on PostgreSQL over 1,000 due program steps: every step is planned
exactly once, and delivered exactly once to a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

from leadflow.adapters.db.tables import due_work, email_sends, lead_states, leads
from leadflow.bootstrap import Services, build_services
from leadflow.services import mailing, nurture
from leadflow.settings import Settings

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
N = 1000


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def seed_leads(services: Services, n: int) -> None:
    with services.engine.begin() as conn:
        model = services.models.active(conn, T0)
        ids = conn.execute(
            insert(leads).returning(leads.c.id),
            [
                {
                    "email": f"p{i}@load{i % 50}.example",
                    "first_name": f"P{i}",
                    "consent_status": "granted",
                    "attributes": {},
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i in range(n)
            ],
        ).scalars()
        conn.execute(
            insert(lead_states),
            [
                {
                    "lead_id": lead_id,
                    "stage": "nurturing",
                    "stage_since": T0,
                    "engagement": 0.0,
                    "fit": 0.0,
                    "scored_at": T0,
                    "model_version": model.version,
                    "model_hash": model.content_hash,
                    "updated_at": T0,
                }
                for lead_id in list(ids)
            ],
        )
        assert nurture.sync_enrolments(conn, model, T0).enrolled == n


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_workers_plan_and_deliver_every_step_exactly_once(db_url, services, smtp):
    inbox, port = smtp
    seed_leads(services, N)
    settings = Settings(
        database_url=db_url, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none"
    )
    workers = [build_services(settings) for _ in range(2)]  # separate engines and pools
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    reports: list[nurture.StepReport] = []
    delivered: list[mailing.DeliveryReport] = []

    def work(svc: Services, name: str) -> None:
        try:
            barrier.wait()
            while True:
                report = nurture.run_due_steps(svc, T0, name, 50)
                reports.append(report)
                if report.claimed == 0:
                    break
            barrier.wait()
            with mailing.build_mailer(svc.settings) as mailer:
                while True:
                    sent = mailing.deliver_planned(svc, mailer, T0, worker_id=name, limit=100)
                    delivered.append(sent)
                    if sent.claimed == 0:
                        break
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=work, args=(svc, f"worker-{i}")) for i, svc in enumerate(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for svc in workers:
        svc.close()
    assert errors == []

    assert sum(r.planned for r in reports) == N
    assert sum(r.duplicates + r.stale + r.failed for r in reports) == 0
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(email_sends.c.idempotency_key, email_sends.c.status, email_sends.c.lead_id)
        ).all()
        first_steps = conn.execute(
            select(due_work.c.status, due_work.c.attempts, due_work.c.claimed_by).where(
                due_work.c.key.like("%:0")
            )
        ).all()
        pending_next = conn.execute(
            select(func.count()).select_from(due_work).where(due_work.c.key.like("%:1"))
        ).scalar_one()
    assert len(rows) == N
    assert len({r.idempotency_key for r in rows}) == N
    assert len({r.lead_id for r in rows}) == N
    assert len(first_steps) == N
    assert all(s.status == "done" and s.attempts == 0 for s in first_steps)
    assert pending_next == N  # each enrolment moved on exactly one step
    claimed_by = Counter(s.claimed_by for s in first_steps)
    assert set(claimed_by) == {"worker-0", "worker-1"}  # both workers took a share

    # delivery: each planned email reached the SMTP server exactly once
    assert sum(d.sent for d in delivered) == N
    assert Counter(r.status for r in rows) == {"sent": N}
    assert len(inbox.messages) == N
    received = Counter(m["Message-ID"] for m in inbox.messages)
    assert len(received) == N and max(received.values()) == 1
    assert {m["To"] for m in inbox.messages} == {f"p{i}@load{i % 50}.example" for i in range(N)}
