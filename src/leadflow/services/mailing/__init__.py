"""Email: planning a send, composing it, handing it to SMTP, recording what came back.

A send is first *planned*: a row in ``email_sends`` with a unique idempotency key and a
fixed RFC 5322 Message-ID, written in the same transaction as the decision that caused it
(a program step, a seminar invitation). Delivery is a separate step that claims planned
rows, composes the message and hands it to the mailer.

One module per step: ``planning`` (the planned row), ``composing`` (templates, tracked
links, the message), ``delivery`` (claims, the mailer, retries, reconcile), ``feedback``
(opens, clicks, unsubscribes, bounces) and ``reading`` (listing sends, the test send).
Import the names from this package (``from leadflow.services import mailing``).
"""

from __future__ import annotations

from leadflow.adapters.email import build_mailer
from leadflow.services.mailing.composing import (
    DEFAULT_TEMPLATE,
    SMTP_POLICY,
    TEMPLATE_DIR,
    _rewrite_links,
    brand_name,
    click_url,
    compose,
    compose_test,
    email_templates,
    template_env,
    tracking_urls,
)
from leadflow.services.mailing.delivery import (
    LEASE,
    MAX_ATTEMPTS,
    RECONCILE_AFTER,
    RETRY_DELAYS,
    UNCONFIRMED,
    DeliveryReport,
    ReconcileReport,
    deliver_planned,
    reconcile,
)
from leadflow.services.mailing.feedback import (
    NotFound,
    SendRef,
    record_bounce,
    record_click,
    record_open,
    send_address,
    unsubscribe,
)
from leadflow.services.mailing.planning import MESSAGE_ID_DOMAIN, new_message_id, plan_email
from leadflow.services.mailing.reading import (
    SEND_COLUMNS,
    SEND_STATUSES,
    get_send,
    list_sends,
    send_test,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "LEASE",
    "MAX_ATTEMPTS",
    "MESSAGE_ID_DOMAIN",
    "RECONCILE_AFTER",
    "RETRY_DELAYS",
    "SEND_COLUMNS",
    "SEND_STATUSES",
    "SMTP_POLICY",
    "TEMPLATE_DIR",
    "UNCONFIRMED",
    "DeliveryReport",
    "NotFound",
    "ReconcileReport",
    "SendRef",
    "_rewrite_links",
    "brand_name",
    "build_mailer",
    "click_url",
    "compose",
    "compose_test",
    "deliver_planned",
    "email_templates",
    "get_send",
    "list_sends",
    "new_message_id",
    "plan_email",
    "reconcile",
    "record_bounce",
    "record_click",
    "record_open",
    "send_address",
    "send_test",
    "template_env",
    "tracking_urls",
    "unsubscribe",
]
