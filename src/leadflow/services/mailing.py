"""Email: planning a send, composing it, handing it to SMTP, recording what came back.

A send is first *planned*: a row in ``email_sends`` with a unique idempotency key and a
fixed RFC 5322 Message-ID, written in the same transaction as the decision that caused it
(a program step, a seminar invitation). Delivery is a separate step that claims planned
rows, composes the message and hands it to the mailer.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as _DEFAULT_POLICY
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from html import escape, unescape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection, Engine, and_, bindparam, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from leadflow.adapters.db.engine import insert_ignore, is_postgres
from leadflow.adapters.db.tables import accounts, content_assets, email_sends, leads, seminars
from leadflow.adapters.email import DeliveryError, Mailer, build_mailer
from leadflow.core import email_tokens
from leadflow.core.config import LeadModel
from leadflow.core.lifecycle import withdrawal_method
from leadflow.services import privacy
from leadflow.services.events import EMAIL_CHANNEL, LeadEvent, record_events_in
from leadflow.settings import Settings

if TYPE_CHECKING:
    from leadflow.bootstrap import Services

log = logging.getLogger(__name__)

MESSAGE_ID_DOMAIN = "leadflow.invalid"


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, but each header class is made once: the stock one
    builds a new class with ``type()`` for every header it parses (a large share of the
    cost of composing a message)."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made


# email.policy.default (RFC 5322 headers, UTF-8 where needed), with the header classes cached.
SMTP_POLICY = _DEFAULT_POLICY.clone(header_factory=_HeaderClasses())


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


# --- composing ------------------------------------------------------------------------

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates" / "email"
DEFAULT_TEMPLATE = "nurture"
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE)
_FALLBACK_NAME = {"en": "there", "ko": "고객"}
# What compose reads, built once (compose runs once per delivered message).
_LEAD_VIEW = (
    select(leads.c.first_name, leads.c.attributes, accounts.c.name.label("company"))
    .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
    .where(leads.c.id == bindparam("lead_id"))
)
_ASSET = select(
    content_assets.c.key, content_assets.c.title, content_assets.c.type, content_assets.c.url
).where(content_assets.c.key == bindparam("key"))
_SEMINAR = select(
    seminars.c.title, seminars.c.kind, seminars.c.starts_at, seminars.c.location
).where(seminars.c.id == bindparam("seminar_id"))


@lru_cache(maxsize=1)
def template_env() -> Environment:
    """Jinja2 for email bodies and the unsubscribe page: HTML autoescaped, text not."""
    return Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@lru_cache(maxsize=1)
def _template_names() -> tuple[str, ...]:
    names = {p.stem for p in TEMPLATE_DIR.glob("*.html") if not p.stem.startswith(("_", "page_"))}
    return tuple(sorted(n for n in names if (TEMPLATE_DIR / f"{n}.txt").exists()))


def email_templates() -> list[str]:
    """Templates usable for email: ``<name>.html`` with a ``<name>.txt`` beside it."""
    return list(_template_names())


def brand_name(settings: Settings) -> str:
    name, addr = parseaddr(settings.mail_from)
    return name or addr.split("@")[-1] or "leadflow"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _locale(attributes: Mapping[str, Any] | None, subject: str) -> str:
    for key in ("locale", "language"):
        value = (attributes or {}).get(key)
        if isinstance(value, str) and value[:2].lower() in ("ko", "en"):
            return value[:2].lower()
    return "ko" if _HANGUL.search(subject) else "en"


def tracking_urls(settings: Settings, key: bytes, send_id: int) -> tuple[str, str]:
    """(open pixel URL, unsubscribe URL) of one send, signed with ``key``."""
    base = settings.public_url
    return (
        f"{base}/e/o/{email_tokens.open_token(key, send_id)}",
        f"{base}/u/{email_tokens.unsubscribe_token(key, send_id)}",
    )


def click_url(settings: Settings, key: bytes, send_id: int, destination: str) -> str:
    token = email_tokens.click_token(key, send_id, destination)
    return f"{settings.public_url}/e/c/{token}"


def _asset_for(conn: Connection, model: LeadModel | None, key: str | None) -> dict[str, Any] | None:
    if not key:
        return None
    row = conn.execute(_ASSET, {"key": key}).first()
    if row is not None:
        return dict(row._mapping)
    nurture = model.spec.nurture if model is not None else None
    for spec in nurture.content if nurture is not None else []:
        if spec.key == key:
            return {"key": spec.key, "title": spec.title, "type": spec.type, "url": spec.url}
    return None


def _rewrite_links(html: str, rewrite: Callable[[str], str | None]) -> str:
    """Every ``href`` through ``rewrite``; a link it refuses loses its ``href``."""

    def replace(match: re.Match[str]) -> str:
        raw = next(g for g in match.groups() if g is not None)
        target = rewrite(unescape(raw))
        return "" if target is None else f'href="{escape(target, quote=True)}"'

    return _HREF.sub(replace, html)


def _build_message(
    settings: Settings,
    *,
    to_email: str,
    subject: str,
    message_id: str,
    html: str,
    text: str,
    now: datetime,
    unsubscribe_url: str | None,
) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["Subject"] = _one_line(subject)
    msg["From"] = settings.mail_from
    msg["To"] = to_email
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = message_id
    if unsubscribe_url is not None:
        # RFC 2369 + RFC 8058: mail clients show an unsubscribe button and POST to it.
        msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def compose(
    conn: Connection,
    settings: Settings,
    send_row: Any,
    model: LeadModel | None,
    *,
    key: bytes,
    now: datetime | None = None,
) -> EmailMessage:
    """The message of one ``email_sends`` row: HTML and plain text from the row's template
    (``nurture`` when it has none of its own), personalised, every link signed and routed
    through ``/e/c/``, an open pixel, and for marketing mail a visible unsubscribe link and
    the ``List-Unsubscribe`` headers. Links are signed with ``key`` (the current signing key,
    ``services.signing.current()``, read before the caller's transaction)."""
    row: Mapping[str, Any] = getattr(send_row, "_mapping", send_row)
    send_id = int(row["id"])
    lead = conn.execute(_LEAD_VIEW, {"lead_id": row["lead_id"]}).first()
    attributes = (lead.attributes if lead is not None else None) or {}
    subject = str(row["subject"])
    locale = _locale(attributes, subject)
    first_name = _one_line(lead.first_name or "") if lead is not None else ""
    company = _one_line((lead.company if lead is not None else None) or "")
    if not company and isinstance(attributes.get("company"), str):
        company = _one_line(attributes["company"])

    public = settings.public_url
    asset = _asset_for(conn, model, row.get("asset_key"))
    base = public
    asset_view: dict[str, Any] | None = None
    if asset is not None:
        destination = email_tokens.resolve_destination(str(asset["url"]), public)
        if destination is not None:
            if str(asset["url"]).startswith(("http://", "https://")):
                base = destination
            asset_view = {
                "key": asset["key"],
                "title": asset["title"],
                "type": asset["type"],
                "url": click_url(settings, key, send_id, destination),
            }

    pixel_url, unsubscribe_url = tracking_urls(settings, key, send_id)
    marketing = row.get("category", "marketing") == "marketing"
    tracked_prefixes = (f"{public}/e/c/", f"{public}/u/")

    def track(href: str) -> str | None:
        if href.startswith(tracked_prefixes) or href.startswith("mailto:"):
            return href
        destination = email_tokens.resolve_destination(href, base)
        return None if destination is None else click_url(settings, key, send_id, destination)

    context = {
        "locale": locale,
        "subject": _one_line(subject),
        "first_name": first_name,
        "greeting_name": first_name or _FALLBACK_NAME[locale],
        "company": company,
        "asset": asset_view,
        "brand": brand_name(settings),
        "public_url": public,
        "pixel_url": pixel_url,
        "unsubscribe_url": unsubscribe_url if marketing else None,
        "link": track,
        "seminar": _seminar_view(conn, model, row.get("seminar_id"), locale),
    }
    name = str(row.get("template") or DEFAULT_TEMPLATE)
    if name not in email_templates():
        name = DEFAULT_TEMPLATE
    env = template_env()
    html = _rewrite_links(env.get_template(f"{name}.html").render(context), track)
    text = env.get_template(f"{name}.txt").render(context)
    return _build_message(
        settings,
        to_email=str(row["to_email"]),
        subject=subject,
        message_id=str(row["message_id"]),
        html=html,
        text=text,
        now=now or datetime.now(UTC),
        unsubscribe_url=unsubscribe_url if marketing else None,
    )


def compose_test(settings: Settings, to_email: str, template: str, now: datetime) -> EmailMessage:
    """A test message (``POST /api/email/test``): the template with sample data, untracked."""
    if template not in email_templates():
        raise ValueError(
            f"template: unknown template {template!r} (known: {', '.join(email_templates())})"
        )
    locale = "en"
    context = {
        "locale": locale,
        "subject": f"leadflow test: {template}",
        "first_name": "Test",
        "greeting_name": "Test",
        "company": "Example Company",
        "asset": {
            "key": "sample",
            "title": "Sample asset",
            "type": "blog_post",
            "url": settings.public_url,
        },
        "brand": brand_name(settings),
        "public_url": settings.public_url,
        "pixel_url": None,
        "unsubscribe_url": None,
        "link": lambda href: href,
    }
    env = template_env()
    return _build_message(
        settings,
        to_email=to_email,
        subject=f"leadflow test: {template}",
        message_id=new_message_id(),
        html=env.get_template(f"{template}.html").render(context),
        text=env.get_template(f"{template}.txt").render(context),
        now=now,
        unsubscribe_url=None,
    )


# --- delivery -------------------------------------------------------------------------

# Temporary failures are retried after these delays (attempt 1 failed -> wait 5 minutes,
# ...); the attempt after the last delay is the final one.
RETRY_DELAYS = (
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
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
_DUE = or_(_e.next_attempt_at.is_(None), _e.next_attempt_at <= bindparam("now"))
_SELECT_DUE = (
    select(_e.id)
    .where(_e.status == "planned", _DUE)
    .order_by(_e.planned_at, _e.id)
    .limit(bindparam("limit"))
)
_SELECT_DUE_LOCKED = _SELECT_DUE.with_for_update(skip_locked=True)
_CLAIM = (
    update(email_sends)
    .where(_e.id.in_(bindparam("ids", expanding=True)), _e.status == "planned", _DUE)
    .values(
        claimed_by=bindparam("worker"),
        lease_until=bindparam("lease"),
        next_attempt_at=bindparam("lease"),
    )
    .returning(_e.id)
)
_CLAIMED_ROWS = (
    select(email_sends).where(_e.id.in_(bindparam("ids", expanding=True))).order_by(_e.id)
)
_MINE = and_(_e.claimed_by == bindparam("worker"), _e.lease_until == bindparam("lease"))
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
_RELEASE = (
    update(email_sends)
    .where(_e.id.in_(bindparam("ids", expanding=True)), _e.status == "planned", _MINE)
    .values(next_attempt_at=None, claimed_by=None, lease_until=None)
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


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _claim(engine: Engine, now: datetime, worker_id: str, lease: datetime, limit: int) -> list[int]:
    """Due planned rows, leased to this worker until ``lease`` and committed."""
    query = _SELECT_DUE_LOCKED if is_postgres(engine) else _SELECT_DUE
    with engine.begin() as conn:
        ids = list(conn.execute(query, {"now": now, "limit": limit}).scalars())
        if not ids:
            return []
        claimed = conn.execute(
            _CLAIM, {"ids": ids, "now": now, "worker": worker_id[:64], "lease": lease}
        ).scalars()
        return sorted(int(i) for i in claimed)


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


def deliver_planned(
    services: Services, mailer: Mailer, now: datetime, *, worker_id: str, limit: int = 500
) -> DeliveryReport:
    """Deliver up to ``limit`` due planned emails through ``mailer``.

    1. Claim: due rows (``planned``, ``next_attempt_at`` null or past) get ``claimed_by``
       = ``worker_id`` and ``lease_until`` = ``now`` + :data:`LEASE`, committed before
       anything goes to SMTP; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers
       claim disjoint rows. ``next_attempt_at`` moves to the lease end, so no other worker
       sees the row while the lease lasts.
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
    ids = _claim(services.engine, now, worker_id, lease, limit)
    report.claimed = len(ids)
    if not ids:
        return report
    mine = {"worker": worker_id[:64], "lease": lease}
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
    pending: list[Callable[[Connection], None]] = []
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
            if todo:
                conn.execute(_RELEASE, {"ids": [r.id for r in todo], **mine})
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
    pending: list[Callable[[Connection], None]],
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
            if exc.temporary and attempts < MAX_ATTEMPTS:
                pending.append(
                    _outcome(
                        row.id,
                        mine,
                        status="planned",
                        error=str(exc)[:1000],
                        attempts=attempts,
                        retry_at=now + RETRY_DELAYS[attempts - 1],
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
                lead_id, send_id = row.lead_id, row.id
                pending.append(
                    lambda c, lead_id=lead_id, send_id=send_id, why=str(exc): _record_hard_bounce(
                        c, services, send_id, lead_id, why, now
                    )
                )
                report.bounced += 1
            continue
        pending.append(
            _outcome(row.id, mine, status="sent", error=None, attempts=attempts, sent_at=now)
        )
        pending.append(lambda c, send_id=row.id: _record_sent(c, send_id, now))
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
        if is_postgres(engine):
            query = query.with_for_update(skip_locked=True)
        for row in conn.execute(query).all():
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


class NotFound(LookupError):
    pass


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
    with mailer or build_mailer(settings) as active:
        active.send(message)
    return str(message["Message-ID"])


def _seminar_view(
    conn: Connection, model: LeadModel | None, seminar_id: Any, locale: str
) -> dict[str, Any] | None:
    """What seminar templates show: title, kind, start in the team's time zone, location."""
    if seminar_id is None:
        return None
    row = conn.execute(_SEMINAR, {"seminar_id": int(seminar_id)}).one_or_none()
    if row is None:
        return None
    zone_name = model.spec.sales.timezone if model is not None and model.spec.sales else "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone, zone_name = ZoneInfo("UTC"), "UTC"
    local = row.starts_at.astimezone(zone)
    pattern = "%Y년 %m월 %d일 %H:%M" if locale == "ko" else "%d %b %Y, %H:%M"
    return {
        "title": _one_line(row.title),
        "kind": row.kind,
        "starts_at": f"{local.strftime(pattern)} ({zone_name})",
        "location": _one_line(row.location or ""),
    }
