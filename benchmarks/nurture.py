"""Nurture throughput: 10,000 enrolled leads -> program steps planned -> emails delivered
to a real SMTP server on loopback, on SQLite and PostgreSQL.

For each backend: 10,000 leads with consent in the ``nurturing`` stage are stored; then,
timed separately, (1) ``sync_enrolments`` enrols them in the shipped education program,
(2) ``run_due_steps`` runs every due first step (next best content, send rules, frequency
cap, idempotent planning: one transaction per step), (3) ``deliver_planned`` composes each
email from its templates and hands it to an aiosmtpd server on 127.0.0.1 (in this
process, so it shares the CPU with the sender). The script checks that the SMTP server
received exactly one message per lead. ``--workers N`` runs N planning and N delivery
workers at once (threads with their own engines), as N ``leadflow worker`` processes
would. The load average is printed with the figures: the machine may be shared.

    python benchmarks/nurture.py [--leads 10000] [--backends sqlite,postgresql] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from _databases import each_database
from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

from leadflow.adapters.db import migrate
from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import accounts, email_sends, lead_states, leads
from leadflow.bootstrap import Services, build_services
from leadflow.services import mailing, nurture
from leadflow.settings import Settings

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
INDUSTRIES = ["Financial Services", "Manufacturing", "Transport & Logistics", "Retail", None]


class Counting:
    """aiosmtpd handler: counts messages and distinct Message-IDs."""

    def __init__(self) -> None:
        self.count = 0
        self.ids: set[bytes] = set()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        head = envelope.original_content.split(b"\r\n\r\n", 1)[0]
        mid = next(
            (
                ln.split(b":", 1)[1].strip()
                for ln in head.split(b"\r\n")
                if ln[:11].lower() == b"message-id:"
            ),
            b"",
        )
        with self.lock:
            self.count += 1
            self.ids.add(mid)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min)"


def seed(services: Services, n: int) -> None:
    with services.engine.begin() as conn:
        model = services.models.active(conn, NOW)
        account_ids = conn.execute(
            insert(accounts).returning(accounts.c.id),
            [
                {
                    "name": f"Company {i}",
                    "domain": f"company{i}.example",
                    "industry": INDUSTRIES[i % len(INDUSTRIES)],
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for i in range(max(1, n // 10))
            ],
        ).scalars()
        account_ids = list(account_ids)
        lead_ids = list(
            conn.execute(
                insert(leads).returning(leads.c.id),
                [
                    {
                        "email": f"person{i}@company{i % len(account_ids)}.example",
                        "first_name": f"Person{i}",
                        "account_id": account_ids[i % len(account_ids)],
                        "consent_status": "granted",
                        "attributes": {"locale": "ko"} if i % 2 else {},
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for i in range(n)
                ],
            ).scalars()
        )
        conn.execute(
            insert(lead_states),
            [
                {
                    "lead_id": lead_id,
                    "stage": "nurturing",
                    "stage_since": NOW,
                    "engagement": 10.0,
                    "fit": 50.0,
                    "scored_at": NOW,
                    "model_version": model.version,
                    "model_hash": model.content_hash,
                    "updated_at": NOW,
                }
                for lead_id in lead_ids
            ],
        )


def in_parallel(workers: int, job: Callable[[int], int]) -> tuple[int, float]:
    """Run ``job(i)`` in ``workers`` threads at once; returns (sum of results, seconds)."""
    results: list[int] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results.append(job(i))
        except BaseException as exc:
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(results), time.perf_counter() - started


def bench_backend(name: str, url: str, n: int, workers: int) -> None:
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    inbox = Counting()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings = Settings(
        database_url=url, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none"
    )
    main = build_services(settings)
    pool = [build_services(settings) for _ in range(workers)]
    try:
        seed(main, n)
        started = time.perf_counter()
        with main.engine.begin() as conn:
            enrolled = nurture.sync_enrolments(conn, main.models.active(conn, NOW), NOW).enrolled
        enrol_s = time.perf_counter() - started

        def plan(i: int) -> int:
            total = 0
            while True:
                report = nurture.run_due_steps(pool[i], NOW, f"bench-{i}", 500)
                total += report.planned
                if report.claimed == 0:
                    return total

        planned, plan_s = in_parallel(workers, plan)

        def deliver(i: int) -> int:
            total = 0
            with mailing.build_mailer(settings) as mailer:
                while True:
                    report = mailing.deliver_planned(
                        pool[i], mailer, NOW, worker_id=f"bench-{i}", limit=500
                    )
                    total += report.sent
                    if report.claimed == 0:
                        return total

        sent, send_s = in_parallel(workers, deliver)
        with main.engine.connect() as conn:
            stored = conn.execute(
                select(func.count()).select_from(email_sends).where(email_sends.c.status == "sent")
            ).scalar_one()
        print(
            f"[{name}] {n:,} leads: enrolled {enrolled:,} in {enrol_s:.2f} s "
            f"({enrolled / enrol_s:,.0f}/s); planned {planned:,} in {plan_s:.2f} s "
            f"({planned / plan_s:,.0f} planned/s); sent {sent:,} in {send_s:.2f} s "
            f"({sent / send_s:,.0f} sent/s); planned-and-sent {sent / (plan_s + send_s):,.0f}"
            f" emails/s; {load_average()}"
        )
        ok = planned == n and sent == n and stored == n and inbox.count == n
        ok = ok and len(inbox.ids) == n
        print(
            f"[{name}] check: SMTP server received {inbox.count:,} messages "
            f"({len(inbox.ids):,} distinct Message-IDs), {stored:,} rows sent: "
            + ("OK" if ok else "MISMATCH")
        )
        if not ok:
            raise SystemExit(1)
    finally:
        controller.stop()
        for svc in [main, *pool]:
            svc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=1, help="planning/delivery workers")
    args = parser.parse_args()
    print(
        f"nurture benchmark: {os.cpu_count()} CPUs, {args.leads:,} leads, "
        f"{args.workers} worker(s), {load_average()}"
    )
    for backend, url in each_database(args.backends):
        bench_backend(backend, url, args.leads, args.workers)


if __name__ == "__main__":
    main()
