"""Opportunities: open one (with contacts and their buying roles), read and list them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select

from leadflow.adapters.db.tables import accounts, leads, opportunities, opportunity_contacts
from leadflow.core.config import LeadModel
from leadflow.services import privacy
from leadflow.services.handoff.common import _signal, require_lead

BUYING_ROLES = (
    "decision_maker",
    "economic_buyer",
    "influencer",
    "champion",
    "user",
    "technical_evaluator",
    "gatekeeper",
    "contact",
)


def _open_opportunity(conn: Connection, lead_id: int) -> dict[str, Any] | None:
    as_contact = select(opportunity_contacts.c.opportunity_id).where(
        opportunity_contacts.c.lead_id == lead_id
    )
    row = (
        conn.execute(
            select(opportunities)
            .where(
                opportunities.c.stage == "open",
                or_(opportunities.c.lead_id == lead_id, opportunities.c.id.in_(as_contact)),
            )
            .order_by((opportunities.c.lead_id == lead_id).desc(), opportunities.c.id.desc())
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def create_opportunity(
    conn: Connection,
    data: Mapping[str, Any],
    now: datetime,
    *,
    model: LeadModel | None = None,
) -> int:
    """Open an opportunity (amount, currency, close date, owner, account, contacts with
    buying roles). References to unknown leads or accounts raise ``LookupError``."""
    account_id = data.get("account_id")
    if (
        account_id is not None
        and conn.execute(select(accounts.c.id).where(accounts.c.id == account_id)).first() is None
    ):
        raise LookupError(f"account_id: no account with id {account_id}")
    contacts = list(data.get("contacts") or [])
    lead_ids = {c["lead_id"] for c in contacts}
    if data.get("lead_id") is not None:
        lead_ids.add(data["lead_id"])
    for lid in sorted(lead_ids):
        require_lead(conn, lid)
    for c in contacts:
        if c["role"] not in BUYING_ROLES:
            raise ValueError(f"role: unknown buying role '{c['role']}'")
    ext = data.get("external_id")
    if (
        ext is not None
        and conn.execute(
            select(opportunities.c.id).where(opportunities.c.external_id == ext)
        ).first()
        is not None
    ):
        raise ValueError(f"external_id: an opportunity with external_id '{ext}' exists")
    res = conn.execute(
        insert(opportunities).values(
            external_id=ext,
            account_id=account_id,
            lead_id=data.get("lead_id"),
            name=privacy.without_suppressed(conn, str(data["name"]))[0][:255],
            amount=data.get("amount"),
            currency=(data.get("currency") or "KRW").upper(),
            expected_close=data.get("expected_close"),
            stage="open",
            owner=data.get("owner"),
            created_at=now,
            updated_at=now,
        )
    )
    opp_id = int(res.inserted_primary_key[0])  # type: ignore[index]  # an insert has a key
    seen: set[int] = set()
    for c in contacts:
        if c["lead_id"] in seen:
            continue
        seen.add(c["lead_id"])
        conn.execute(
            insert(opportunity_contacts).values(
                opportunity_id=opp_id, lead_id=c["lead_id"], role=c["role"]
            )
        )
    primary = data.get("lead_id") or (contacts[0]["lead_id"] if contacts else None)
    if primary is not None and model is not None:
        _signal(
            conn,
            "opportunity.created",
            primary,
            now,
            "opportunity.create",
            model,
            {
                "opportunity_id": opp_id,
                "amount": data.get("amount"),
                "currency": (data.get("currency") or "KRW").upper(),
                "owner": data.get("owner"),
                "account_id": account_id,
            },
        )
    return opp_id


def get_opportunity(conn: Connection, opp_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(opportunities).where(opportunities.c.id == opp_id)).mappings().first()
    if row is None:
        return None
    found = dict(row)
    found["contacts"] = [
        dict(c)
        for c in conn.execute(
            select(opportunity_contacts.c.lead_id, leads.c.email, opportunity_contacts.c.role)
            .select_from(
                opportunity_contacts.join(leads, leads.c.id == opportunity_contacts.c.lead_id)
            )
            .where(opportunity_contacts.c.opportunity_id == opp_id)
            .order_by(opportunity_contacts.c.id)
        ).mappings()
    ]
    return found


def list_opportunities(
    conn: Connection,
    *,
    account_id: int | None = None,
    stage: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = select(opportunities).order_by(opportunities.c.id).limit(limit).offset(offset)
    if account_id is not None:
        query = query.where(opportunities.c.account_id == account_id)
    if stage is not None:
        query = query.where(opportunities.c.stage == stage)
    return [dict(r) for r in conn.execute(query).mappings()]
