"""Delivery: claiming planned sends under a lease, handing each to the mailer (SMTP or
files), retrying temporary failures, and reconciling sends a stopped worker left behind."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, bindparam, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from leadflow.adapters.db import claims
from leadflow.adapters.db.tables import email_sends
from leadflow.adapters.email import DeliveryError, Mailer
from leadflow.core.config import LeadModel
from leadflow.core.retry import EMAIL_RETRY
from leadflow.services.mailing.composing import compose
from leadflow.services.mailing.feedback import _record_hard_bounce, _record_sent

if TYPE_CHECKING:
    from leadflow.bootstrap import Services


log = logging.getLogger(__name__)


# --- delivery -------------------------------------------------------------------------

# Temporary failures are retried after these delays (attempt 1 failed -> wait 5 minutes,
# ...); the attempt after the last delay is the final one.
# (core.retry.EMAIL_RETRY; the two names below are its figures, kept for callers)
RETRY_DELAYS = EMAIL_RETRY.delays
MAX_ATTEMPTS = EMAIL_RETRY.max_attempts or len(RETRY_DELAYS) + 1
UNCONFIRMED = "unconfirmed: worker stopped during SMTP hand-off"
# How long a worker holds the rows it claimed (``lease_until``): long enough for a whole
# pass (every message composed and handed to SMTP, each command up to smtp_timeout).
LEASE = timedelta(minutes=15)
# Kept for callers: reconcile's default ``stale_after`` is the lease itself.
RECONCILE_AFTER = LEASE
# Re-checked at delivery time: everything but the frequency cap, which counted this very
# send when it was planned (counting it again would block it).
_NOT_RECHECKED = frozenset({"frequency_cap"})

# The states of a row, in columns:
#   planned, lease_until null             waiting; due when next_attempt_at is null or past
#   planned, claimed_by + lease_until     claimed by a worker, not yet given to SMTP;
#                                         next_attempt_at = lease_until hides it from others
#   sending, claimed_by + lease_until     being handed to SMTP right now
#   sent / failed / skipped               final; claimed_by names the last worker
# A claim is identified by (claimed_by, lease_until): every later write of the worker
# checks both, so a claim that reconcile took back is never written over.
_e = email_sends.c
# Due planned rows, oldest planned first; a claim also moves ``next_attempt_at`` to the
# lease end (adapters.db.claims does the rest: skip held rows, the lease, the dialects).
WORK = claims.WorkTable(
    email_sends,
    ready=and_(
        _e.status == "planned",
        or_(_e.next_attempt_at.is_(None), _e.next_attempt_at <= bindparam(claims.NOW)),
    ),
    order_by=(_e.planned_at, _e.id),
    on_claim={"next_attempt_at": bindparam(claims.UNTIL)},
)
_CLAIMED_ROWS = (
    select(email_sends).where(_e.id.in_(bindparam("ids", expanding=True))).order_by(_e.id)
)
_MINE = claims.held(email_sends)
_SKIP = (
    update(email_sends)
    .where(_e.id == bindparam("send_id"), _e.status == "planned", _MINE)
    .values(
        status="skipped",
        skip_reason=bindparam("reason"),
        error=None,
        next_attempt_at=None,
        lease_until=None,
    )
)
_HAND_OFF = (
    update(email_sends)
    .where(_e.id == bindparam("send_id"), _e.status == "planned", _MINE)
    .values(status="sending")
)
_OUTCOME = (
    update(email_sends)
    .where(_e.id == bindparam("send_id"), _e.status.in_(("planned", "sending")), _MINE)
    .values(
        status=bindparam("new_status"),
        error=bindparam("new_error"),
        attempts=bindparam("new_attempts"),
        sent_at=bindparam("new_sent_at"),
        next_attempt_at=bindparam("retry_at"),
        lease_until=None,
    )
)


@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    skipped: int = 0
    retrying: int = 0
    failed: int = 0
    bounced: int = 0
    # Claimed but given back untried (the SMTP server was unreachable).
    released: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class ReconcileReport:
    requeued: int = 0  # claimed, never handed to SMTP: planned again
    unconfirmed: int = 0  # in the middle of the hand-off: marked sent, never resent


def _blockers(
    conn: Connection, rows: Sequence[Any], model: LeadModel, now: datetime
) -> dict[int, str]:
    """Send id -> why it may not go out now: the send rules of
    :func:`leadflow.services.nurture.send_blockers`, minus the frequency cap."""
    # Imported here: the nurture service plans email through this module.
    from leadflow.services.nurture import send_blockers

    by_category: dict[str, list[Any]] = {}
    for row in rows:
        by_category.setdefault(row.category, []).append(row)
    found: dict[int, str] = {}
    for category, group in by_category.items():
        reasons = send_blockers(conn, [r.lead_id for r in group], category, model, now)
        for row in group:
            reason = reasons.get(row.lead_id)
            if reason and reason not in _NOT_RECHECKED:
                found[row.id] = reason
    return found


def deliver_planned(
    services: Services, mailer: Mailer, now: datetime, *, worker_id: str, limit: int = 500
) -> DeliveryReport:
    """Deliver up to ``limit`` due planned emails through ``mailer``.

    1. Claim: due rows (``planned``, ``next_attempt_at`` null or past) get ``claimed_by``
       = ``worker_id`` and ``lease_until`` = ``now`` + :data:`LEASE`, committed before
       anything goes to SMTP, through the claim mechanism every worker uses
       (:mod:`leadflow.adapters.db.claims`): several workers claim disjoint rows.
       ``next_attempt_at`` moves to the lease end, so the row is not due while it is held.
    2. Re-check the send rules (consent, unsubscribe, bounce, stage, pause may have changed
       since planning): a blocked row is ``skipped`` with the reason.
    3. For each row: commit status ``sending`` (the hand-off), give the message to SMTP,
       then record the outcome (``sent``; a temporary failure goes back to ``planned`` with
       ``next_attempt_at`` after :data:`RETRY_DELAYS` until :data:`MAX_ATTEMPTS`; a
       permanent one is ``failed``, and a 5xx on RCPT is a hard bounce). The outcome of one
       row is committed with the hand-off of the next, so there is one commit per message.

    A crash leaves at most one row ``sending``: :func:`reconcile` marks it sent and
    unconfirmed rather than risk a second copy.
    """
    report = DeliveryReport()
    lease = now + LEASE
    ids = sorted(claims.claim(services.engine, WORK, worker_id, now, lease, limit))
    report.claimed = len(ids)
    if not ids:
        return report
    mine = claims.mine(worker_id, lease)
    with services.engine.begin() as conn:
        model = services.models.active(conn, now)
        rows = list(conn.execute(_CLAIMED_ROWS, {"ids": ids}))
        blocked = _blockers(conn, rows, model, now)
        if blocked:
            conn.execute(
                _SKIP,
                [{"send_id": i, "reason": r[:64], **mine} for i, r in blocked.items()],
            )
        report.skipped = len(blocked)
    todo = [r for r in rows if r.id not in blocked]
    pending: list[Callable[[Connection], object]] = []
    try:
        with mailer:
            _hand_over(services, mailer, model, now, mine, todo, pending, report)
    finally:
        # Outcomes so far, then every row still only claimed (never handed to SMTP, e.g.
        # after an unreachable server or an unexpected error) back to due.
        with services.engine.begin() as conn:
            for apply in pending:
                apply(conn)
            pending.clear()
            claims.release(
                conn,
                WORK,
                [r.id for r in todo],
                worker_id,
                lease,
                values={"next_attempt_at": None},
                where=_e.status == "planned",
            )
    return report


def _outcome(
    send_id: int,
    mine: Mapping[str, Any],
    *,
    status: str,
    error: str | None,
    attempts: int,
    sent_at: datetime | None = None,
    retry_at: datetime | None = None,
) -> Callable[[Connection], None]:
    params = {
        "send_id": send_id,
        "new_status": status,
        "new_error": error,
        "new_attempts": attempts,
        "new_sent_at": sent_at,
        "retry_at": retry_at,
        **mine,
    }

    def apply(conn: Connection) -> None:
        conn.execute(_OUTCOME, params)

    return apply


def _hand_over(
    services: Services,
    mailer: Mailer,
    model: LeadModel,
    now: datetime,
    mine: Mapping[str, Any],
    todo: Sequence[Any],
    pending: list[Callable[[Connection], object]],
    report: DeliveryReport,
) -> None:
    engine, settings = services.engine, services.settings
    key = services.signing.current()  # before any transaction: it may create the key
    for index, row in enumerate(todo):
        # One transaction per message: the previous outcomes, composing, the hand-off.
        message: EmailMessage | None = None
        handed, error = 0, ""
        with engine.begin() as conn:
            for apply in pending:
                apply(conn)
            try:
                message = compose(conn, settings, row, model, key=key, now=now)
            except SQLAlchemyError:
                raise
            except Exception as exc:  # a broken template or address: not worth retrying
                log.exception("cannot compose email send %s", row.id)
                error = f"compose: {exc.__class__.__name__}: {exc}"[:1000]
            else:
                handed = conn.execute(_HAND_OFF, {"send_id": row.id, **mine}).rowcount
        pending.clear()  # committed
        if message is None:
            pending.append(
                _outcome(row.id, mine, status="failed", error=error, attempts=row.attempts)
            )
            report.failed += 1
            report.errors.append(error)
            continue
        if handed != 1:
            # reconcile() took the claim back (this pass outlived its lease); whoever holds
            # the row now sends it.
            report.released += 1
            continue
        attempts = row.attempts + 1
        try:
            mailer.send(message)
        except DeliveryError as exc:
            report.errors.append(str(exc))
            retry_at = EMAIL_RETRY.next_at(attempts, now) if exc.temporary else None
            if retry_at is not None:
                pending.append(
                    _outcome(
                        row.id,
                        mine,
                        status="planned",
                        error=str(exc)[:1000],
                        attempts=attempts,
                        retry_at=retry_at,
                    )
                )
                report.retrying += 1
                if exc.code is None:
                    # The server is unreachable: the rest go back untried (released).
                    report.released += len(todo) - index - 1
                    break
                continue
            reason = str(exc) if not exc.temporary else f"gave up after {attempts} attempts: {exc}"
            pending.append(
                _outcome(row.id, mine, status="failed", error=reason[:1000], attempts=attempts)
            )
            report.failed += 1
            if exc.hard_bounce:
                pending.append(
                    partial(
                        _record_hard_bounce,
                        services=services,
                        send_id=row.id,
                        lead_id=row.lead_id,
                        reason=str(exc),
                        now=now,
                    )
                )
                report.bounced += 1
            continue
        pending.append(
            _outcome(row.id, mine, status="sent", error=None, attempts=attempts, sent_at=now)
        )
        pending.append(partial(_record_sent, send_id=row.id, now=now))
        report.sent += 1


def reconcile(
    engine: Engine, now: datetime, stale_after: timedelta = RECONCILE_AFTER
) -> ReconcileReport:
    """Rows a stopped worker left claimed for longer than ``stale_after`` (by default: whose
    lease has run out, ``lease_until < now``).

    A row only *claimed* (status ``planned``) never reached SMTP: its claim is cleared and it
    is due again (it will be sent). A row ``sending`` was in the middle of the hand-off and
    may have been accepted by the server before the worker died, and the protocol cannot
    tell: it is marked ``sent`` with ``error='unconfirmed: worker stopped during SMTP
    hand-off'`` and never resent automatically, because a duplicate email is worse than a
    rare lost one (an operator can see these rows in ``GET /api/email/sends?status=sent``
    and resend by hand). ``stale_after`` must exceed the longest SMTP hand-off.
    """
    report = ReconcileReport()
    # A claim taken at t has lease_until = t + LEASE; it is stale once t < now - stale_after.
    cutoff = now - stale_after + LEASE
    with engine.begin() as conn:
        query = select(_e.id, _e.status, _e.lease_until).where(
            or_(
                and_(_e.status == "planned", _e.lease_until < cutoff),
                # No lease at all: left by an older version, so stale.
                and_(
                    _e.status == "sending",
                    or_(_e.lease_until.is_(None), _e.lease_until < cutoff),
                ),
            )
        )
        for row in conn.execute(claims.lock_free(conn, query)).all():
            if row.status == "planned":
                conn.execute(
                    update(email_sends)
                    .where(_e.id == row.id, _e.status == "planned")
                    .values(next_attempt_at=None, claimed_by=None, lease_until=None)
                )
                report.requeued += 1
            else:
                handed_at = row.lease_until - LEASE if row.lease_until is not None else now
                conn.execute(
                    update(email_sends)
                    .where(_e.id == row.id, _e.status == "sending")
                    .values(status="sent", sent_at=handed_at, error=UNCONFIRMED, lease_until=None)
                )
                report.unconfirmed += 1
    return report
