"""Email: planning a send, composing it, handing it to SMTP, recording what came back.

A send is first *planned*: a row in ``email_sends`` with a unique idempotency key and a
fixed RFC 5322 Message-ID, written in the same transaction as the decision that caused it
(a program step, a seminar invitation). Delivery is a separate step that claims planned
rows, composes the message and hands it to the mailer.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Connection, select

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import email_sends, leads

MESSAGE_ID_DOMAIN = "leadflow.invalid"


def new_message_id() -> str:
    return f"<{secrets.token_hex(16)}@{MESSAGE_ID_DOMAIN}>"


def plan_email(
    conn: Connection,
    *,
    idempotency_key: str,
    lead_id: int,
    subject: str,
    now: datetime,
    category: str = "marketing",
    template: str = "nurture",
    asset_key: str | None = None,
    program_key: str | None = None,
    step_id: str | None = None,
    seminar_id: int | None = None,
) -> int | None:
    """Plan one email (status ``planned``) inside the caller's transaction.

    Returns the new row's id, or ``None`` when a send with this idempotency key already
    exists (the same step to the same lead is never planned twice) or the lead has no
    address. Rules (consent, unsubscribes, caps) are the caller's: see
    :func:`leadflow.services.nurture.send_blockers`.
    """
    to_email = conn.execute(
        select(leads.c.email).where(leads.c.id == lead_id, leads.c.erased_at.is_(None))
    ).scalar_one_or_none()
    if not to_email:
        return None
    result = conn.execute(
        insert_ignore(conn.engine, email_sends, "idempotency_key")
        .values(
            idempotency_key=idempotency_key,
            message_id=new_message_id(),
            lead_id=lead_id,
            category=category,
            program_key=program_key,
            step_id=step_id,
            seminar_id=seminar_id,
            template=template,
            asset_key=asset_key,
            to_email=to_email,
            subject=subject,
            status="planned",
            attempts=0,
            planned_at=now,
        )
        .returning(email_sends.c.id)
    )
    return result.scalar_one_or_none()

