"""Due work, run by ``leadflow worker`` or by the worker thread inside ``leadflow serve``.

One pass (:func:`run_once`) runs the jobs of :data:`JOBS` in order, each in its own
transaction(s) and isolated: a job that raises is logged with its name and counted
(``PassReport.failed_jobs``, ``WorkerThread.job_failures``) and the other jobs of the pass,
and later passes, run as usual. The jobs:
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
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from leadflow.adapters.db import claims
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
    failed_jobs: dict[str, str] = field(default_factory=dict)
    """Job name -> the error it raised in this pass (the other jobs ran)."""

    def busy(self) -> bool:
        return any(getattr(self, f) for f in self.__slots__)


def worker_id() -> str:
    """This process and thread, as recorded on the work it claims."""
    return claims.worker_name()


def build_mailer(services: Services) -> Mailer:
    """The mailer of ``services.settings`` (SMTP, or .eml files without an SMTP host)."""
    return mailing.build_mailer(services.settings)


@dataclass(slots=True)
class PassContext:
    """What the jobs of one pass share: services, time, the report they fill in. The active
    model and the mailer are loaded when a job first asks (a failure to load fails the jobs
    that need them, not the others)."""

    services: Services
    sender: HttpSender
    now: datetime
    report: PassReport
    _mailer: Mailer | None = None
    _model: LeadModel | None = None

    @property
    def model(self) -> LeadModel:
        if self._model is None:
            with self.services.engine.begin() as conn:
                self._model = self.services.models.active(conn, self.now)
        return self._model

    @property
    def mailer(self) -> Mailer:
        if self._mailer is None:
            self._mailer = build_mailer(self.services)
        return self._mailer


@dataclass(frozen=True, slots=True)
class Job:
    """One job of a worker pass: a name (in logs and failure counts) and what it does."""

    name: str
    run: Callable[[PassContext], None]


def _reconcile_email(ctx: PassContext) -> None:
    ctx.report.emails_unconfirmed = mailing.reconcile(ctx.services.engine, ctx.now).unconfirmed


def _end_pauses(ctx: PassContext) -> None:
    model, now = ctx.model, ctx.now
    with ctx.services.engine.begin() as conn:
        ended = list(
            conn.execute(
                select(lead_states.c.lead_id).where(
                    lead_states.c.pause_until.is_not(None), lead_states.c.pause_until <= now
                )
            ).scalars()
        )
        if ended:
            lifecycle.recompute(conn, ended, model, now, cache=ctx.services.states)
    ctx.report.pauses_ended = len(ended)


def _route(ctx: PassContext) -> None:
    model = ctx.model
    with ctx.services.engine.begin() as conn:
        ctx.report.routed = handoff.route_due(conn, model, ctx.now, wait=False).routed


def _sla(ctx: PassContext) -> None:
    model = ctx.model
    with ctx.services.engine.begin() as conn:
        sla = handoff.process_sla(conn, model, ctx.now)
    ctx.report.escalated, ctx.report.rerouted = len(sla.escalated), len(sla.rerouted)


def _predictions(ctx: PassContext) -> None:
    services = ctx.services
    ctx.report.predictions = predictive_store.refresh_predictions(
        services.engine, ctx.now, services.models
    )


def _segments(ctx: PassContext) -> None:
    for joined, left in segments.refresh_all(ctx.services.engine, ctx.now).values():
        ctx.report.segment_joins += joined
        ctx.report.segment_leaves += left


def _enrol(ctx: PassContext) -> None:
    model = ctx.model
    with ctx.services.engine.begin() as conn:
        synced = nurture.sync_enrolments(conn, model, ctx.now)
    ctx.report.enrolled, ctx.report.enrolments_exited = synced.enrolled, synced.exited


def _program_steps(ctx: PassContext) -> None:
    steps = nurture.run_due_steps(ctx.services, ctx.now, worker_id())
    ctx.report.steps_run = steps.claimed
    ctx.report.emails_planned = steps.planned
    ctx.report.emails_skipped = sum(steps.skipped.values())


def _seminars(ctx: PassContext) -> None:
    model = ctx.model
    with ctx.services.engine.begin() as conn:
        ctx.report.seminar_emails = sum(seminars.run_due(conn, model, ctx.now).values())


def _deliver_email(ctx: PassContext) -> None:
    delivered = mailing.deliver_planned(ctx.services, ctx.mailer, ctx.now, worker_id=worker_id())
    ctx.report.emails_sent, ctx.report.emails_failed = delivered.sent, delivered.failed


def _enqueue_webhooks(ctx: PassContext) -> None:
    model = ctx.model
    with ctx.services.engine.begin() as conn:
        ctx.report.webhooks_queued = webhooks.enqueue_new(conn, ctx.now, model)


def _deliver_webhooks(ctx: PassContext) -> None:
    sent = webhooks.deliver_due(ctx.services.engine, ctx.now, ctx.sender)
    ctx.report.webhooks_delivered, ctx.report.webhooks_failed = (
        sent.delivered,
        sent.failed + sent.dead,
    )


JOBS: tuple[Job, ...] = (
    Job("email.reconcile", _reconcile_email),
    Job("lifecycle.pauses", _end_pauses),
    Job("handoff.route", _route),
    Job("handoff.sla", _sla),
    Job("predictions", _predictions),
    Job("segments", _segments),
    Job("nurture.enrol", _enrol),
    Job("nurture.steps", _program_steps),
    Job("seminars", _seminars),
    Job("email.deliver", _deliver_email),
    Job("webhooks.enqueue", _enqueue_webhooks),
    Job("webhooks.deliver", _deliver_webhooks),
)
"""The jobs of a pass, in order (this pass's signals reach webhooks in the same pass)."""


def run_once(
    services: Services,
    sender: HttpSender,
    now: datetime | None = None,
    *,
    mailer: Mailer | None = None,
    jobs: Sequence[Job] | None = None,
) -> PassReport:
    """One pass of ``jobs`` (by default :data:`JOBS`, read at each call). ``mailer``
    delivers planned emails; callers that run many passes build it once
    (:func:`build_mailer`); without one, a mailer is built from settings. A job that raises
    is logged and named in ``failed_jobs``; the others still run."""
    ctx = PassContext(services, sender, now or services.clock(), PassReport(), _mailer=mailer)
    for job in JOBS if jobs is None else jobs:
        try:
            job.run(ctx)
        except Exception as exc:  # isolated: the other jobs, and the next pass, still run
            log.exception("worker job %s failed", job.name)
            ctx.report.failed_jobs[job.name] = f"{exc.__class__.__name__}: {exc}"[:500]
    return ctx.report


class WorkerThread(threading.Thread):
    """The embedded worker of ``leadflow serve``: a pass every ``interval`` seconds. A
    failing job is logged and counted (``job_failures``, ``last_errors``) and never stops
    the other jobs, the next pass or the server."""

    def __init__(self, services: Services, interval: float, *, jobs: Sequence[Job] = JOBS) -> None:
        super().__init__(name="leadflow-worker", daemon=True)
        self.services = services
        self.interval = interval
        self.jobs = None if jobs is None else tuple(jobs)
        self.stopping = threading.Event()
        self.passes = 0
        self.job_failures: Counter[str] = Counter()
        """Job name -> passes in which it failed, since the thread started."""
        self.last_errors: dict[str, str] = {}

    def run(self) -> None:
        allow = self.services.settings.webhooks_allow_private_targets
        mailer = build_mailer(self.services)
        with HttpSender(allow_private=allow) as sender:
            while not self.stopping.wait(self.interval):
                try:
                    report = run_once(self.services, sender, mailer=mailer, jobs=self.jobs)
                except Exception:  # keep serving: the next pass retries
                    log.exception("worker pass failed")
                    continue
                self.passes += 1
                self.job_failures.update(report.failed_jobs.keys())
                self.last_errors.update(report.failed_jobs)

    def stop(self) -> None:
        self.stopping.set()
