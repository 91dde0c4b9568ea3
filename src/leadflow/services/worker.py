"""Due work, run by ``leadflow worker`` or by the worker thread inside ``leadflow serve``.

One pass (:func:`run_once`), each step in its own transaction:
1. emails a crashed worker left mid-hand-off are reconciled (never sent twice);
2. leads whose recycle pause has ended are recomputed (they return to nurturing);
3. predictions of the active predictive model are refreshed for leads that changed;
   sales: leads that became MQLs are queued and routed within today's capacity, and
   hand-offs past their SLA are escalated or re-routed;
4. segments are refreshed (joins and leaves; audience-sync signals);
5. nurture: leads enter and leave programs by stage, due program steps run (emails are
   planned); seminar reminders and follow-ups are planned; planned emails are delivered;
6. webhooks: new outbox rows (this pass's signals included) become deliveries and due
   deliveries are sent.
Every step is safe to run from several workers at once (row claims, SKIP LOCKED, leases).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from leadflow.adapters.db.tables import lead_states
from leadflow.adapters.email import Mailer
from leadflow.adapters.webhooks import HttpSender
from leadflow.bootstrap import Services
from leadflow.core.config import LeadModel
from leadflow.services import (
    handoff,
    lifecycle,
    mailing,
    nurture,
    predictive_store,
    segments,
    seminars,
    webhooks,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PassReport:
    pauses_ended: int = 0
    routed: int = 0
    escalated: int = 0
    rerouted: int = 0
    webhooks_queued: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0
    enrolled: int = 0
    enrolments_exited: int = 0
    steps_run: int = 0
    emails_planned: int = 0
    emails_skipped: int = 0
    emails_sent: int = 0
    emails_failed: int = 0
    emails_unconfirmed: int = 0
    segment_joins: int = 0
    segment_leaves: int = 0
    seminar_emails: int = 0
    predictions: int = 0

    def busy(self) -> bool:
        return any(getattr(self, f) for f in self.__slots__)  # type: ignore[attr-defined]


def worker_id() -> str:
    """This process and thread, as recorded on the due work it claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:64]


def build_mailer(services: Services) -> Mailer:
    """The mailer of ``services.settings`` (SMTP, or .eml files without an SMTP host)."""
    return mailing.build_mailer(services.settings)


def run_once(
    services: Services,
    sender: HttpSender,
    now: datetime | None = None,
    *,
    mailer: Mailer | None = None,
) -> PassReport:
    """One pass. ``mailer`` delivers planned emails; callers that run many passes build
    it once (:func:`build_mailer`); without one, a mailer is built from settings."""
    now = now or services.clock()
    report = PassReport()
    report.emails_unconfirmed = mailing.reconcile(services.engine, now).unconfirmed
    with services.engine.begin() as conn:
        model = services.models.active(conn, now)
        ended = list(
            conn.execute(
                select(lead_states.c.lead_id).where(
                    lead_states.c.pause_until.is_not(None), lead_states.c.pause_until <= now
                )
            ).scalars()
        )
        if ended:
            lifecycle.recompute(conn, ended, model, now, cache=services.states)
        report.pauses_ended = len(ended)
    with services.engine.begin() as conn:
        routed = handoff.route_due(conn, model, now, wait=False)
        report.routed = routed.routed
    with services.engine.begin() as conn:
        sla = handoff.process_sla(conn, model, now)
        report.escalated, report.rerouted = len(sla.escalated), len(sla.rerouted)
    report.predictions = predictive_store.refresh_predictions(services.engine, now, services.models)
    for joined, left in segments.refresh_all(services.engine, now).values():
        report.segment_joins += joined
        report.segment_leaves += left
    _nurture_pass(services, model, now, report, mailer)
    with services.engine.begin() as conn:
        report.webhooks_queued = webhooks.enqueue_new(conn, now, model)
    sent = webhooks.deliver_due(services.engine, now, sender)
    report.webhooks_delivered, report.webhooks_failed = sent.delivered, sent.failed + sent.dead
    return report


def _nurture_pass(
    services: Services, model: LeadModel, now: datetime, report: PassReport, mailer: Mailer | None
) -> None:
    with services.engine.begin() as conn:
        synced = nurture.sync_enrolments(conn, model, now)
    report.enrolled, report.enrolments_exited = synced.enrolled, synced.exited
    me = worker_id()
    steps = nurture.run_due_steps(services, now, me)
    report.steps_run = steps.claimed
    report.emails_planned = steps.planned
    report.emails_skipped = sum(steps.skipped.values())
    with services.engine.begin() as conn:
        report.seminar_emails = sum(seminars.run_due(conn, model, now).values())
    if mailer is None:
        mailer = build_mailer(services)
    delivered = mailing.deliver_planned(services, mailer, now, worker_id=me)
    report.emails_sent, report.emails_failed = delivered.sent, delivered.failed


class WorkerThread(threading.Thread):
    """The embedded worker of ``leadflow serve``: a pass every ``interval`` seconds; a
    failing pass is logged and retried at the next tick, never fatal to the server."""

    def __init__(self, services: Services, interval: float) -> None:
        super().__init__(name="leadflow-worker", daemon=True)
        self.services = services
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        allow = self.services.settings.webhooks_allow_private_targets
        mailer = build_mailer(self.services)
        with HttpSender(allow_private=allow) as sender:
            while not self.stopping.wait(self.interval):
                try:
                    run_once(self.services, sender, mailer=mailer)
                except Exception:  # keep serving: the next pass retries
                    log.exception("worker pass failed")

    def stop(self) -> None:
        self.stopping.set()
