"""Due work, run by ``leadflow worker`` or by the worker thread inside ``leadflow serve``.

One pass (:func:`run_once`), each step in its own transaction:
1. leads whose recycle pause has ended are recomputed (they return to nurturing);
2. sales: leads that became MQLs are queued and routed within today's capacity, and
   hand-offs past their SLA are escalated or re-routed;
3. webhooks: new outbox rows become deliveries and due deliveries are sent.
Every step is safe to run from several workers at once (row claims, advisory locks).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from leadflow.adapters.db.tables import lead_states
from leadflow.adapters.webhooks import HttpSender
from leadflow.bootstrap import Services
from leadflow.services import handoff, lifecycle, webhooks

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

    def busy(self) -> bool:
        return any(getattr(self, f) for f in self.__slots__)  # type: ignore[attr-defined]


def run_once(services: Services, sender: HttpSender, now: datetime | None = None) -> PassReport:
    now = now or services.clock()
    report = PassReport()
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
    with services.engine.begin() as conn:
        report.webhooks_queued = webhooks.enqueue_new(conn, now)
    sent = webhooks.deliver_due(services.engine, now, sender)
    report.webhooks_delivered, report.webhooks_failed = sent.delivered, sent.failed + sent.dead
    return report


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
        with HttpSender(allow_private=allow) as sender:
            while not self.stopping.wait(self.interval):
                try:
                    run_once(self.services, sender)
                except Exception:  # keep serving: the next pass retries
                    log.exception("worker pass failed")

    def stop(self) -> None:
        self.stopping.set()
