"""Ingest tracking messages: store events and stitch identities, one transaction per call.

Used by the tracking API, the demo world and the importers alike, so every event enters
the store the same way. A call returns only after its transaction committed: the API's
2xx therefore means "stored".

Identity rules (Segment's model):
- ``identify`` with a ``userId`` or an e-mail trait finds or creates the lead and links the
  message's ``anonymousId`` to it; every earlier anonymous event of that id joins the lead.
- ``track`` / ``page`` of a known ``userId`` or linked ``anonymousId`` joins the lead directly;
  a ``userId`` never seen before creates a lead for it. Unknown anonymous events stay
  anonymous until an identify links them.
- ``alias`` joins ``previousId`` (an old user id or anonymous id) to ``userId``; if both
  belong to different leads, the two leads are merged into the older one.
- ``group`` links the lead to an account (matched by group id, then domain).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.dml import Insert

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import accounts, events, identities, leads
from leadflow.core.tracking import TrackedMessage, is_valid_email, normalise_email

log = logging.getLogger(__name__)

LEAD_TRAIT_COLUMNS = {
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "title": "title",
    "phone": "phone",
    "source": "source",
}
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "icloud.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "kakao.com",
        "proton.me",
        "protonmail.com",
    }
)

AfterIngest = Callable[[Connection, set[int], datetime], None]

# Statements on the hot path are built once: building one per call (``.values(...)``) and
# computing its cache key costs more than executing it.
_INSERT_LEAD = leads.insert().returning(leads.c.id)
_IDENTITY_LEAD = select(identities.c.lead_id).where(
    identities.c.kind == bindparam("k"), identities.c.value == bindparam("v")
)
_INSERT_IGNORE: dict[tuple[str, str], Insert] = {}


def _insert_ignore(conn: Connection, table_name: str) -> Insert:
    key = (conn.dialect.name, table_name)
    stmt = _INSERT_IGNORE.get(key)
    if stmt is None:
        if table_name == "events":
            stmt = insert_ignore(conn.engine, events, "message_id")
        else:
            stmt = insert_ignore(conn.engine, identities, "kind", "value")
        _INSERT_IGNORE[key] = stmt
    return stmt


@dataclass(slots=True)
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    leads_touched: set[int] = field(default_factory=set)


class _Identities:
    """Identity → lead cache for one transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.known: dict[tuple[str, str], int] = {}
        self.merged: dict[int, int] = {}  # lead merged away -> the lead it went into

    def preload(self, messages: Sequence[TrackedMessage]) -> None:
        anon = {m.anonymous_id for m in messages if m.anonymous_id}
        anon |= {m.previous_id for m in messages if m.previous_id}
        users = {m.user_id for m in messages if m.user_id}
        users |= {m.previous_id for m in messages if m.previous_id}
        conds = []
        if anon:
            conds.append(and_(identities.c.kind == "anonymous", identities.c.value.in_(anon)))
        if users:
            conds.append(and_(identities.c.kind == "user", identities.c.value.in_(users)))
        if not conds:
            return
        rows = self.conn.execute(
            select(identities.c.kind, identities.c.value, identities.c.lead_id).where(or_(*conds))
        )
        for kind, value, lead_id in rows:
            self.known[(kind, value)] = lead_id

    def get(self, kind: str, value: str | None) -> int | None:
        return self.known.get((kind, value)) if value else None

    def link(self, kind: str, value: str, lead_id: int, now: datetime) -> bool:
        """Link an identity to a lead; True if it was new. An identity already linked to
        another lead keeps its lead (a shared browser does not merge people)."""
        current = self.known.get((kind, value))
        if current is not None:
            return False
        inserted = self.conn.execute(
            _insert_ignore(self.conn, "identities"),
            {"kind": kind, "value": value, "lead_id": lead_id, "created_at": now},
        )
        linked = lead_id
        if inserted.rowcount != 1:
            # A concurrent transaction linked it first: it keeps its lead.
            linked = self.conn.execute(_IDENTITY_LEAD, {"k": kind, "v": value}).scalar_one()
        self.known[(kind, value)] = linked
        if linked != lead_id:
            return False
        if kind == "anonymous":
            # Earlier anonymous events of this device join the lead. (Events with a userId
            # always get a lead when stored, so a new user link has no history to join.)
            self.conn.execute(
                update(events)
                .where(events.c.anonymous_id == value, events.c.lead_id.is_(None))
                .values(lead_id=lead_id)
            )
            _account_from_earlier_group(self.conn, lead_id, value)
        return True

    def repoint(self, old_lead: int, new_lead: int) -> None:
        for key, lead_id in self.known.items():
            if lead_id == old_lead:
                self.known[key] = new_lead
        for dropped, kept in self.merged.items():
            if kept == old_lead:
                self.merged[dropped] = new_lead
        self.merged[old_lead] = new_lead

    def current(self, lead_id: int) -> int:
        """The lead ``lead_id`` is now, after any merges in this transaction."""
        return self.merged.get(lead_id, lead_id)


def _account_from_earlier_group(conn: Connection, lead_id: int, anonymous_id: str) -> None:
    """A ``group`` call made while the visitor was still anonymous links the account once
    the visitor is identified (its event arrived first, or out of order)."""
    account_id = conn.execute(
        select(accounts.c.id)
        .join(events, events.c.properties["groupId"].as_string() == accounts.c.external_id)
        .where(events.c.anonymous_id == anonymous_id, events.c.type == "group")
        .order_by(events.c.occurred_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    if account_id is not None:
        conn.execute(
            update(leads)
            .where(leads.c.id == lead_id, leads.c.account_id.is_(None))
            .values(account_id=account_id)
        )


def _lead_by_email(conn: Connection, email: str) -> int | None:
    return conn.execute(select(leads.c.id).where(leads.c.email == email)).scalar_one_or_none()


def _create_lead(
    conn: Connection, *, now: datetime, email: str | None = None, user_id: str | None = None
) -> int:
    values: dict[str, Any] = {
        "email": email,
        "user_id": user_id,
        "consent_status": "unknown",
        "attributes": {},
        "created_at": now,
        "updated_at": now,
    }
    return int(conn.execute(_INSERT_LEAD, values).scalar_one())


def apply_lead_traits(
    conn: Connection, lead_id: int, traits: dict[str, Any], now: datetime
) -> None:
    """Copy identify traits onto the lead: known columns, consent, company, the rest as
    free attributes. Empty values never erase what is stored."""
    row = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().one()
    changes: dict[str, Any] = {}
    attributes = dict(row["attributes"] or {})
    for key, value in traits.items():
        if value is None or value == "":
            continue
        column = LEAD_TRAIT_COLUMNS.get(key)
        if column is not None:
            if isinstance(value, dict | list | bool):
                continue
            text = str(value).strip()[: leads.c[column].type.length]
            if text and row[column] != text:
                changes[column] = text
        elif key == "email":
            if row["email"] is None and _lead_by_email(conn, value) is None:
                changes["email"] = value
        elif key == "name" and isinstance(value, str) and not row["first_name"]:
            first, _, last = value.strip().partition(" ")
            changes["first_name"] = first[:255]
            if last and not row["last_name"]:
                changes["last_name"] = last[:255]
        elif key == "consent":
            consent = _consent(value, now)
            if consent is not None:
                changes.update(consent)
        elif key == "company":
            account_id = _account_from_company(
                conn, value, row["email"] or traits.get("email"), now
            )
            if account_id is not None and row["account_id"] != account_id:
                changes["account_id"] = account_id
        elif key not in ("id", "userId", "anonymousId") and attributes.get(key) != value:
            attributes[key] = value
    if attributes != (row["attributes"] or {}):
        changes["attributes"] = attributes
    if changes:
        changes["updated_at"] = now
        conn.execute(update(leads).where(leads.c.id == lead_id).values(**changes))


def _consent(value: Any, now: datetime) -> dict[str, Any] | None:
    """``consent`` trait: true/false, or {"status": "granted", "at": ..., "method": ...}."""
    if isinstance(value, bool):
        return {
            "consent_status": "granted" if value else "denied",
            "consent_at": now,
            "consent_method": "identify",
        }
    if isinstance(value, dict) and value.get("status") in ("granted", "denied"):
        return {
            "consent_status": value["status"],
            "consent_at": now,
            "consent_method": str(value.get("method") or "identify")[:255],
        }
    return None


def email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].lower()
    return None if domain in FREE_MAIL_DOMAINS else domain


def find_or_create_account(
    conn: Connection,
    *,
    now: datetime,
    name: str | None,
    domain: str | None = None,
    external_id: str | None = None,
    fields: dict[str, Any] | None = None,
) -> int | None:
    """Match an account by external id, then domain, then exact name (case-insensitive);
    create it if none matches. Known fields fill blanks and never erase."""
    domain = domain.strip().lower() if domain else None
    row = None
    if external_id:
        row = conn.execute(select(accounts).where(accounts.c.external_id == external_id)).first()
    if row is None and domain:
        row = conn.execute(select(accounts).where(accounts.c.domain == domain)).first()
    if row is None and name:
        row = conn.execute(
            select(accounts).where(func.lower(accounts.c.name) == name.strip().lower()).limit(1)
        ).first()
    values = {k: v for k, v in (fields or {}).items() if v is not None and v != ""}
    if row is None:
        if not (name or domain):
            return None
        return int(
            conn.execute(
                accounts.insert()
                .values(
                    name=(name or domain or "").strip()[:255],
                    domain=domain,
                    external_id=external_id,
                    traits={},
                    created_at=now,
                    updated_at=now,
                    **values,
                )
                .returning(accounts.c.id)
            ).scalar_one()
        )
    account = row._mapping
    changes = {k: v for k, v in values.items() if account[k] in (None, "")}
    if domain and account["domain"] is None:
        taken = conn.execute(select(accounts.c.id).where(accounts.c.domain == domain)).first()
        if taken is None:
            changes["domain"] = domain
    if external_id and account["external_id"] is None:
        changes["external_id"] = external_id
    if changes:
        changes["updated_at"] = now
        conn.execute(update(accounts).where(accounts.c.id == account["id"]).values(**changes))
    return int(account["id"])


def _account_from_company(
    conn: Connection, company: Any, email: str | None, now: datetime
) -> int | None:
    if isinstance(company, str):
        return find_or_create_account(conn, now=now, name=company, domain=email_domain(email))
    if isinstance(company, dict):
        return find_or_create_account(
            conn,
            now=now,
            name=company.get("name") if isinstance(company.get("name"), str) else None,
            domain=_domain_of(company) or email_domain(email),
            external_id=str(company["id"]) if company.get("id") is not None else None,
            fields=_account_fields(company),
        )
    return None


def _domain_of(traits: dict[str, Any]) -> str | None:
    for key in ("domain", "website"):
        value = traits.get(key)
        if isinstance(value, str) and value.strip():
            host = value.strip().lower()
            for prefix in ("https://", "http://"):
                host = host.removeprefix(prefix)
            host = host.split("/", 1)[0].removeprefix("www.")
            if host and " " not in host and "." in host:
                return host[:255]
    return None


def _account_fields(traits: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if isinstance(traits.get("industry"), str):
        fields["industry"] = traits["industry"][:100]
    employees = traits.get("employees", traits.get("employee_count"))
    if isinstance(employees, int) and not isinstance(employees, bool) and employees >= 0:
        fields["employee_count"] = employees
    elif isinstance(employees, str) and employees.isdigit():
        fields["employee_count"] = int(employees)
    if isinstance(traits.get("country"), str):
        fields["country"] = traits["country"][:100]
    return fields


def merge_leads(conn: Connection, keep: int, drop: int, now: datetime) -> None:
    """Merge lead ``drop`` into ``keep``: events and identities move, blanks are filled."""
    if keep == drop:
        return
    kept = conn.execute(select(leads).where(leads.c.id == keep)).mappings().one()
    dropped = conn.execute(select(leads).where(leads.c.id == drop)).mappings().one()
    conn.execute(update(events).where(events.c.lead_id == drop).values(lead_id=keep))
    conn.execute(update(identities).where(identities.c.lead_id == drop).values(lead_id=keep))
    fill = {
        col: dropped[col]
        for col in (
            "email",
            "user_id",
            "first_name",
            "last_name",
            "title",
            "phone",
            "account_id",
            "source",
        )
        if kept[col] is None and dropped[col] is not None
    }
    if kept["consent_status"] == "unknown" and dropped["consent_status"] != "unknown":
        fill.update(
            consent_status=dropped["consent_status"],
            consent_at=dropped["consent_at"],
            consent_method=dropped["consent_method"],
        )
    if dropped["created_at"] < kept["created_at"]:
        fill["created_at"] = dropped["created_at"]
    attributes = {**(dropped["attributes"] or {}), **(kept["attributes"] or {})}
    conn.execute(delete(leads).where(leads.c.id == drop))
    conn.execute(
        update(leads)
        .where(leads.c.id == keep)
        .values(**fill, attributes=attributes, updated_at=now)
    )


def _lead_user_id(conn: Connection, lead_id: int) -> str | None:
    return conn.execute(select(leads.c.user_id).where(leads.c.id == lead_id)).scalar_one()


def _resolve_identify(
    conn: Connection, ids: _Identities, msg: TrackedMessage, now: datetime
) -> int | None:
    """Find the person an identify is about, creating or merging leads as needed.

    Order: the lead of the ``userId``; the lead with the e-mail address (an imported or
    form-created lead, merged with the userId's lead if both exist and the e-mail lead has
    no other userId); the lead of the ``anonymousId`` unless it belongs to another userId
    (a shared browser never merges two people); else a new lead."""
    lead_id = ids.get("user", msg.user_id)
    email = msg.email
    by_email = _lead_by_email(conn, email) if email else None
    if by_email is not None and msg.user_id:
        other_user = _lead_user_id(conn, by_email)
        if other_user is not None and other_user != msg.user_id:
            # The address belongs to someone else's account: keep the two apart, and the
            # address stays with its first owner.
            by_email = None
            email = None
    if lead_id is not None and by_email is not None and by_email != lead_id:
        # The same person known twice (e.g. imported by e-mail, tracked by userId): merge.
        keep, drop = min(lead_id, by_email), max(lead_id, by_email)
        merge_leads(conn, keep, drop, now)
        ids.repoint(drop, keep)
        lead_id = keep
    if lead_id is None:
        lead_id = by_email
    if lead_id is None:
        by_anonymous = ids.get("anonymous", msg.anonymous_id)
        if by_anonymous is not None and msg.user_id:
            owner = _lead_user_id(conn, by_anonymous)
            if owner is not None and owner != msg.user_id:
                by_anonymous = None
        lead_id = by_anonymous
    if lead_id is None and (msg.user_id or email):
        lead_id = _create_lead(conn, now=now, email=email, user_id=msg.user_id)
    if lead_id is None:
        return None
    if msg.user_id:
        if ids.get("user", msg.user_id) is None:
            conn.execute(
                update(leads)
                .where(leads.c.id == lead_id, leads.c.user_id.is_(None))
                .values(user_id=msg.user_id)
            )
        ids.link("user", msg.user_id, lead_id, now)
    if msg.anonymous_id:
        ids.link("anonymous", msg.anonymous_id, lead_id, now)
    if msg.traits:
        apply_lead_traits(conn, lead_id, dict(msg.traits), now)
    return lead_id


def _resolve_alias(conn: Connection, ids: _Identities, msg: TrackedMessage, now: datetime) -> int:
    assert msg.user_id and msg.previous_id
    target = ids.get("user", msg.user_id)
    previous = ids.get("user", msg.previous_id) or ids.get("anonymous", msg.previous_id)
    if target is None and previous is None:
        target = _create_lead(conn, now=now, user_id=msg.user_id)
    elif target is None:
        target = previous
        assert target is not None
    elif previous is not None and previous != target:
        keep, drop = min(target, previous), max(target, previous)
        merge_leads(conn, keep, drop, now)
        ids.repoint(drop, keep)
        target = keep
    ids.link("user", msg.user_id, target, now)
    conn.execute(
        update(leads)
        .where(leads.c.id == target, leads.c.user_id.is_(None))
        .values(user_id=msg.user_id)
    )
    if ids.get("user", msg.previous_id) is None and ids.get("anonymous", msg.previous_id) is None:
        ids.link("anonymous", msg.previous_id, target, now)
    return target


def _resolve_group(
    conn: Connection, ids: _Identities, msg: TrackedMessage, now: datetime
) -> int | None:
    lead_id = ids.get("user", msg.user_id) or ids.get("anonymous", msg.anonymous_id)
    if lead_id is None and msg.user_id:
        lead_id = _create_lead(conn, now=now, user_id=msg.user_id)
        ids.link("user", msg.user_id, lead_id, now)
    traits = dict(msg.traits)
    name = traits.get("name") if isinstance(traits.get("name"), str) else None
    account_id = find_or_create_account(
        conn,
        now=now,
        name=name or msg.group_id,
        domain=_domain_of(traits),
        external_id=msg.group_id,
        fields=_account_fields(traits),
    )
    if account_id is not None:
        _store_account_traits(conn, account_id, traits, now)
    if lead_id is not None and account_id is not None:
        conn.execute(
            update(leads).where(leads.c.id == lead_id).values(account_id=account_id, updated_at=now)
        )
    return lead_id


ACCOUNT_COLUMN_TRAITS = frozenset(
    {"name", "domain", "website", "industry", "employees", "employee_count", "country"}
)


def _store_account_traits(
    conn: Connection, account_id: int, traits: dict[str, Any], now: datetime
) -> None:
    """``group`` traits without a column of their own are kept in ``accounts.traits``
    (latest value wins; empty values never erase)."""
    extra = {
        k: v
        for k, v in traits.items()
        if k not in ACCOUNT_COLUMN_TRAITS and v is not None and v != ""
    }
    if not extra:
        return
    stored = conn.execute(select(accounts.c.traits).where(accounts.c.id == account_id)).scalar_one()
    merged = {**(stored or {}), **extra}
    if merged != stored:
        conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id)
            .values(traits=merged, updated_at=now)
        )


def _resolve_event(
    conn: Connection, ids: _Identities, msg: TrackedMessage, now: datetime
) -> int | None:
    lead_id = ids.get("user", msg.user_id)
    if lead_id is None:
        lead_id = ids.get("anonymous", msg.anonymous_id)
        if lead_id is not None and msg.user_id:
            owner = _lead_user_id(conn, lead_id)
            if owner is None:
                conn.execute(update(leads).where(leads.c.id == lead_id).values(user_id=msg.user_id))
                ids.link("user", msg.user_id, lead_id, now)
            elif owner != msg.user_id:
                lead_id = None  # a shared device: this userId is someone else
    if lead_id is None and msg.user_id:
        lead_id = _create_lead(conn, now=now, user_id=msg.user_id)
        ids.link("user", msg.user_id, lead_id, now)
        if msg.anonymous_id:
            ids.link("anonymous", msg.anonymous_id, lead_id, now)
    return lead_id


def _event_row(msg: TrackedMessage, lead_id: int | None, received_at: datetime) -> dict[str, Any]:
    return {
        "message_id": msg.message_id,
        "type": msg.type,
        "name": msg.name,
        "lead_id": lead_id,
        "anonymous_id": msg.anonymous_id,
        "user_id": msg.user_id,
        "properties": dict(msg.properties)
        if msg.type not in ("identify", "group")
        else {"traits": dict(msg.traits), **({"groupId": msg.group_id} if msg.group_id else {})},
        "context": dict(msg.context),
        "page_url": msg.page_url,
        "referrer": msg.referrer,
        "utm_campaign": msg.utm_campaign,
        "utm_source": msg.utm_source,
        "utm_medium": msg.utm_medium,
        "channel": msg.channel,
        "occurred_at": msg.occurred_at,
        "received_at": received_at,
    }


def ingest_in(
    conn: Connection, messages: Sequence[TrackedMessage], received_at: datetime
) -> IngestResult:
    """Store ``messages`` inside the caller's transaction."""
    result = IngestResult()
    unique: dict[str, TrackedMessage] = {}
    for msg in messages:
        if msg.message_id in unique:
            result.duplicates += 1
        else:
            unique[msg.message_id] = msg
    if not unique:
        return result
    seen = set(
        conn.execute(
            select(events.c.message_id).where(events.c.message_id.in_(list(unique)))
        ).scalars()
    )
    fresh = [m for mid, m in unique.items() if mid not in seen]
    result.duplicates += len(unique) - len(fresh)
    ids = _Identities(conn)
    ids.preload(fresh)
    rows = []
    for msg in fresh:
        if msg.type == "identify":
            lead_id = _resolve_identify(conn, ids, msg, received_at)
        elif msg.type == "alias":
            lead_id = _resolve_alias(conn, ids, msg, received_at)
        elif msg.type == "group":
            lead_id = _resolve_group(conn, ids, msg, received_at)
        else:
            lead_id = _resolve_event(conn, ids, msg, received_at)
        if lead_id is not None:
            result.leads_touched.add(lead_id)
        rows.append(_event_row(msg, lead_id, received_at))
    # Identities linked later in this batch (a page view before the identify in the same
    # batch) and leads merged away during it: point every row at its lead now.
    for row in rows:
        row["lead_id"] = _current_lead(ids, row)
    if rows:
        inserted = conn.execute(_insert_ignore(conn, "events"), rows)
        stored = inserted.rowcount if inserted.rowcount is not None else len(rows)
        if stored < 0:
            stored = len(rows)
        result.stored += stored
        result.duplicates += len(rows) - stored
    return result


def _current_lead(ids: _Identities, row: dict[str, Any]) -> int | None:
    for kind, column in (("user", "user_id"), ("anonymous", "anonymous_id")):
        lead_id = ids.get(kind, row[column])
        if lead_id is not None:
            return lead_id
    return None if row["lead_id"] is None else ids.current(int(row["lead_id"]))


def _is_retryable(exc: DBAPIError) -> bool:
    """A unique-key race, a deadlock or a serialization failure with a concurrent writer."""
    if isinstance(exc, IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40001", "40P01")


def ingest(
    engine: Engine,
    messages: Sequence[TrackedMessage],
    received_at: datetime,
    *,
    after: Iterable[AfterIngest] = (),
    attempts: int = 3,
) -> IngestResult:
    """Store ``messages`` in one transaction; commit before returning.

    ``after`` hooks run inside the same transaction with the leads the messages touched
    (scoring and stage changes hook in here). A unique-key race with a concurrent writer
    (two requests creating the same lead) is retried from scratch.
    """
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                result = ingest_in(conn, messages, received_at)
                for hook in after:
                    hook(conn, result.leads_touched, received_at)
            return result
        except DBAPIError as exc:
            if attempt == attempts or not _is_retryable(exc):
                raise
            log.info("ingest: race with a concurrent writer, retrying (attempt %d)", attempt)
    raise AssertionError("unreachable")


def valid_email_or_none(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    email = normalise_email(value)
    return email if is_valid_email(email) else None
