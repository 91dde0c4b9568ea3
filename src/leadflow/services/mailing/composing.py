"""Composing a send: the Jinja template, the lead's and the seminar's details, tracked
links and the RFC 5322 message."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as _DEFAULT_POLICY
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from html import escape, unescape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection, bindparam, select

from leadflow.adapters.db.tables import accounts, content_assets, leads, seminars
from leadflow.core import email_tokens
from leadflow.core.config import LeadModel
from leadflow.services.mailing.planning import new_message_id
from leadflow.settings import Settings


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
# --- composing ------------------------------------------------------------------------

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates" / "email"
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
