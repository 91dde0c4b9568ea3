"""Hosted-form submissions: who the visitor is, what to ask, and storing a submission.

A submission goes through the same path as a Segment ``identify`` (``services/ingest.py``):
the visitor's anonymous id is linked to the lead, so their anonymous history joins it.
In ONE transaction: the identify (traits from the form, consent), the form's event
(``form_submit``), a ``content_download`` for the unlocked asset, the ``form_submissions``
row with the consent record (text agreed, language, time, page, IP), and the scoring /
stage hooks. A unique-key race with a concurrent writer is retried from scratch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from leadflow.adapters.db.tables import accounts, form_submissions, identities, leads
from leadflow.bootstrap import Services
from leadflow.core.config import ContentSpec, FormSpec, LeadModel
from leadflow.core.forms import ACCOUNT_FIELDS, LEAD_COLUMNS, lead_traits
from leadflow.core.tracking import TrackedMessage, parse_message
from leadflow.services import content, privacy
from leadflow.services.ingest import ingest_parts_in

log = logging.getLogger(__name__)


def forms_of(model: LeadModel) -> list[FormSpec]:
    return list(model.spec.nurture.forms) if model.spec.nurture is not None else []


def find_form(model: LeadModel, key: str) -> FormSpec | None:
    return next((f for f in forms_of(model) if f.key == key), None)


@dataclass(frozen=True)
class Visitor:
    """What leadflow knows about the person behind an anonymous id."""

    lead_id: int | None = None
    known: dict[str, Any] = field(default_factory=dict)
    # Contact details known (an e-mail address): late-stage content needs no form.
    known_contact: bool = False
    consent_status: str = "unknown"


def visitor(conn: Connection, anonymous_id: str | None) -> Visitor:
    """The lead linked to ``anonymous_id`` and the field values known for it (lead columns,
    account fields, attributes). Unknown, unlinked or erased → an empty :class:`Visitor`."""
    if not anonymous_id:
        return Visitor()
    row = (
        conn.execute(
            select(
                leads.c.id,
                leads.c.email,
                leads.c.first_name,
                leads.c.last_name,
                leads.c.title,
                leads.c.phone,
                leads.c.attributes,
                leads.c.consent_status,
                accounts.c.name.label("company"),
                accounts.c.industry,
                accounts.c.employee_count,
                accounts.c.country,
            )
            .select_from(
                identities.join(leads, leads.c.id == identities.c.lead_id).outerjoin(
                    accounts, accounts.c.id == leads.c.account_id
                )
            )
            .where(
                identities.c.kind == "anonymous",
                identities.c.value == anonymous_id,
                leads.c.erased_at.is_(None),
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return Visitor()
    known: dict[str, Any] = dict(row["attributes"] or {})
    for name in (*LEAD_COLUMNS, *ACCOUNT_FIELDS):
        if row[name] not in (None, ""):
            known[name] = row[name]
    return Visitor(
        lead_id=int(row["id"]),
        known=known,
        known_contact=bool(row["email"]),
        consent_status=row["consent_status"],
    )


@dataclass(frozen=True)
class Submission:
    submission_id: int
    lead_id: int | None
    asset: ContentSpec | None


def _message_id(*parts: str) -> str:
    return "form-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def _context(page_url: str | None, ip: str | None, user_agent: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {"library": {"name": "leadflow-forms"}}
    if page_url:
        context["page"] = {"url": page_url}
    if ip:
        context["ip"] = ip
    if user_agent:
        context["userAgent"] = user_agent
    return context


def submit(
    services: Services,
    form: FormSpec,
    *,
    clean: Mapping[str, Any],
    consent_given: bool,
    anonymous_id: str,
    now: datetime,
    lang: str = "en",
    page_url: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    attempts: int = 3,
) -> Submission:
    """Store a validated submission (see the module docstring); returns the lead it went to
    (None if the address is suppressed after an erasure and nothing else identifies the
    visitor) and the unlocked asset."""
    page_url = page_url[:2000] if page_url else None
    user_agent = user_agent[:512] if user_agent else None
    ip = ip[:64] if ip else None
    traits = lead_traits(clean)
    consent_text = None
    if form.consent is not None:
        consent_text = form.consent.ko if lang == "ko" else form.consent.en
    if consent_given and form.consent is not None:
        traits["consent"] = {"status": "granted", "method": f"form:{form.key}"}
    context = _context(page_url, ip, user_agent)
    salt = f"{form.key}\x1f{anonymous_id}\x1f{now.isoformat()}"
    for attempt in range(1, attempts + 1):
        try:
            with services.engine.begin() as conn:
                model = services.models.active(conn, now)
                asset = content.find_asset(conn, model, form.asset) if form.asset else None
                messages = _messages(form, asset, traits, anonymous_id, context, salt, now)
                _, touched = ingest_parts_in(conn, [(messages, now)])
                lead_id = visitor(conn, anonymous_id).lead_id
                if lead_id is not None:
                    _fill_account(conn, lead_id, clean, now)
                    if consent_given and form.consent is not None:
                        # A fresh, explicit opt-in on our form re-subscribes someone who
                        # unsubscribed earlier (a hard bounce stays: the address is dead).
                        conn.execute(
                            update(leads)
                            .where(leads.c.id == lead_id, leads.c.unsubscribed_at.is_not(None))
                            .values(unsubscribed_at=None, updated_at=now)
                        )
                # An erased person's address is not kept, in the fields or the page URL.
                stored_fields, page_url = privacy.without_suppressed(conn, dict(clean), page_url)
                consent = None
                if form.consent is not None:
                    consent = {
                        "granted": consent_given,
                        "text": consent_text,
                        "lang": lang,
                        "at": now.isoformat(),
                        "page_url": page_url,
                        "ip": ip,
                    }
                submission_id = conn.execute(
                    form_submissions.insert()
                    .values(
                        form_key=form.key,
                        lead_id=lead_id,
                        anonymous_id=anonymous_id,
                        fields=stored_fields,
                        consent=consent,
                        asset_key=asset.key if asset is not None else None,
                        page_url=page_url,
                        ip=ip,
                        user_agent=user_agent,
                        submitted_at=now,
                    )
                    .returning(form_submissions.c.id)
                ).scalar_one()
                for hook in services.after_ingest:
                    hook(conn, touched, now)
            return Submission(int(submission_id), lead_id, asset)
        except DBAPIError as exc:
            if attempt == attempts or not _retryable(exc):
                raise
            log.info("form submission: race with a concurrent writer, retrying")
    raise AssertionError("unreachable")


def _fill_account(conn: Connection, lead_id: int, clean: Mapping[str, Any], now: datetime) -> None:
    """Industry, size and country from the form fill the blanks of the lead's account."""
    fields = {k: clean[k] for k in ("industry", "employee_count", "country") if k in clean}
    if not fields:
        return
    account_id = conn.execute(select(leads.c.account_id).where(leads.c.id == lead_id)).scalar()
    if account_id is None:
        return
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).mappings().one()
    changes = {k: v for k, v in fields.items() if row[k] in (None, "")}
    if "employee_count" in changes and not isinstance(changes["employee_count"], int):
        changes.pop("employee_count")
    for k in ("industry", "country"):
        if k in changes:
            changes[k] = str(changes[k])[:100]
    if changes:
        conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(updated_at=now, **changes)
        )


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40001", "40P01")


def _messages(
    form: FormSpec,
    asset: ContentSpec | None,
    traits: dict[str, Any],
    anonymous_id: str,
    context: dict[str, Any],
    salt: str,
    now: datetime,
) -> list[TrackedMessage]:
    raw: list[dict[str, Any]] = [
        {
            "type": "identify",
            "messageId": _message_id(salt, "identify"),
            "anonymousId": anonymous_id,
            "traits": traits,
            "context": context,
        },
        {
            "type": "track",
            "event": form.event,
            "messageId": _message_id(salt, "submit"),
            "anonymousId": anonymous_id,
            "properties": {
                "form": form.key,
                **({"asset_key": asset.key, "asset_type": asset.type} if asset else {}),
            },
            "context": context,
        },
    ]
    if asset is not None:
        raw.append(_download(form, asset, anonymous_id, context, _message_id(salt, "download")))
    return [parse_message(m, received_at=now) for m in raw]


def _download(
    form: FormSpec, asset: ContentSpec, anonymous_id: str, context: dict[str, Any], mid: str
) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "content_download",
        "messageId": mid,
        "anonymousId": anonymous_id,
        "properties": {
            "asset_key": asset.key,
            "asset_type": asset.type,
            "form": form.key,
            "url": asset.url,
        },
        "context": context,
    }


def record_direct_download(
    services: Services,
    form: FormSpec,
    asset: ContentSpec,
    anonymous_id: str,
    now: datetime,
    *,
    page_url: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> None:
    """A known contact went straight to late-stage content (no form): a ``content_download``
    event. One per visitor, asset and day (a reload does not count twice)."""
    mid = _message_id(form.key, anonymous_id, asset.key, now.date().isoformat(), "direct")
    context = _context(page_url[:2000] if page_url else None, ip, user_agent)
    msg = parse_message(_download(form, asset, anonymous_id, context, mid), received_at=now)
    from leadflow.services.ingest import ingest

    ingest(services.engine, [msg], now, after=services.after_ingest)


def list_submissions(
    conn: Connection, form_key: str | None = None, *, limit: int = 1000
) -> list[dict[str, Any]]:
    """Submissions, newest first."""
    query = select(form_submissions).order_by(form_submissions.c.id.desc()).limit(limit)
    if form_key is not None:
        query = query.where(form_submissions.c.form_key == form_key)
    return [dict(r) for r in conn.execute(query).mappings()]
