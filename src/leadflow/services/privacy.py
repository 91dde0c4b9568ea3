"""Privacy: export everything stored about a person; erase them; keep them suppressed.

Erasure (one transaction):
- the lead row stays as an anonymised *tombstone* (``erased_at`` set; e-mail, user id, names,
  title, phone and free attributes cleared; consent ``denied``), so stage history, funnel
  counts and attribution keep adding up; its account (a company, not a person) and
  ``source`` stay;
- its identities (anonymous ids, user ids) are deleted;
- its events keep type, name, time, channel and campaign, and lose everything personal:
  ``userId`` / ``anonymousId``, identify traits, any property whose key names personal data
  (email, name, phone, address, ip, user agent, ...), any string holding the person's e-mail,
  names, phone or ids, any e-mail address, and the query string and fragment of every URL;
  ``context`` keeps only ``campaign``, ``library`` and the page's path, title and stripped
  URL / referrer (ip, userAgent, device, location, traits... are dropped);
- a sha256 of the normalised e-mail goes into ``suppressions``: the address is never
  imported, mailed or contacted again (:func:`is_suppressed`).

- nurture: the e-mail sends keep their figures (sent, opened, clicked) but not the address;
  form submissions keep form, time and the fact of consent, and lose the fields, the IP,
  the user agent and the page's query string; segment signals keep only the SHA-256.

Other modules that keep personal data in their own tables pass an :data:`EraseHook`; it runs
in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection, Engine, delete, or_, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import (
    accounts,
    email_sends,
    events,
    form_submissions,
    identities,
    lead_predictions,
    leads,
    suppressions,
)
from leadflow.core.tracking import email_hash, normalise_email

EraseHook = Callable[[Connection, int, datetime], None]
ERASED = "[erased]"
PII_KEYS = frozenset(
    {
        "email",
        "emailaddress",
        "mail",
        "name",
        "firstname",
        "lastname",
        "fullname",
        "username",
        "phone",
        "phonenumber",
        "mobile",
        "telephone",
        "address",
        "street",
        "postalcode",
        "zip",
        "ip",
        "ipaddress",
        "useragent",
        "userid",
        "anonymousid",
        "birthday",
        "birthdate",
        "age",
        "gender",
        "password",
        "traits",
    }
)
CONTEXT_KEPT = ("campaign", "library")
PAGE_KEPT = ("path", "title", "url", "referrer")
EMAIL_IN_TEXT = re.compile(r"[^@\s<>\"'(),;:/?#&=]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
MAX_DEPTH = 20


class PersonNotFound(LookupError):
    """No lead has this e-mail address; the message is meant for a person."""


def is_suppressed(conn: Connection, email: str) -> bool:
    """True when this address was erased and must never be contacted again."""
    found = conn.execute(
        select(suppressions.c.id).where(suppressions.c.email_hash == email_hash(email))
    ).first()
    return found is not None


def suppress(conn: Connection, email: str, *, reason: str, now: datetime) -> None:
    conn.execute(
        insert_ignore(conn.engine, suppressions, "email_hash").values(
            email_hash=email_hash(email), reason=reason[:64], created_at=now
        )
    )


def _find_lead(conn: Connection, email: str) -> dict[str, Any]:
    address = normalise_email(email)
    row = conn.execute(select(leads).where(leads.c.email == address)).mappings().first()
    if row is not None:
        return dict(row)
    if is_suppressed(conn, address):
        raise PersonNotFound(f"no lead with e-mail {address}: this address was erased")
    raise PersonNotFound(f"no lead with e-mail {address}")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def export_person(engine: Engine, email: str, *, now: datetime) -> dict[str, Any]:
    """Everything stored about the person with this e-mail, as JSON-ready data."""
    with engine.connect() as conn:
        lead = _find_lead(conn, email)
        account = None
        if lead["account_id"] is not None:
            found = (
                conn.execute(select(accounts).where(accounts.c.id == lead["account_id"]))
                .mappings()
                .first()
            )
            account = {k: _plain(v) for k, v in found.items()} if found else None
        ids = conn.execute(
            select(identities.c.kind, identities.c.value, identities.c.created_at)
            .where(identities.c.lead_id == lead["id"])
            .order_by(identities.c.id)
        ).mappings()
        identity_rows = [{k: _plain(v) for k, v in row.items()} for row in ids]
        event_rows = [
            {k: _plain(v) for k, v in row.items()}
            for row in conn.execute(
                select(events)
                .where(events.c.lead_id == lead["id"])
                .order_by(events.c.occurred_at, events.c.id)
            ).mappings()
        ]
    return {
        "exported_at": now.isoformat(),
        "email": lead["email"],
        "lead": {k: _plain(v) for k, v in lead.items()},
        "account": account,
        "identities": identity_rows,
        "events": event_rows,
    }


@dataclass(frozen=True, slots=True)
class Erasure:
    lead_id: int
    events_anonymised: int
    identities_removed: int


def erase_person(
    engine: Engine, email: str, *, now: datetime, hooks: Iterable[EraseHook] = ()
) -> Erasure:
    """Erase the person with this e-mail (see the module docstring), in one transaction."""
    with engine.begin() as conn:
        lead = _find_lead(conn, email)
        lead_id = int(lead["id"])
        ids = list(
            conn.execute(
                select(identities.c.kind, identities.c.value).where(identities.c.lead_id == lead_id)
            )
        )
        personal = _personal_strings(lead, [value for _, value in ids])
        anon = [value for kind, value in ids if kind == "anonymous"]
        users = [value for kind, value in ids if kind == "user"]
        if lead["user_id"]:
            users.append(lead["user_id"])
        conds = [events.c.lead_id == lead_id]
        if anon:
            conds.append(events.c.anonymous_id.in_(anon))
        if users:
            conds.append(events.c.user_id.in_(users))
        rows = conn.execute(
            select(
                events.c.id,
                events.c.type,
                events.c.properties,
                events.c.context,
                events.c.page_url,
                events.c.referrer,
            ).where(or_(*conds))
        ).all()
        for row in rows:
            conn.execute(
                update(events)
                .where(events.c.id == row.id)
                .values(
                    anonymous_id=None,
                    user_id=None,
                    properties=anonymise_properties(row.type, row.properties or {}, personal),
                    context=anonymise_context(row.context or {}, personal),
                    page_url=_scrub_url(row.page_url, personal),
                    referrer=_scrub_url(row.referrer, personal),
                )
            )
        removed = conn.execute(delete(identities).where(identities.c.lead_id == lead_id)).rowcount
        conn.execute(
            update(leads)
            .where(leads.c.id == lead_id)
            .values(
                email=None,
                user_id=None,
                first_name=None,
                last_name=None,
                title=None,
                phone=None,
                attributes={},
                consent_status="denied",
                consent_at=now,
                consent_method="erased on request",
                erased_at=now,
                updated_at=now,
            )
        )
        suppress(conn, lead["email"], reason="erased", now=now)
        _scrub_nurture(conn, lead_id, personal, now)
        for hook in hooks:
            hook(conn, lead_id, now)
    return Erasure(
        lead_id=lead_id, events_anonymised=len(rows), identities_removed=int(removed or 0)
    )


def _scrub_nurture(conn: Connection, lead_id: int, personal: list[str], now: datetime) -> None:
    from leadflow.services.segments import scrub_erased

    sends = conn.execute(
        select(email_sends.c.id, email_sends.c.subject).where(email_sends.c.lead_id == lead_id)
    ).all()
    for send in sends:
        conn.execute(
            update(email_sends)
            .where(email_sends.c.id == send.id)
            .values(to_email=ERASED, subject=_scrub_text(send.subject, personal))
        )
    rows = conn.execute(
        select(
            form_submissions.c.id, form_submissions.c.consent, form_submissions.c.page_url
        ).where(form_submissions.c.lead_id == lead_id)
    ).all()
    for row in rows:
        consent = row.consent
        if isinstance(consent, dict):
            consent = {
                k: v for k, v in consent.items() if k not in ("ip", "user_agent", "page_url")
            }
        conn.execute(
            update(form_submissions)
            .where(form_submissions.c.id == row.id)
            .values(
                fields={},
                consent=consent,
                anonymous_id=None,
                ip=None,
                user_agent=None,
                page_url=_scrub_url(row.page_url, personal),
            )
        )
    scrub_erased(conn, lead_id, now)
    # The prediction's explanation names attribute values; the next refresh rescores.
    conn.execute(delete(lead_predictions).where(lead_predictions.c.lead_id == lead_id))


def _personal_strings(lead: dict[str, Any], identity_values: list[str]) -> list[str]:
    values = [
        lead["email"],
        lead["user_id"],
        lead["phone"],
        lead["first_name"],
        lead["last_name"],
        " ".join(v for v in (lead["first_name"], lead["last_name"]) if v) or None,
        *identity_values,
    ]
    if lead["email"]:
        values.append(lead["email"].split("@", 1)[0])
    # Very short values ("Al", "Kim") would blank unrelated text; e-mail patterns and the
    # PII keys still catch them where they are personal.
    return sorted({v.casefold() for v in values if v and len(v) >= 3}, key=len, reverse=True)


def _scrub_text(text: str, personal: list[str]) -> str:
    lowered = text.casefold()
    if any(p in lowered for p in personal):
        return ERASED
    return EMAIL_IN_TEXT.sub(ERASED, text)


def _scrub_url(url: str | None, personal: list[str]) -> str | None:
    if not url:
        return url
    try:
        parts = urlsplit(url)
        stripped = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    except ValueError:
        return ERASED
    return _scrub_text(stripped, personal)


def _scrub(value: Any, personal: list[str], depth: int = 0, *, by_key: bool = True) -> Any:
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            k: _scrub(v, personal, depth + 1, by_key=by_key)
            for k, v in value.items()
            if not by_key or re.sub(r"[\W_]+", "", str(k).casefold()) not in PII_KEYS
        }
    if isinstance(value, list):
        return [_scrub(v, personal, depth + 1, by_key=by_key) for v in value]
    if isinstance(value, str):
        if value.startswith(("http://", "https://", "/")):
            return _scrub_url(value, personal)
        return _scrub_text(value, personal)
    return value


def anonymise_properties(
    event_type: str, properties: dict[str, Any], personal: list[str]
) -> dict[str, Any]:
    if event_type in ("identify", "alias"):
        return {}
    if event_type == "group":
        group_id = properties.get("groupId")
        return {"groupId": group_id} if isinstance(group_id, str) else {}
    scrubbed = _scrub(properties, personal)
    return scrubbed if isinstance(scrubbed, dict) else {}


def anonymise_context(context: dict[str, Any], personal: list[str]) -> dict[str, Any]:
    # campaign.name and library.name are not personal: scrub their values, keep the keys.
    kept: dict[str, Any] = {
        key: _scrub(context[key], personal, by_key=False) for key in CONTEXT_KEPT if key in context
    }
    page = context.get("page")
    if isinstance(page, dict):
        kept["page"] = {
            key: _scrub(page[key], personal)
            for key in PAGE_KEPT
            if key in page and isinstance(page[key], str)
        }
    return kept
