"""Export everything stored about a person; erase them.

Both walk the same map of tables (:mod:`leadflow.services.privacy.links`, derived from the
schema's foreign keys to ``leads.id``), so a new table about people is exported and erased
without anyone remembering to.

Erasure (one transaction):
- the lead row stays as an anonymised *tombstone* (``erased_at`` set; e-mail, user id, names,
  title, phone and free attributes cleared; consent ``denied``), so stage history, funnel
  counts and attribution keep adding up; its account (a company, not a person) and
  ``source`` stay;
- its identities (anonymous ids, user ids) and its prediction are deleted;
- its events keep type, name, time, channel and campaign, and lose everything personal:
  ``userId`` / ``anonymousId``, identify traits, any property whose key names personal data
  (email, name, phone, address, ip, user agent, ...), any string holding the person's e-mail,
  names, phone or ids, any e-mail address, and the query string and fragment of every URL;
  ``context`` keeps only ``campaign``, ``library`` and the page's path, title and stripped
  URL / referrer (ip, userAgent, device, location, traits... are dropped);
- e-mail sends keep their figures (sent, opened, clicked) but not the address; form
  submissions keep form, time and the fact of consent, and lose the fields, the IP, the user
  agent and the page's query string; segment signals keep only the SHA-256;
- its account keeps the company's data, but a name or trait holding the person's address,
  phone, ids or full name becomes ``[erased]``;
- every other row about the person (stage changes, signals, sales actions and their notes,
  assignments, opportunities and their names, CRM updates, webhook deliveries and attempts,
  ...) is scrubbed column by column: free text and JSON naming the person become
  ``[erased]``, person-named JSON keys (``email``, ``first_name``...) lose their value, and
  the ``lead`` block of a webhook payload becomes the tombstone's (``erased_at`` set), so
  a replay sends the scrubbed payload;
- a SHA-256 of the normalised e-mail goes into ``suppressions``: the address is never
  stored or mailed again (:mod:`leadflow.services.privacy.guard`).

Other modules that keep personal data elsewhere pass an :data:`EraseHook`; it runs in the
same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    String,
    Table,
    Text,
    delete,
    or_,
    select,
    update,
)

from leadflow.adapters.db.tables import (
    accounts,
    email_sends,
    events,
    form_submissions,
    identities,
    lead_predictions,
    leads,
    webhook_deliveries,
)
from leadflow.core import errors
from leadflow.core.tracking import normalise_email
from leadflow.services.privacy.guard import is_suppressed, suppress
from leadflow.services.privacy.links import Person, person_tables
from leadflow.services.privacy.scrub import (
    ERASED,
    Personal,
    scrub_event_context,
    scrub_event_properties,
    scrub_event_url,
    scrub_json,
    scrub_text,
)

EraseHook = Callable[[Connection, int, datetime], None]
# Rows deleted outright (nothing in them is worth keeping once the person is gone).
DELETED = (identities, lead_predictions)
# Free text shorter than this is a code (stage, status, reason key...), never scrubbed.
MIN_TEXT_LENGTH = 255


class PersonNotFound(errors.NotFound):
    """No lead has this e-mail address; the message is meant for a person."""


def _find_lead(conn: Connection, email: str) -> dict[str, Any]:
    address = normalise_email(email)
    row = conn.execute(select(leads).where(leads.c.email == address)).mappings().first()
    if row is not None:
        return dict(row)
    if is_suppressed(conn, address):
        raise PersonNotFound(f"no lead with e-mail {address}: this address was erased")
    raise PersonNotFound(f"no lead with e-mail {address}")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return value


def _rows(conn: Connection, table: Table, where: Any) -> list[dict[str, Any]]:
    order = list(table.primary_key.columns)
    return [
        {k: _plain(v) for k, v in row.items()}
        for row in conn.execute(select(table).where(where).order_by(*order)).mappings()
    ]


def export_person(engine: Engine, email: str, *, now: datetime) -> dict[str, Any]:
    """Everything stored about the person with this e-mail, as JSON-ready data: the lead,
    its account, and the rows of every table about the person, under the table's name."""
    with engine.connect() as conn:
        lead = _find_lead(conn, email)
        person = Person(int(lead["id"]), lead["email"])
        account = None
        if lead["account_id"] is not None:
            found = _rows(conn, accounts, accounts.c.id == lead["account_id"])
            account = found[0] if found else None
        data: dict[str, Any] = {
            "exported_at": now.isoformat(),
            "email": lead["email"],
            "lead": {k: _plain(v) for k, v in lead.items()},
            "account": account,
        }
        for table, where in person_tables():
            rows = _rows(conn, table, where(person))
            if table is events:
                rows.sort(key=lambda r: (r["occurred_at"], r["id"]))
            data[table.name] = rows
    return data


@dataclass(frozen=True, slots=True)
class Erasure:
    lead_id: int
    events_anonymised: int
    identities_removed: int
    rows_scrubbed: int = 0


def erase_person(
    engine: Engine, email: str, *, now: datetime, hooks: Iterable[EraseHook] = ()
) -> Erasure:
    """Erase the person with this e-mail (see the module docstring), in one transaction."""
    with engine.begin() as conn:
        lead = _find_lead(conn, email)
        lead_id = int(lead["id"])
        person = Person(lead_id, lead["email"])
        ids = list(
            conn.execute(
                select(identities.c.kind, identities.c.value).where(identities.c.lead_id == lead_id)
            )
        )
        personal = Personal.of(
            email=lead["email"],
            first_name=lead["first_name"],
            last_name=lead["last_name"],
            others=[lead["user_id"], lead["phone"], *(value for _, value in ids)],
        )
        anonymised = _anonymise_events(conn, lead, ids, personal)
        # Every other row about the person, found before the tombstone and the deletions.
        about = {
            table: [
                tuple(r)
                for r in conn.execute(select(*table.primary_key.columns).where(where(person)))
            ]
            for table, where in person_tables()
            if table is not events and table not in DELETED
        }
        removed = conn.execute(delete(identities).where(identities.c.lead_id == lead_id)).rowcount
        conn.execute(delete(lead_predictions).where(lead_predictions.c.lead_id == lead_id))
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
        tomb = dict(conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().one())
        scrubbed = 0
        for table, keys in about.items():
            scrubbed += _scrub_rows(conn, table, keys, personal, tomb)
        if lead["account_id"] is not None:
            scrubbed += _scrub_account(conn, int(lead["account_id"]), personal)
        for hook in hooks:
            hook(conn, lead_id, now)
    return Erasure(
        lead_id=lead_id,
        events_anonymised=anonymised,
        identities_removed=int(removed or 0),
        rows_scrubbed=scrubbed,
    )


def _anonymise_events(
    conn: Connection, lead: Mapping[str, Any], ids: list[Any], personal: Personal
) -> int:
    anon = [value for kind, value in ids if kind == "anonymous"]
    users = [value for kind, value in ids if kind == "user"]
    if lead["user_id"]:
        users.append(lead["user_id"])
    conds = [events.c.lead_id == lead["id"]]
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
                properties=scrub_event_properties(row.type, row.properties or {}, personal),
                context=scrub_event_context(row.context or {}, personal),
                page_url=scrub_event_url(row.page_url, personal),
                referrer=scrub_event_url(row.referrer, personal),
            )
        )
    return len(rows)


def _scrub_nurture(conn: Connection, lead_id: int, personal: Personal, now: datetime) -> None:
    from leadflow.services.segments import scrub_erased

    conn.execute(
        update(email_sends).where(email_sends.c.lead_id == lead_id).values(to_email=ERASED)
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
                page_url=scrub_event_url(row.page_url, personal),
            )
        )
    scrub_erased(conn, lead_id, now)


def free_text_columns(table: Table) -> list[Column[Any]]:
    """Columns that can hold free text or JSON: not keys (primary, foreign, unique) and not
    short codes (stage, status...)."""
    unique = {c.name for index in table.indexes if index.unique for c in index.columns}
    unique |= {c.name for c in table.columns if c.unique}
    found = []
    for column in table.columns:
        if column.primary_key or column.foreign_keys or column.name in unique:
            continue
        kind = column.type
        if isinstance(kind, JSON) or (
            isinstance(kind, String)
            and (isinstance(kind, Text) or kind.length is None or kind.length >= MIN_TEXT_LENGTH)
        ):
            found.append(column)
    return found


def _scrub_rows(
    conn: Connection,
    table: Table,
    keys: list[tuple[Any, ...]],
    personal: Personal,
    tomb: Mapping[str, Any],
) -> int:
    columns = free_text_columns(table)
    if not keys or not columns:
        return 0
    pk = list(table.primary_key.columns)
    changed = 0
    for key in keys:
        where = [c == v for c, v in zip(pk, key, strict=True)]
        row = conn.execute(select(*columns).where(*where)).mappings().first()
        if row is None:
            continue
        values: dict[str, Any] = {}
        for column in columns:
            old = row[column.name]
            if old is None:
                continue
            if isinstance(column.type, JSON):
                new = scrub_json(old, personal)
                if table is webhook_deliveries and column.name == "payload":
                    new = _tombstone_payload(new, tomb)
            else:
                new = scrub_text(old, personal)
                if new is not None and isinstance(column.type, String) and column.type.length:
                    new = new[: column.type.length]
            if new != old:
                values[column.name] = new
        if values:
            conn.execute(update(table).where(*where).values(**values))
            changed += 1
    return changed


def _scrub_account(conn: Connection, account_id: int, personal: Personal) -> int:
    """The company stays, but not the person in it: its name and traits lose the person's
    address, phone, ids and full name (a one-person company named after them). Its own
    contact fields (a company phone, info@...) stay."""
    strong = personal.strong_only()
    row = conn.execute(
        select(accounts.c.name, accounts.c.traits).where(accounts.c.id == account_id)
    ).first()
    if row is None:
        return 0
    name = scrub_text(row.name, strong, any_email=False) or row.name
    traits = scrub_json(row.traits, strong, by_key=False) if row.traits is not None else None
    if (name, traits) == (row.name, row.traits):
        return 0
    conn.execute(
        update(accounts).where(accounts.c.id == account_id).values(name=name, traits=traits)
    )
    return 1


def _tombstone_payload(payload: Any, tomb: Mapping[str, Any]) -> Any:
    """A webhook payload's ``lead`` block as the tombstone reads now (e-mail and names
    null, ``erased_at`` set): what a replay sends."""
    if not isinstance(payload, dict) or not isinstance(payload.get("lead"), dict):
        return payload
    block = {k: (_plain(tomb[k]) if k in tomb else v) for k, v in payload["lead"].items()}
    block["erased_at"] = _plain(tomb["erased_at"])
    return {**payload, "lead": block}
