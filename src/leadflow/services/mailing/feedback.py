"""What comes back: opens, clicks, unsubscribes and bounces, recorded on the send and as
events on the lead's timeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select, update

from leadflow.adapters.db.tables import email_sends, leads, seminars
from leadflow.core import errors
from leadflow.core.lifecycle import withdrawal_method
from leadflow.services.events import EMAIL_CHANNEL, LeadEvent, record_events_in

if TYPE_CHECKING:
    from leadflow.bootstrap import Services


# --- what comes back: opens, clicks, unsubscribes, bounces ------------------------------


@dataclass(frozen=True)
class SendRef:
    id: int
    lead_id: int
    program_key: str | None
    step_id: str | None
    asset_key: str | None
    category: str
    to_email: str
    seminar_key: str | None = None

    @property
    def campaign(self) -> str | None:
        """What reports group this email under: its program, else its seminar."""
        return self.program_key or (f"seminar:{self.seminar_key}" if self.seminar_key else None)


def _send_ref(conn: Connection, send_id: int) -> SendRef | None:
    row = conn.execute(
        select(
            email_sends.c.id,
            email_sends.c.lead_id,
            email_sends.c.program_key,
            email_sends.c.step_id,
            email_sends.c.asset_key,
            email_sends.c.category,
            email_sends.c.to_email,
            seminars.c.key.label("seminar_key"),
        )
        .select_from(
            email_sends.join(leads, leads.c.id == email_sends.c.lead_id).outerjoin(
                seminars, seminars.c.id == email_sends.c.seminar_id
            )
        )
        .where(email_sends.c.id == send_id, leads.c.erased_at.is_(None))
    ).first()
    return None if row is None else SendRef(**row._mapping)


def _record_sent(conn: Connection, send_id: int, now: datetime) -> None:
    """An ``email_sent`` event on the lead's timeline (campaign reports count sends from
    it). The person did nothing, so scoring is not run for it: no shipped rule scores a
    send, and the next touch folds it in for models that do."""
    ref = _send_ref(conn, send_id)
    if ref is not None:
        record_events_in(conn, [_event(ref, "email_sent", now, f"email_sent:{send_id}")], now)


def _event(ref: SendRef, name: str, at: datetime, message_id: str, **extra: Any) -> LeadEvent:
    properties: dict[str, Any] = {
        "send_id": ref.id,
        "program": ref.program_key,
        "step": ref.step_id,
        **({"seminar": ref.seminar_key} if ref.seminar_key else {}),
        "asset_key": ref.asset_key,
        **extra,
    }
    return LeadEvent(
        lead_id=ref.lead_id,
        name=name,
        at=at,
        message_id=message_id,
        properties=properties,
        channel=EMAIL_CHANNEL,
        utm_source="leadflow",
        utm_medium="email",
        utm_campaign=ref.campaign,
    )


def record_open(services: Services, send_id: int, now: datetime) -> bool:
    """The pixel was loaded: ``opened_at`` (first time) and an ``email_open`` event, at
    most one per send and day so reloads do not add score. False for an unknown send."""
    with services.engine.begin() as conn:
        ref = _send_ref(conn, send_id)
        if ref is None:
            return False
        conn.execute(
            update(email_sends)
            .where(email_sends.c.id == send_id, email_sends.c.opened_at.is_(None))
            .values(opened_at=now)
        )
        day = now.astimezone(UTC).date().isoformat()
        record_events_in(
            conn,
            [_event(ref, "email_open", now, f"email_open:{send_id}:{day}")],
            now,
            after=services.after_ingest,
        )
    return True


def record_click(services: Services, send_id: int, url: str, now: datetime) -> bool:
    """A tracked link was followed: ``clicked_at`` (and ``opened_at``, images may be off)
    and an ``email_click`` event, at most one per send, link and day."""
    with services.engine.begin() as conn:
        ref = _send_ref(conn, send_id)
        if ref is None:
            return False
        conn.execute(
            update(email_sends)
            .where(email_sends.c.id == send_id, email_sends.c.clicked_at.is_(None))
            .values(clicked_at=now)
        )
        conn.execute(
            update(email_sends)
            .where(email_sends.c.id == send_id, email_sends.c.opened_at.is_(None))
            .values(opened_at=now)
        )
        day = now.astimezone(UTC).date().isoformat()
        link = hashlib.sha256(url.encode()).hexdigest()[:16]
        record_events_in(
            conn,
            [_event(ref, "email_click", now, f"email_click:{send_id}:{link}:{day}", url=url)],
            now,
            after=services.after_ingest,
        )
    return True


def unsubscribe(services: Services, send_id: int, now: datetime, *, method: str) -> str | None:
    """Stop marketing email to the send's lead: ``leads.unsubscribed_at``, the send's
    ``unsubscribed_at`` and an ``email_unsubscribe`` event (once per send). Returns the
    address, or None for an unknown send. Repeating it changes nothing."""
    with services.engine.begin() as conn:
        ref = _send_ref(conn, send_id)
        if ref is None:
            return None
        conn.execute(
            update(leads)
            .where(leads.c.id == ref.lead_id, leads.c.unsubscribed_at.is_(None))
            .values(unsubscribed_at=now, updated_at=now)
        )
        # The unsubscribe withdraws the marketing consent: the lead's consent reads
        # ``denied`` from now, with when and how (a later opt-in on a form grants it again).
        conn.execute(
            update(leads)
            .where(leads.c.id == ref.lead_id, leads.c.consent_status == "granted")
            .values(
                consent_status="denied",
                consent_at=now,
                consent_method=withdrawal_method(method),
                updated_at=now,
            )
        )
        conn.execute(
            update(email_sends)
            .where(email_sends.c.id == send_id, email_sends.c.unsubscribed_at.is_(None))
            .values(unsubscribed_at=now)
        )
        record_events_in(
            conn,
            [_event(ref, "email_unsubscribe", now, f"email_unsubscribe:{send_id}", method=method)],
            now,
            after=services.after_ingest,
        )
        return ref.to_email


def send_address(conn: Connection, send_id: int) -> str | None:
    return conn.execute(
        select(email_sends.c.to_email).where(email_sends.c.id == send_id)
    ).scalar_one_or_none()


class NotFound(errors.NotFound):
    pass


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record_hard_bounce(
    conn: Connection,
    services: Services,
    send_id: int | None,
    lead_id: int,
    reason: str,
    now: datetime,
    *,
    bounce_type: str = "hard",
    source: str = "smtp",
) -> bool:
    """A bounce: for hard ones ``leads.bounced_at`` (no more mail) and the send's
    ``bounced_at``; an ``email_bounce`` event either way. True when the event is new."""
    if bounce_type == "hard":
        conn.execute(
            update(leads)
            .where(leads.c.id == lead_id, leads.c.bounced_at.is_(None))
            .values(bounced_at=now, updated_at=now)
        )
        if send_id is not None:
            conn.execute(
                update(email_sends)
                .where(email_sends.c.id == send_id, email_sends.c.bounced_at.is_(None))
                .values(bounced_at=now)
            )
    properties: dict[str, Any] = {"bounce_type": bounce_type, "reason": reason[:500]}
    if send_id is not None:
        properties["send_id"] = send_id
        message_id = f"email_bounce:{send_id}:{bounce_type}"
    else:
        message_id = f"email_bounce:lead:{lead_id}:{bounce_type}:{_iso(now)}"
    if source != "smtp":
        properties["source"] = source
    return bool(
        record_events_in(
            conn,
            [
                LeadEvent(
                    lead_id=lead_id,
                    name="email_bounce",
                    at=now,
                    message_id=message_id,
                    properties=properties,
                    channel=EMAIL_CHANNEL,
                )
            ],
            now,
            after=services.after_ingest,
        )
    )


def record_bounce(
    services: Services,
    *,
    bounce_type: str,
    now: datetime,
    message_id: str | None = None,
    email: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """A bounce reported by the mail provider, by the send's Message-ID or by address.
    Hard: the lead gets no more email (``bounced_at``); soft: an event only."""
    if bounce_type not in ("hard", "soft"):
        raise ValueError("type: must be hard or soft")
    if (message_id is None) == (email is None):
        raise ValueError("give exactly one of message_id and email")
    with services.engine.begin() as conn:
        send_id: int | None = None
        if message_id is not None:
            wanted = message_id.strip()
            if not wanted.startswith("<"):
                wanted = f"<{wanted}>"
            row = conn.execute(
                select(email_sends.c.id, email_sends.c.lead_id).where(
                    email_sends.c.message_id == wanted
                )
            ).first()
            if row is None:
                raise NotFound(f"no email send with message_id {message_id}")
            send_id, lead_id = int(row.id), int(row.lead_id)
        else:
            address = (email or "").strip().lower()
            lead = conn.execute(
                select(leads.c.id).where(leads.c.email == address, leads.c.erased_at.is_(None))
            ).scalar_one_or_none()
            if lead is None:
                raise NotFound(f"no lead with email {address}")
            lead_id = int(lead)
            send_id = conn.execute(
                select(func.max(email_sends.c.id)).where(
                    email_sends.c.lead_id == lead_id, email_sends.c.status == "sent"
                )
            ).scalar_one_or_none()
        new = _record_hard_bounce(
            conn,
            services,
            send_id,
            lead_id,
            reason or f"{bounce_type} bounce reported",
            now,
            bounce_type=bounce_type,
            source="provider",
        )
    return {"lead_id": lead_id, "send_id": send_id, "type": bounce_type, "recorded": new}
