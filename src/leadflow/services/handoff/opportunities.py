"""Opportunities: open one (with contacts and their buying roles, opened at the source's
date), read and list them; find the deal a sales action or a CRM update names."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
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


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def check_moment(field: str, value: datetime) -> datetime:
    """A source's date, in UTC, within 1900-2999; ``ValueError`` naming ``field``."""
    found = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= found < LATEST:
        raise ValueError(f"{field}: must be between 1900 and 2999 (got {found.date()})")
    return found


def check_close(opened: datetime, closed: datetime, field: str = "closed_at") -> None:
    """A deal cannot close before it opened."""
    if _utc(closed) < _utc(opened):
        raise ValueError(
            f"{field}: {closed.date()} is before the opportunity opened ({opened.date()})"
        )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def open_deals(
    conn: Connection, lead_id: int, *, at: datetime | None = None, besides: int | None = None
) -> list[dict[str, Any]]:
    """The lead's deals (as primary lead or contact) open now, or open at ``at`` by their
    open and close dates; without the deal ``besides``."""
    as_contact = select(opportunity_contacts.c.opportunity_id).where(
        opportunity_contacts.c.lead_id == lead_id
    )
    query = select(opportunities).where(
        or_(opportunities.c.lead_id == lead_id, opportunities.c.id.in_(as_contact))
    )
    if besides is not None:
        query = query.where(opportunities.c.id != besides)
    rows = [dict(r) for r in conn.execute(query.order_by(opportunities.c.id)).mappings()]
    if at is None:
        return [r for r in rows if r["stage"] == "open"]
    moment = _utc(at)
    return [
        r
        for r in rows
        if _utc(r["created_at"]) <= moment
        and (r["stage"] == "open" or r["closed_at"] is None or _utc(r["closed_at"]) > moment)
    ]


def deal_for(conn: Connection, lead_id: int, opportunity_id: int | None) -> dict[str, Any] | None:
    """The deal a sales action on ``lead_id`` changes: the one it names (it must be the
    lead's), else the lead's only open deal; a lead with several open deals must name one."""
    if opportunity_id is not None:
        found = get_opportunity(conn, opportunity_id)
        if found is None:
            raise LookupError(f"opportunity_id: no opportunity with id {opportunity_id}")
        contacts = {c["lead_id"] for c in found["contacts"]}
        if found["lead_id"] != lead_id and lead_id not in contacts:
            raise ValueError(
                f"opportunity_id: opportunity {opportunity_id} is not lead {lead_id}'s"
            )
        return found
    found_open = open_deals(conn, lead_id)
    if len(found_open) > 1:
        ids = ", ".join(str(r["id"]) for r in found_open)
        raise ValueError(
            f"opportunity_id: required, lead {lead_id} has {len(found_open)} open "
            f"opportunities ({ids})"
        )
    return found_open[0] if found_open else None


def create_opportunity(
    conn: Connection,
    data: Mapping[str, Any],
    now: datetime,
    *,
    model: LeadModel | None = None,
) -> int:
    """Open an opportunity (amount, currency, close date, owner, account, contacts with
    buying roles), opened at ``data["created_at"]`` (the source's open/engaged date,
    default ``now``). References to unknown leads or accounts raise ``LookupError``."""
    opened = data.get("created_at")
    opened = now if opened is None else check_moment("created_at", opened)
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
            created_at=opened,
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
                "created_at": opened.isoformat(),
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
