"""Traits onto the stored lead and its account, as :mod:`leadflow.core.traits` reads them
(the reading the replayed profile folds too)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from leadflow.adapters.db.tables import accounts, leads
from leadflow.core.inputs import count_problem
from leadflow.core.traits import PERSON_LENGTHS, AccountReading, email_domain, read_traits

log = logging.getLogger(__name__)


def _lead_by_email(conn: Connection, email: str) -> int | None:
    return conn.execute(select(leads.c.id).where(leads.c.email == email)).scalar_one_or_none()


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
