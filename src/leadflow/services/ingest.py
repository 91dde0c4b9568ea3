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
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Connection,
    Dialect,
    Engine,
    Table,
    UniqueConstraint,
    bindparam,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert

from leadflow.adapters.db.engine import bind_processors, bulk_insert_ignore, insert_ignore
from leadflow.adapters.db.tables import (
    accounts,
    events,
    identities,
    leads,
    metadata,
)
from leadflow.core.inputs import count_problem
from leadflow.core.lifecycle import is_withdrawal
from leadflow.core.model import Event
from leadflow.core.tracking import TrackedMessage
from leadflow.core.traits import (
    ACCOUNT_COLUMN_TRAITS as ACCOUNT_COLUMN_TRAITS,
)
from leadflow.core.traits import (
    FREE_MAIL_DOMAINS as FREE_MAIL_DOMAINS,
)
from leadflow.core.traits import (
    PERSON_LENGTHS,
    AccountReading,
    read_group,
    read_traits,
)
from leadflow.core.traits import (
    email_domain as email_domain,
)
from leadflow.services import privacy

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writers poll SQLite's lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

AfterIngest = Callable[[Connection, set[int], datetime], None]

STORED_EVENTS = "leadflow.stored_events"
"""``Connection.info`` key: while the after-ingest hooks run, the events this unit of work
stored, by lead (``dict[int, list[Event]]``), so that they are passed along rather than
read back; absent or None when not known."""

# Statements on the hot path are built once: building one per call (``.values(...)``) and
# computing its cache key costs more than executing it.
_INSERT_LEAD = leads.insert().returning(leads.c.id)
_IDENTITY_LEAD = select(identities.c.lead_id).where(
    identities.c.kind == bindparam("k"), identities.c.value == bindparam("v")
)
_PRELOAD = select(identities.c.value, identities.c.lead_id).where(
    identities.c.kind == bindparam("k"), identities.c.value.in_(bindparam("vs", expanding=True))
)
_IDENTITY_INSERT: dict[str, Insert] = {}
# On SQLite the lists go as one JSON array parameter (``IN (SELECT value FROM
# json_each(?))``): the statement text never changes, so sqlite3 reuses its prepared
# statement, where an expanding parameter is re-rendered and re-prepared for every call
# (a noticeable share of the time the write lock is held).
_SQLITE_IN: dict[tuple[Select[Any], str], tuple[str, tuple[str, ...]]] = {}


def _select_in(
    conn: Connection, stmt: Select[Any], name: str, values: list[str], **params: Any
) -> Sequence[Any]:
    """Rows of ``stmt`` whose expanding parameter ``name`` is ``values``."""
    if conn.dialect.name == "sqlite":
        cached = _SQLITE_IN.get((stmt, name))
        if cached is None:
            compiled = stmt.compile(dialect=conn.dialect)
            marker = f"(__[POSTCOMPILE_{name}])"
            text = str(compiled)
            if text.count(marker) != 1:
                raise AssertionError(f"expected one expanding {name!r} in {text}")
            sql = text.replace(marker, "(SELECT value FROM json_each(?))")
            cached = _SQLITE_IN[(stmt, name)] = (sql, tuple(compiled.positiontup or ()))
        try:
            encoded = orjson.dumps(values).decode()
        except TypeError:  # not plain strings (e.g. a lone surrogate): the general way
            encoded = None
        if encoded is not None:
            sql, order = cached
            ordered = tuple(encoded if key == name else params[key] for key in order)
            return conn.exec_driver_sql(sql, ordered).all()
    return conn.execute(stmt, {name: values, **params}).all()


def _insert_identity(conn: Connection) -> Insert:
    """INSERT ... ON CONFLICT (kind, value) DO NOTHING for identities, built once per dialect."""
    stmt = _IDENTITY_INSERT.get(conn.dialect.name)
    if stmt is None:
        stmt = _IDENTITY_INSERT[conn.dialect.name] = insert_ignore(
            conn.engine, identities, "kind", "value"
        )
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
        # One statement, compiled once: values are expanding parameters.
        for kind, values in (("anonymous", anon), ("user", users)):
            listed = list(values)
            for start in range(0, len(listed), 5000):
                rows = _select_in(self.conn, _PRELOAD, "vs", listed[start : start + 5000], k=kind)
                for value, lead_id in rows:
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
            _insert_identity(self.conn),
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
    conn: Connection, lead_id: int, traits: Mapping[str, Any], now: datetime
) -> None:
    """Store an identify's traits on the lead as :func:`leadflow.core.traits.read_traits`
    reads them (the reading the replayed profile folds): text columns, e-mail (set once,
    never taken from another lead), consent, the account of ``company``, the rest as free
    attributes. Empty values never erase what is stored."""
    reading = read_traits(traits)
    row = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().one()
    changes: dict[str, Any] = reading.person_changes(
        {column: row[column] for column in PERSON_LENGTHS}
    )
    email = reading.email
    if email is not None and row["email"] is None and _lead_by_email(conn, email) is None:
        changes["email"] = email
    if reading.consent is not None:
        changes.update(
            consent_status=reading.consent,
            consent_at=now,
            consent_method=reading.consent_method,
        )
    if reading.company is not None:
        account_id = _account_from_company(
            conn, reading.company, row["email"] or reading.email, now
        )
        if account_id is not None and row["account_id"] != account_id:
            changes["account_id"] = account_id
    stored = row["attributes"] or {}
    attributes = {**stored, **reading.attributes}
    if attributes != stored:
        changes["attributes"] = attributes
    if changes:
        changes["updated_at"] = now
        conn.execute(update(leads).where(leads.c.id == lead_id).values(**changes))


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
    create it if none matches. Known fields fill blanks and never erase; ``is_target`` (a
    yes/no the sender decides) takes the latest value."""
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
    changes = {
        k: v
        for k, v in values.items()
        if account[k] in (None, "") or (k == "is_target" and account[k] != v)
    }
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
    conn: Connection, company: AccountReading, email: str | None, now: datetime
) -> int | None:
    """The account of an identify's ``company`` (its domain, else the e-mail's)."""
    if company.dropped_count is not None:
        _log_dropped(company.dropped_count)
    return find_or_create_account(
        conn,
        now=now,
        name=company.name,
        domain=company.domain or email_domain(email),
        external_id=company.external_id,
        fields=company.fields(),
    )


def _log_dropped(count: Any) -> None:
    # The tracking API refuses these at the door; other paths (forms, imports) may still
    # carry one: a number no column can hold is dropped, never stored.
    log.warning("employee count %.40r dropped: %s", count, count_problem(count))


def merge_leads(conn: Connection, keep: int, drop: int, now: datetime) -> None:
    """Merge lead ``drop`` into ``keep``: rows that point at it move, blanks are filled.

    Generic over the schema: every table with a foreign key to ``leads.id`` is handled, so
    tables added later follow without changes here. Rows of a table where the lead id is
    unique on its own (one row per lead, e.g. a derived state) are deleted for the dropped
    lead (they are recomputed for the kept one); where it is part of a composite unique
    key, a row of ``drop`` that would collide with one of ``keep`` is deleted; every other
    row is re-pointed at ``keep``."""
    if keep == drop:
        return
    kept = conn.execute(select(leads).where(leads.c.id == keep)).mappings().one()
    dropped = conn.execute(select(leads).where(leads.c.id == drop)).mappings().one()
    for table, column in _lead_references():
        _repoint(conn, table, column, keep, drop)
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
    elif (
        kept["consent_status"] == "granted"
        and is_withdrawal(dropped["consent_status"], dropped["consent_method"])
        and (kept["consent_at"] is None or kept["consent_at"] < dropped["consent_at"])
    ):
        # The person withdrew consent (unsubscribed) after the kept record's grant.
        fill.update(
            consent_status=dropped["consent_status"],
            consent_at=dropped["consent_at"],
            consent_method=dropped["consent_method"],
        )
    if dropped["created_at"] < kept["created_at"]:
        fill["created_at"] = dropped["created_at"]
    # An unsubscribe or hard bounce of either record holds for the merged person.
    for col in ("unsubscribed_at", "bounced_at"):
        if dropped[col] is not None and (kept[col] is None or dropped[col] < kept[col]):
            fill[col] = dropped[col]
    attributes = {**(dropped["attributes"] or {}), **(kept["attributes"] or {})}
    conn.execute(delete(leads).where(leads.c.id == drop))
    conn.execute(
        update(leads)
        .where(leads.c.id == keep)
        .values(**fill, attributes=attributes, updated_at=now)
    )


def _lead_references() -> list[tuple[Table, Column[Any]]]:
    """(table, column) for every foreign key to ``leads.id`` in the schema."""
    found = []
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table is leads and fk.column.name == "id" and table is not leads:
                found.append((table, fk.parent))
    return found


def _unique_sets(table: Table) -> list[set[str]]:
    sets = [{c.name for c in table.primary_key.columns}]
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            sets.append({c.name for c in constraint.columns})
    for index in table.indexes:
        if index.unique and all(isinstance(e, Column) for e in index.expressions):
            sets.append({c.name for c in index.columns})
    sets.extend({c.name} for c in table.columns if c.unique)
    return [s for s in sets if s]


def _repoint(conn: Connection, table: Table, column: Column[Any], keep: int, drop: int) -> None:
    uniques = [s for s in _unique_sets(table) if column.name in s]
    if any(s == {column.name} for s in uniques):
        conn.execute(delete(table).where(column == drop))
        return
    for names in uniques:
        other = table.alias()
        same = [other.c[n] == table.c[n] for n in sorted(names - {column.name})]
        conn.execute(
            delete(table).where(column == drop, exists().where(other.c[column.name] == keep, *same))
        )
    conn.execute(update(table).where(column == drop).values({column.name: keep}))


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
    account = read_group(msg.traits, msg.group_id)
    if account.dropped_count is not None:
        _log_dropped(account.dropped_count)
    account_id = find_or_create_account(
        conn,
        now=now,
        name=account.name or msg.group_id,
        domain=account.domain,
        external_id=msg.group_id,
        fields=account.fields(),
    )
    if account_id is not None:
        _store_account_traits(conn, account_id, account.extra, now)
    if lead_id is not None and account_id is not None:
        conn.execute(
            update(leads).where(leads.c.id == lead_id).values(account_id=account_id, updated_at=now)
        )
    return lead_id


def _store_account_traits(
    conn: Connection, account_id: int, extra: Mapping[str, Any], now: datetime
) -> None:
    """``group`` traits without a column of their own (``AccountReading.extra``) are kept
    in ``accounts.traits`` (latest value wins; empty values never erase)."""
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


EVENT_COLUMNS = (
    "message_id",
    "type",
    "name",
    "lead_id",
    "anonymous_id",
    "user_id",
    "properties",
    "context",
    "page_url",
    "referrer",
    "utm_campaign",
    "utm_source",
    "utm_medium",
    "channel",
    "occurred_at",
    "received_at",
)
_LEAD_INDEX = EVENT_COLUMNS.index("lead_id")
_SEEN = select(events.c.message_id).where(events.c.message_id.in_(bindparam("ids", expanding=True)))


def _event_properties(msg: TrackedMessage) -> dict[str, Any]:
    if msg.type not in ("identify", "group"):
        return dict(msg.properties)
    return {"traits": dict(msg.traits), **({"groupId": msg.group_id} if msg.group_id else {})}


class _EventRows:
    """Event rows as driver-ready tuples (SQLAlchemy's own conversions, applied once)."""

    def __init__(self, dialect: Dialect) -> None:
        procs = bind_processors(dialect, events, EVENT_COLUMNS)
        self.properties = procs[EVENT_COLUMNS.index("properties")] or _same
        self.context = procs[EVENT_COLUMNS.index("context")] or _same
        self.time = procs[EVENT_COLUMNS.index("occurred_at")] or _same
        self._received: dict[datetime, Any] = {}

    def row(
        self, msg: TrackedMessage, lead_id: int | None, received_at: datetime
    ) -> tuple[Any, ...]:
        received = self._received.get(received_at)
        if received is None:
            received = self._received[received_at] = self.time(received_at)
        return (
            msg.message_id,
            msg.type,
            msg.name,
            lead_id,
            msg.anonymous_id,
            msg.user_id,
            self.properties(_event_properties(msg)),
            self.context(dict(msg.context)),
            msg.page_url,
            msg.referrer,
            msg.utm_campaign,
            msg.utm_source,
            msg.utm_medium,
            msg.channel,
            self.time(msg.occurred_at),
            received,
        )


def _same(value: Any) -> Any:
    return value


Part = tuple[Sequence[TrackedMessage], datetime]


def ingest_in(
    conn: Connection, messages: Sequence[TrackedMessage], received_at: datetime
) -> IngestResult:
    """Store ``messages`` inside the caller's transaction."""
    results, _ = ingest_parts_in(conn, [(messages, received_at)])
    return results[0]


def _without_suppressed_emails(
    conn: Connection, fresh: list[tuple[int, TrackedMessage]]
) -> list[tuple[int, TrackedMessage]]:
    """An erased person asked never to be contacted: their address is taken out of every
    message (traits, context.traits, properties, URLs, ids) before anything is stored, so
    no lead is made or matched from it (:func:`leadflow.services.privacy.guard_messages`)."""
    guarded = privacy.guard_messages(conn, [m for _, m in fresh])
    return [(i, m) for (i, _), m in zip(fresh, guarded, strict=True) if m is not None]


def ingest_parts_in(conn: Connection, parts: Sequence[Part]) -> tuple[list[IngestResult], set[int]]:
    """Store several requests' messages inside the caller's transaction, in order, as if
    each part were ingested after the previous one; each keeps its own ``received_at``.

    Returns a result per part and every lead touched (after merges: leads merged away in
    this transaction are replaced by the lead they went into)."""
    results, touched, _ = _ingest_parts_in(conn, parts, None)
    return results, touched


_Prepared = dict[int, tuple[TrackedMessage, tuple[Any, ...]]]


def _prepare_rows(dialect: Dialect, parts: Sequence[Part]) -> _Prepared:
    """Event rows without their lead, built before the write transaction so that the
    database's write lock is held for less time (JSON encoding, date formatting). Keyed by
    the message object: a message replaced during ingestion gets its row rebuilt."""
    builder = _EventRows(dialect)
    return {
        id(msg): (msg, builder.row(msg, None, received_at))
        for messages, received_at in parts
        for msg in messages
    }


def _ingest_parts_in(
    conn: Connection, parts: Sequence[Part], prepared: _Prepared | None
) -> tuple[list[IngestResult], set[int], dict[int, list[Event]] | None]:
    results = [IngestResult() for _ in parts]
    unique: dict[str, tuple[int, TrackedMessage]] = {}
    for index, (messages, _) in enumerate(parts):
        for msg in messages:
            if msg.message_id in unique:
                results[index].duplicates += 1
            else:
                unique[msg.message_id] = (index, msg)
    if not unique:
        return results, set(), {}
    ids_list = list(unique)
    seen: set[str] = set()
    for start in range(0, len(ids_list), 5000):
        seen.update(
            row[0] for row in _select_in(conn, _SEEN, "ids", ids_list[start : start + 5000])
        )
    fresh: list[tuple[int, TrackedMessage]] = []
    for message_id, (index, msg) in unique.items():
        if message_id in seen:
            results[index].duplicates += 1
        else:
            fresh.append((index, msg))
    fresh = _without_suppressed_emails(conn, fresh)
    ids = _Identities(conn)
    ids.preload([m for _, m in fresh])
    resolved: list[tuple[int, TrackedMessage, int | None]] = []
    for index, msg in fresh:
        now = parts[index][1]
        if msg.type == "identify":
            lead_id = _resolve_identify(conn, ids, msg, now)
        elif msg.type == "alias":
            lead_id = _resolve_alias(conn, ids, msg, now)
        elif msg.type == "group":
            lead_id = _resolve_group(conn, ids, msg, now)
        else:
            lead_id = _resolve_event(conn, ids, msg, now)
        if lead_id is not None:
            results[index].leads_touched.add(lead_id)
        resolved.append((index, msg, lead_id))
    # Identities linked later in this transaction (a page view before the identify in the
    # same batch) and leads merged away during it: point every row at its lead now.
    rows = []
    builder: _EventRows | None = None
    for index, msg, lead_id in resolved:
        lead = _current_lead(ids, msg, lead_id)
        row = prepared.get(id(msg)) if prepared else None
        if row is None or row[0] is not msg:
            builder = builder or _EventRows(conn.dialect)
            rows.append(builder.row(msg, lead, parts[index][1]))
        else:
            rows.append((*row[1][:_LEAD_INDEX], lead, *row[1][_LEAD_INDEX + 1 :]))
    touched: set[int] = set()
    for result in results:
        result.leads_touched = {ids.current(lead_id) for lead_id in result.leads_touched}
        touched |= result.leads_touched
    passed: dict[int, list[Event]] = defaultdict(list)
    for (_, stored_msg, _), stored_row in zip(resolved, rows, strict=True):
        owner: int | None = stored_row[_LEAD_INDEX]
        if owner is not None:
            passed[owner].append(_as_event(stored_msg, owner))
    stored = 0
    for start in range(0, len(rows), 5000):
        stored += bulk_insert_ignore(
            conn, events, EVENT_COLUMNS, rows[start : start + 5000], ("message_id",)
        )
    # A concurrent writer stored some of the same message ids after our check (PostgreSQL
    # only; SQLite writers are serialised): they are duplicates. Which request they came
    # from is not known, so the shortfall is counted against the last parts.
    shortfall = len(rows) - stored
    per_part = [0] * len(parts)
    for index, _, _ in resolved:
        per_part[index] += 1
    for index in reversed(range(len(parts))):
        taken = min(shortfall, per_part[index])
        shortfall -= taken
        results[index].stored += per_part[index] - taken
        results[index].duplicates += taken
    # What was stored, passed along to the handlers; unknown when a concurrent writer took
    # some of the rows (they then read the store).
    return results, touched, (passed if len(rows) == stored else None)


def _as_event(msg: TrackedMessage, lead_id: int) -> Event:
    """The event as the store gives it back (:func:`lifecycle.event_from_row`)."""
    props = msg.traits if msg.type in ("identify", "group") else msg.properties
    return Event(
        message_id=msg.message_id,
        type=msg.type,
        occurred_at=msg.occurred_at,
        lead_id=lead_id,
        name=msg.name,
        properties=dict(props),
        page_url=msg.page_url,
        referrer=msg.referrer,
        utm_campaign=msg.utm_campaign,
        utm_source=msg.utm_source,
        utm_medium=msg.utm_medium,
        channel=msg.channel,
    )


def _current_lead(ids: _Identities, msg: TrackedMessage, lead_id: int | None) -> int | None:
    if msg.user_id is not None and (found := ids.known.get(("user", msg.user_id))) is not None:
        return found
    if (
        msg.anonymous_id is not None
        and (found := ids.known.get(("anonymous", msg.anonymous_id))) is not None
    ):
        return found
    return None if lead_id is None else ids.current(lead_id)


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
    return ingest_parts(engine, [(messages, received_at)], after=after, attempts=attempts)[0]


def ingest_parts(
    engine: Engine,
    parts: Sequence[Part],
    *,
    after: Iterable[AfterIngest] = (),
    attempts: int = 3,
) -> list[IngestResult]:
    """Several requests' messages in ONE transaction (group commit); see :func:`ingest`.
    The hooks run once, with every lead touched and the latest ``received_at``."""
    latest = max(received_at for _, received_at in parts)
    prepared = _prepare_rows(engine.dialect, parts)
    for attempt in range(1, attempts + 1):
        try:
            with _write_turn(engine), engine.begin() as conn:
                results, touched, passed = _ingest_parts_in(conn, parts, prepared)
                conn.info[STORED_EVENTS] = passed
                try:
                    for hook in after:
                        hook(conn, touched, latest)
                finally:
                    conn.info.pop(STORED_EVENTS, None)
            return results
        except DBAPIError as exc:
            if attempt == attempts or not _is_retryable(exc):
                raise
            log.info("ingest: race with a concurrent writer, retrying (attempt %d)", attempt)
    raise AssertionError("unreachable")


# Seconds a writer waits for its turn before writing without it (engines built by
# ``build_services`` carry LEADFLOW_SQLITE_TURN_TIMEOUT as this execution option).
TURN_TIMEOUT = 5.0
TURN_TIMEOUT_OPTION = "leadflow_turn_timeout"
_TURNS: dict[str, _Turn | None] = {}
_TURNS_LOCK = threading.Lock()
_TURN_HELD = threading.local()


class _Turn:
    """The turn file of one SQLite database (``<database>.ingest.lock``), shared by the
    threads of this process.

    ``flock`` has no timeout, so a writer that finds the file locked by another process
    asks this database's helper thread to wait in a blocking ``flock`` and waits for it at
    most the timeout: when the helper gets the lock while the writer still waits, the lock
    passes to the writer at once (no polling, no busy-handler sleeps); when the writer has
    given up, the helper lets go of it. While the helper has waited longer than the timeout
    (the turn is stuck: a process holds the file and does not write), writers go straight
    on without the turn until it frees. The helper thread is started on the first wait and
    lives as long as the process."""

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path, fd
        self.threads = threading.Lock()  # flock does not exclude threads sharing one file
        self._state = threading.Lock()
        self._request = threading.Event()
        self._granted = threading.Event()
        self.idle = threading.Event()  # set while no helper wait is in progress
        self.idle.set()
        self._wanted = False
        self._waiting_since: float | None = None
        self._warned = False
        self._helper: threading.Thread | None = None

    def acquire(self, timeout: float) -> bool:
        """True with the turn held; False after ``timeout`` seconds without it."""
        start = time.monotonic()
        if not self.threads.acquire(timeout=max(timeout, 0.0)):
            return False
        try:
            held = self._take_file(start, timeout)
        except BaseException:
            self.threads.release()
            raise
        if not held:
            self.threads.release()
            if not self._warned:
                self._warned = True
                log.warning(
                    "ingest: no write turn on %s within %.1f s (another process holds the "
                    "file); writing without it, SQLite's own lock still keeps writes safe",
                    self.path,
                    timeout,
                )
        return held

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.threads.release()

    def _take_file(self, start: float, timeout: float) -> bool:
        with self._state:
            if self._waiting_since is None:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    pass
                self._waiting_since = time.monotonic()
                self._granted.clear()
                self.idle.clear()
                if self._helper is None:
                    self._helper = threading.Thread(
                        target=self._help, name="leadflow-ingest-turn", daemon=True
                    )
                    self._helper.start()
                self._request.set()
            deadline = min(start, self._waiting_since) + timeout
            self._wanted = True
        self._granted.wait(max(0.0, deadline - time.monotonic()))
        with self._state:
            self._wanted = False
            if self._granted.is_set():
                self._granted.clear()
                return True
            return False

    def _help(self) -> None:
        while True:
            self._request.wait()
            self._request.clear()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            with self._state:
                self._waiting_since = None
                self._warned = False
                if self._wanted:
                    self._granted.set()  # the waiting writer owns the lock from here on
                else:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)  # nobody waits any more
                self.idle.set()


@contextmanager
def _write_turn(engine: Engine) -> Iterator[None]:
    """Take turns with the other processes' ingest writers on one SQLite file.

    SQLite allows one writer; a writer that finds the database locked polls it, sleeping
    1, 2, 5, 10, 15... ms between tries, so with several processes the write lock sits idle
    most of the time between their transactions. An advisory ``flock`` on the database's
    turn file (:func:`_turn_for`) wakes the next writer as soon as the previous one
    committed. The turn is an optimisation only: SQLite's own lock still guarantees
    correctness, so a writer that does not get the turn within the timeout
    (:data:`TURN_TIMEOUT`, or the engine's ``leadflow_turn_timeout`` execution option)
    logs it and writes without it, and when the file cannot be opened (in-memory
    database, read-only directory) writers simply go without.
    PostgreSQL has row locks and needs no turns."""
    turn = _turn_for(engine)
    held: set[str] = getattr(_TURN_HELD, "paths", None) or set()
    if turn is None or turn.path in held:
        yield  # no file, or this thread already has the turn (a nested call)
        return
    timeout = float(engine.get_execution_options().get(TURN_TIMEOUT_OPTION, TURN_TIMEOUT))
    if not turn.acquire(timeout):
        yield
        return
    _TURN_HELD.paths = held | {turn.path}
    try:
        yield
    finally:
        _TURN_HELD.paths = held
        turn.release()


def _turn_for(engine: Engine) -> _Turn | None:
    """The turn of ``engine``'s SQLite database, or None to go without: the file
    ``<database>.ingest.lock`` beside the database (symbolic links resolved, so every
    process that opens the database by any path meets the same file). Another database,
    or any other local program, has a file of its own and cannot hold this one's turn."""
    if fcntl is None or engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    try:
        path = os.path.realpath(database) + ".ingest.lock"
    except (OSError, ValueError):
        return None
    with _TURNS_LOCK:
        if path not in _TURNS:
            if not os.path.exists(path[: -len(".ingest.lock")]):
                return None  # no database yet: nothing to take turns on
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                log.info("ingest: no turn file %s (%s); writers go without", path, exc)
                _TURNS[path] = None
            else:
                _TURNS[path] = _Turn(path, fd)
        return _TURNS[path]


@dataclass(slots=True)
class _Pending:
    part: Part
    future: Future[IngestResult]


class IngestQueue:
    """Group commit for concurrent callers (the tracking API).

    Callers hand their messages to one writer thread and wait on a future. While a
    transaction commits, new requests queue up; the writer then stores all of them in the
    next transaction (up to ``max_messages``) and resolves every future after the commit,
    so an acknowledgement still means "committed". One writer per process also means no
    two threads of this process fight over SQLite's write lock. If a shared transaction
    fails, each request is retried alone, so one bad request never fails another.

    The thread starts on the first call and ends after ``idle_seconds`` without work.
    ``after`` is read at every commit (hooks may be added after the queue is built).
    """

    def __init__(
        self,
        engine: Engine,
        after: Sequence[AfterIngest] = (),
        *,
        max_messages: int = 2000,
        idle_seconds: float = 2.0,
    ) -> None:
        self.engine = engine
        self.after = after
        self.max_messages = max_messages
        self.idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    def submit(
        self, messages: Sequence[TrackedMessage], received_at: datetime
    ) -> Future[IngestResult]:
        future: Future[IngestResult] = Future()
        with self._lock:
            self._queue.put(_Pending((messages, received_at), future))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="leadflow-ingest", daemon=True).start()
        return future

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            group = [first]
            size = len(first.part[0])
            while size < self.max_messages:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                group.append(item)
                size += len(item.part[0])
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        try:
            results = ingest_parts(self.engine, [p.part for p in group], after=self.after)
        except Exception as exc:
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            log.info("ingest: shared transaction failed (%s); retrying requests one by one", exc)
            for pending in group:
                self._commit([pending])
            return
        for pending, result in zip(group, results, strict=True):
            pending.future.set_result(result)
