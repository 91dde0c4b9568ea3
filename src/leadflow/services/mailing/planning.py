"""Planning a send: one ``email_sends`` row (status ``planned``) with a unique idempotency
key and a fixed Message-ID, written in the caller's transaction."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

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
    to_email = conn.execute(_LEAD_EMAIL, {"lead_id": lead_id}).scalar_one_or_none()
    if not to_email:
        return None
    result = conn.execute(
        _plan_insert(conn),
        {
            "idempotency_key": idempotency_key,
            "message_id": new_message_id(),
            "lead_id": lead_id,
            "category": category,
            "program_key": program_key,
            "step_id": step_id,
            "seminar_id": seminar_id,
            "template": template,
            "asset_key": asset_key,
            "to_email": to_email,
            "subject": subject,
            "status": "planned",
            "attempts": 0,
            "planned_at": now,
        },
    )
    return result.scalar_one_or_none()


# Built once: plan_email runs once per planned step.
_LEAD_EMAIL = select(leads.c.email).where(
    leads.c.id == bindparam("lead_id"), leads.c.erased_at.is_(None)
)
_PLAN_INSERT: dict[str, Any] = {}


def _plan_insert(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, per dialect; the
    values come as parameters."""
    name = conn.dialect.name
    stmt = _PLAN_INSERT.get(name)
    if stmt is None:
        stmt = insert_ignore(conn.engine, email_sends, "idempotency_key").returning(
            email_sends.c.id
        )
        _PLAN_INSERT[name] = stmt
    return stmt
