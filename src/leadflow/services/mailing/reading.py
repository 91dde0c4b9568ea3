"""Reading sends back (a list, one send) and the test send the CLI and the API offer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from leadflow.adapters.db.tables import email_sends
from leadflow.adapters.email import Mailer, build_mailer
from leadflow.services import privacy
from leadflow.services.mailing.composing import compose_test
from leadflow.settings import Settings

# --- reading -------------------------------------------------------------------------

SEND_COLUMNS = [
    "id",
    "lead_id",
    "to_email",
    "category",
    "program_key",
    "step_id",
    "seminar_id",
    "template",
    "asset_key",
    "subject",
    "status",
    "skip_reason",
    "attempts",
    "error",
    "message_id",
    "idempotency_key",
    "planned_at",
    "sent_at",
    "opened_at",
    "clicked_at",
    "unsubscribed_at",
    "bounced_at",
]
SEND_STATUSES = ("planned", "sending", "sent", "failed", "skipped")


def list_sends(
    conn: Connection,
    *,
    lead_id: int | None = None,
    status: str | None = None,
    program: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Sends, newest first."""
    if status is not None and status not in SEND_STATUSES:
        raise ValueError(f"status: must be one of {', '.join(SEND_STATUSES)}")
    query = select(*(email_sends.c[c] for c in SEND_COLUMNS))
    if lead_id is not None:
        query = query.where(email_sends.c.lead_id == lead_id)
    if status is not None:
        query = query.where(email_sends.c.status == status)
    if program is not None:
        query = query.where(email_sends.c.program_key == program)
    query = query.order_by(email_sends.c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]


def get_send(conn: Connection, send_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(*(email_sends.c[c] for c in SEND_COLUMNS)).where(email_sends.c.id == send_id)
    ).first()
    return None if row is None else dict(row._mapping)


def send_test(
    settings: Settings,
    to_email: str,
    template: str,
    now: datetime,
    mailer: Mailer | None = None,
    *,
    engine: Engine,
) -> str:
    """Send a test message; returns its Message-ID. Raises ValueError (unknown template),
    :class:`~leadflow.services.privacy.AddressSuppressed` (an erased address: never mailed)
    or :class:`~leadflow.adapters.email.DeliveryError`."""
    with engine.connect() as conn:
        privacy.refuse_suppressed(conn, to_email, "to")
    message = compose_test(settings, to_email, template, now)
    active = mailer or build_mailer(settings)
    with active:  # __enter__ returns the mailer itself
        active.send(message)
    return str(message["Message-ID"])
