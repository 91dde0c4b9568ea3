"""Who a message is about: identities (``userId``, ``anonymousId``) to leads, and the
resolution of each message type (identify, alias, group, track/page) to its lead.

The rules are in the package docs (:mod:`leadflow.services.ingest`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import accounts, events, identities, leads
from leadflow.core.tracking import TrackedMessage
from leadflow.core.traits import read_group
from leadflow.services.ingest.accounts import (
    _lead_by_email,
    _log_dropped,
    _store_account_traits,
    apply_lead_traits,
    find_or_create_account,
)
from leadflow.services.ingest.merge import merge_leads

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


def _current_lead(ids: _Identities, msg: TrackedMessage, lead_id: int | None) -> int | None:
    if msg.user_id is not None and (found := ids.known.get(("user", msg.user_id))) is not None:
        return found
    if (
        msg.anonymous_id is not None
        and (found := ids.known.get(("anonymous", msg.anonymous_id))) is not None
    ):
        return found
    return None if lead_id is None else ids.current(lead_id)
