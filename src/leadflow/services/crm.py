"""CRM sync: inbound opportunity updates from the CRM and CSV exports in CRM column names.

- :func:`apply_update` takes one update from the CRM (HubSpot, Salesforce...) keyed by the
  CRM's opportunity id (``external_id``) and an idempotency key (``update_id``): amount,
  currency, owner, open date (``created_at``, the CRM's create/engaged date) and close date
  (``closed_at``) are copied to that opportunity and no other; ``won``/``lost`` go through
  :func:`leadflow.services.handoff.win` / :func:`~leadflow.services.handoff.lose` naming
  the opportunity and stamped at the close date, so the stage machine, signals and webhooks
  follow and the stage log reads the history as it happened (a past win for a lead not yet
  at the opportunity stage is accepted as history: the deal's open date moves it there
  first). A close before the open date, or a date outside 1900-2999, is refused naming the
  field. A deal that stays open but opened in the past (``created_at``) moves its person to
  the opportunity stage at that date, when the stage machine has a place for it then (the
  built-in ``open_deal`` action). A transition the stage machine refuses raises
  :class:`~leadflow.services.lifecycle.ActionRefused`; the caller's transaction then rolls
  back and nothing is stored. An opportunity with no lead (CRM-only) is stored but touches
  no lead stage.
- :func:`export_rows` gives leads or opportunities with HubSpot's or Salesforce's standard
  import column names (the entrypoints write them as formula-neutralised CSV).

Every function works inside the caller's transaction.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from leadflow.adapters.db.tables import (
    accounts,
    crm_updates,
    lead_states,
    leads,
    opportunities,
)
from leadflow.core.backfill import open_action_id
from leadflow.core.config import LeadModel
from leadflow.core.lifecycle import OPEN_DEAL
from leadflow.core.model import SalesAction
from leadflow.core.routing import check_lost_reason
from leadflow.services import handoff, lifecycle, privacy
from leadflow.services.lifecycle import ActionRefused

STAGES = ("open", "won", "lost")
UPDATE_FIELDS = (
    "external_id",
    "update_id",
    "lead_email",
    "stage",
    "amount",
    "currency",
    "owner",
    "lost_reason",
    "created_at",
    "closed_at",
)
ACTOR = "crm"
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_EMAIL = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")


# --------------------------------------------------------------------------- validation


def _text(update: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = update.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key}: required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: expected a non-empty string")
    if len(value) > 255:
        raise ValueError(f"{key}: at most 255 characters")
    return value.strip()


def clean_update(update: Mapping[str, Any]) -> dict[str, Any]:
    """Check one update; raises ``ValueError`` naming the field and the reason."""
    if not isinstance(update, Mapping):
        raise ValueError("update: expected an object")
    unknown = sorted(set(update) - set(UPDATE_FIELDS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (known: {', '.join(UPDATE_FIELDS)})")
    clean: dict[str, Any] = {
        "external_id": _text(update, "external_id", required=True),
        "update_id": _text(update, "update_id", required=True),
    }
    email = _text(update, "lead_email")
    if email is not None:
        if not _EMAIL.match(email):
            raise ValueError("lead_email: not a valid email address")
        clean["lead_email"] = email.lower()
    stage = update.get("stage")
    if stage is not None:
        if stage not in STAGES:
            raise ValueError(f"stage: expected one of {', '.join(STAGES)}")
        clean["stage"] = stage
    amount = update.get("amount")
    if amount is not None:
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise ValueError("amount: expected a number")
        if not 0 < float(amount) <= 1e15:
            raise ValueError("amount: must be greater than 0 (and at most 1e15)")
        clean["amount"] = float(amount)
    currency = update.get("currency")
    if currency is not None:
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise ValueError("currency: expected an ISO 4217 code of 3 letters")
        clean["currency"] = currency.upper()
    owner = _text(update, "owner")
    if owner is not None:
        clean["owner"] = owner[:64]
    reason = _text(update, "lost_reason")
    if reason is not None:
        clean["lost_reason"] = reason
    for key in ("created_at", "closed_at"):
        if update.get(key) is not None:
            clean[key] = _when(update[key], key)
    if "created_at" in clean and "closed_at" in clean:
        handoff.check_close(clean["created_at"], clean["closed_at"])
    return clean


def _when(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, date):
        found = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            found = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{field}: expected an ISO 8601 date or time") from None
    else:
        raise ValueError(f"{field}: expected an ISO 8601 date or time")
    return handoff.check_moment(field, found.replace(tzinfo=found.tzinfo or UTC))


# --------------------------------------------------------------------------- updates


def _lead_by_email(conn: Connection, email: str) -> int:
    found = conn.execute(
        select(leads.c.id).where(leads.c.email == email, leads.c.erased_at.is_(None))
    ).scalar_one_or_none()
    if found is None:
        raise LookupError(f"lead_email: no lead with email {email!r}")
    return int(found)


def _by_external_id(conn: Connection, external_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(select(opportunities).where(opportunities.c.external_id == external_id))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def _attach_or_create(
    conn: Connection, model: LeadModel, u: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], bool]:
    """The opportunity the update is about: known by external id, else the lead's open
    opportunity not yet linked to the CRM, else a new one."""
    found = _by_external_id(conn, u["external_id"])
    if found is not None:
        return found, False
    lead_id = _lead_by_email(conn, u["lead_email"]) if "lead_email" in u else None
    if lead_id is not None:
        # The lead's one open deal not yet linked to the CRM; with several open deals the
        # update cannot tell which one it is about: a new opportunity is opened.
        open_ = handoff.open_deals(conn, lead_id)
        opp = open_[0] if len(open_) == 1 else None
        if opp is not None and opp["external_id"] is None:
            conn.execute(
                update(opportunities)
                .where(opportunities.c.id == opp["id"])
                .values(external_id=u["external_id"], updated_at=now)
            )
            opp["external_id"] = u["external_id"]
            return opp, False
    account_id = None
    if lead_id is not None:
        account_id = conn.execute(
            select(leads.c.account_id).where(leads.c.id == lead_id)
        ).scalar_one_or_none()
    opp_id = handoff.create_opportunity(
        conn,
        {
            "name": f"CRM {u['external_id']}",
            "external_id": u["external_id"],
            "account_id": account_id,
            "lead_id": lead_id,
            "amount": u.get("amount"),
            "currency": u.get("currency"),
            "owner": u.get("owner"),
            "created_at": u.get("created_at"),
            "contacts": [{"lead_id": lead_id, "role": "contact"}] if lead_id else [],
        },
        now,
        model=model,
    )
    created = handoff.get_opportunity(conn, opp_id)
    assert created is not None
    return created, True


def _same_moment(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.replace(tzinfo=a.tzinfo or UTC) == b.replace(tzinfo=b.tzinfo or UTC)


def _lost_reason(model: LeadModel, given: str | None) -> str:
    known = [r.key for r in handoff.sales_spec(model).lost_reasons]
    if given is not None:
        check_lost_reason(handoff.sales_spec(model), given)
        return given
    if not known or "other" in known:
        return "other"
    raise ValueError(f"lost_reason: required to mark a deal lost (known: {', '.join(known)})")


def _open_in_history(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    opportunity_id: int,
    opened: datetime | None,
    now: datetime,
) -> None:
    """A deal still open that the CRM says opened in the past puts its person at the
    opportunity stage at that date (the built-in ``open_deal`` action, with the id a later
    close of the deal and the backfill use), when the stage machine has a place for it
    then; a person already at or past the opportunity stage is left as it is."""
    if opened is None or opened >= now:
        return
    with contextlib.suppress(ActionRefused):
        lifecycle.record_action(
            conn,
            SalesAction(
                action_id=open_action_id(opportunity_id),
                name=OPEN_DEAL,
                at=opened,
                lead_id=lead_id,
                actor=ACTOR,
            ),
            model,
            now,
        )


def apply_update(
    conn: Connection, model: LeadModel, update_: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """Apply one CRM update (see the module doc). Returns what happened; the same
    ``update_id`` again returns the first result with ``duplicate: true``."""
    u = clean_update(update_)
    if "lead_email" in u and privacy.is_suppressed(conn, u["lead_email"]):
        # The person was erased: the deal goes on as a CRM-only opportunity, and the
        # address is neither matched nor kept in the update log.
        del u["lead_email"]
    seen = conn.execute(
        select(crm_updates.c.external_id, crm_updates.c.result).where(
            crm_updates.c.update_id == u["update_id"]
        )
    ).first()
    if seen is not None:
        if seen.external_id != u["external_id"]:
            raise ActionRefused(
                f"update_id {u['update_id']!r} was used for opportunity {seen.external_id!r}"
            )
        return {**dict(seen.result or {}), "duplicate": True}
    opp, created = _attach_or_create(conn, model, u, now)
    lead_id = opp["lead_id"]
    stage = u.get("stage")
    values: dict[str, Any] = {}
    for key in ("amount", "currency", "owner"):
        if key in u and u[key] != opp[key]:
            values[key] = u[key]
    if "created_at" in u and not _same_moment(u["created_at"], opp["created_at"]):
        values["created_at"] = u["created_at"]
    opened = values.get("created_at", opp["created_at"])
    closing = stage is not None and stage != opp["stage"]
    if closing and opp["stage"] != "open":
        raise ActionRefused(
            f"stage: opportunity {u['external_id']!r} is already {opp['stage']}; "
            "a closed deal cannot be reopened or closed again"
        )
    if closing and stage == "open":
        closing = False
    at = u.get("closed_at") or (now if closing else opp["closed_at"])
    if at is not None and (closing or opp["stage"] != "open"):
        handoff.check_close(opened, at)
    if values:
        values["updated_at"] = now
        conn.execute(update(opportunities).where(opportunities.c.id == opp["id"]).values(values))
    action: str | None = None
    if closing and lead_id is not None:
        # Through the stage machine, on this deal only: refused transitions raise and
        # nothing is stored.
        action_id = f"crm:{u['update_id']}"[:255]
        if stage == "won":
            handoff.win(
                conn,
                model,
                lead_id,
                now,
                actor=ACTOR,
                action_id=action_id,
                opportunity_id=opp["id"],
                at=u.get("closed_at"),
            )
        else:
            handoff.lose(
                conn,
                model,
                lead_id,
                _lost_reason(model, u.get("lost_reason")),
                now,
                actor=ACTOR,
                action_id=action_id,
                opportunity_id=opp["id"],
                at=u.get("closed_at"),
            )
        action = "win" if stage == "won" else "lose"
        values.update(stage=stage, closed_at=at)
        if stage == "lost":
            values["lost_reason"] = True
    elif closing:
        closed = {"stage": stage, "closed_at": at, "updated_at": now}
        if stage == "lost":
            closed["lost_reason"] = (u.get("lost_reason") or "other")[:64]
        conn.execute(update(opportunities).where(opportunities.c.id == opp["id"]).values(closed))
        values.update(closed)
    elif (
        "closed_at" in u
        and opp["stage"] != "open"
        and not _same_moment(u["closed_at"], opp["closed_at"])
    ):
        values.update(closed_at=u["closed_at"], updated_at=now)
        conn.execute(
            update(opportunities)
            .where(opportunities.c.id == opp["id"])
            .values(closed_at=u["closed_at"], updated_at=now)
        )
    elif lead_id is not None and opp["stage"] == "open" and stage in (None, "open"):
        _open_in_history(conn, model, lead_id, opp["id"], u.get("created_at"), now)
    stored = handoff.get_opportunity(conn, opp["id"])
    assert stored is not None
    lead_stage = None
    if lead_id is not None:
        lead_stage = conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
        ).scalar_one_or_none()
    result = {
        "update_id": u["update_id"],
        "external_id": u["external_id"],
        "opportunity_id": opp["id"],
        "created": created,
        "stage": stored["stage"],
        "amount": stored["amount"],
        "currency": stored["currency"],
        "owner": stored["owner"],
        "lead_id": lead_id,
        "lead_stage": lead_stage,
        "action": action,
        "changed": sorted(k for k in values if k != "updated_at"),
        "duplicate": False,
    }
    payload = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in u.items()}
    conn.execute(
        insert(crm_updates).values(
            update_id=u["update_id"],
            external_id=u["external_id"],
            opportunity_id=opp["id"],
            payload=payload,
            result=result,
            received_at=now,
        )
    )
    return result


# --------------------------------------------------------------------------- export

KINDS = ("leads", "opportunities")
FLAVOURS = ("hubspot", "salesforce")

HUBSPOT_LEAD_COLUMNS = [
    "Email",
    "First Name",
    "Last Name",
    "Job Title",
    "Phone Number",
    "Company Name",
    "Company Domain Name",
    "Lifecycle Stage",
    "Lead Status",
    "HubSpot Score",
    "Original Source",
    "Create Date",
]
SALESFORCE_LEAD_COLUMNS = [
    "Email",
    "FirstName",
    "LastName",
    "Title",
    "Phone",
    "Company",
    "Website",
    "Industry",
    "Status",
    "LeadSource",
    "Rating",
]
HUBSPOT_DEAL_COLUMNS = [
    "Deal Name",
    "Amount",
    "Currency",
    "Deal Stage",
    "Pipeline",
    "Close Date",
    "Deal Owner",
    "Closed Lost Reason",
    "Associated Company",
    "Associated Contact",
    "Create Date",
    "Record ID",
]
SALESFORCE_OPPORTUNITY_COLUMNS = [
    "Id",
    "Name",
    "Amount",
    "CurrencyIsoCode",
    "StageName",
    "CloseDate",
    "OwnerId",
    "AccountName",
    "ContactEmail",
    "Description",
]

# Our stage roles (``stages.<key>.role``) in HubSpot's lifecycle stages and lead statuses
# and Salesforce's lead statuses: a stage maps through its role, whatever its key.
HUBSPOT_LIFECYCLE = {
    "entry": "subscriber",
    "acquired": "lead",
    "nurture": "lead",
    "recycle": "lead",
    "lost": "lead",
    "handoff": "marketingqualifiedlead",
    "sales_accepted": "salesqualifiedlead",
    "opportunity": "opportunity",
    "won": "customer",
    "customer": "customer",
    "expansion": "evangelist",
    "dead_end": "other",
}
HUBSPOT_LEAD_STATUS = {
    "acquired": "OPEN",
    "nurture": "OPEN",
    "handoff": "NEW",
    "sales_accepted": "IN_PROGRESS",
    "opportunity": "OPEN_DEAL",
    "recycle": "BAD_TIMING",
    "lost": "BAD_TIMING",
    "dead_end": "UNQUALIFIED",
    "won": "CONNECTED",
    "customer": "CONNECTED",
    "expansion": "CONNECTED",
}
SALESFORCE_STATUS = {
    "entry": "Open - Not Contacted",
    "acquired": "Open - Not Contacted",
    "nurture": "Open - Not Contacted",
    "handoff": "Open - Not Contacted",
    "sales_accepted": "Working - Contacted",
    "opportunity": "Closed - Converted",
    "won": "Closed - Converted",
    "customer": "Closed - Converted",
    "expansion": "Closed - Converted",
    "recycle": "Closed - Not Converted",
    "lost": "Closed - Not Converted",
    "dead_end": "Closed - Not Converted",
}
HUBSPOT_DEAL_STAGE = {"open": "qualifiedtobuy", "won": "closedwon", "lost": "closedlost"}
SALESFORCE_STAGE = {"open": "Qualification", "won": "Closed Won", "lost": "Closed Lost"}
NOT_PROVIDED = "[not provided]"  # Salesforce's placeholder for its required lead fields


def columns_for(kind: str, flavour: str) -> list[str]:
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}")
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour: expected one of {', '.join(FLAVOURS)}")
    if kind == "leads":
        return list(HUBSPOT_LEAD_COLUMNS if flavour == "hubspot" else SALESFORCE_LEAD_COLUMNS)
    return list(HUBSPOT_DEAL_COLUMNS if flavour == "hubspot" else SALESFORCE_OPPORTUNITY_COLUMNS)


def _day(value: datetime | date | None) -> str | None:
    if value is None:
        return None
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def _rating(grade: str | None) -> str | None:
    return {"A": "Hot", "B": "Warm", "C": "Cold", "D": "Cold"}.get(grade or "")


def _lead_rows(conn: Connection, flavour: str, model: LeadModel) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            leads.c.email,
            leads.c.first_name,
            leads.c.last_name,
            leads.c.title,
            leads.c.phone,
            leads.c.source,
            leads.c.created_at,
            accounts.c.name.label("company"),
            accounts.c.domain,
            accounts.c.industry,
            lead_states.c.stage,
            lead_states.c.engagement,
            lead_states.c.fit_grade,
        )
        .select_from(
            leads.outerjoin(accounts, accounts.c.id == leads.c.account_id).outerjoin(
                lead_states, lead_states.c.lead_id == leads.c.id
            )
        )
        .where(leads.c.erased_at.is_(None), leads.c.email.is_not(None))
        .order_by(leads.c.id)
    ).mappings()
    out = []
    for r in rows:
        stage = model.role_of(r["stage"] or model.initial_stage) or ""
        if flavour == "hubspot":
            out.append(
                {
                    "Email": r["email"],
                    "First Name": r["first_name"],
                    "Last Name": r["last_name"],
                    "Job Title": r["title"],
                    "Phone Number": r["phone"],
                    "Company Name": r["company"],
                    "Company Domain Name": r["domain"],
                    "Lifecycle Stage": HUBSPOT_LIFECYCLE.get(stage, "other"),
                    "Lead Status": HUBSPOT_LEAD_STATUS.get(stage),
                    "HubSpot Score": round(float(r["engagement"] or 0.0), 2),
                    "Original Source": r["source"],
                    "Create Date": _day(r["created_at"]),
                }
            )
        else:
            out.append(
                {
                    "Email": r["email"],
                    "FirstName": r["first_name"],
                    "LastName": r["last_name"] or NOT_PROVIDED,
                    "Title": r["title"],
                    "Phone": r["phone"],
                    "Company": r["company"] or NOT_PROVIDED,
                    "Website": r["domain"],
                    "Industry": r["industry"],
                    "Status": SALESFORCE_STATUS.get(stage, "Open - Not Contacted"),
                    "LeadSource": r["source"],
                    "Rating": _rating(r["fit_grade"]),
                }
            )
    return out


def _opportunity_rows(conn: Connection, flavour: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            opportunities,
            accounts.c.name.label("account_name"),
            leads.c.email.label("contact_email"),
        )
        .select_from(
            opportunities.outerjoin(
                accounts, accounts.c.id == opportunities.c.account_id
            ).outerjoin(leads, leads.c.id == opportunities.c.lead_id)
        )
        .order_by(opportunities.c.id)
    ).mappings()
    out = []
    for r in rows:
        close = _day(r["closed_at"]) or _day(r["expected_close"])
        if flavour == "hubspot":
            out.append(
                {
                    "Deal Name": r["name"],
                    "Amount": r["amount"],
                    "Currency": r["currency"],
                    "Deal Stage": HUBSPOT_DEAL_STAGE[r["stage"]],
                    "Pipeline": "default",
                    "Close Date": close,
                    "Deal Owner": r["owner"],
                    "Closed Lost Reason": r["lost_reason"],
                    "Associated Company": r["account_name"],
                    "Associated Contact": r["contact_email"],
                    "Create Date": _day(r["created_at"]),
                    "Record ID": r["external_id"],
                }
            )
        else:
            out.append(
                {
                    "Id": r["external_id"],
                    "Name": r["name"],
                    "Amount": r["amount"],
                    "CurrencyIsoCode": r["currency"],
                    "StageName": SALESFORCE_STAGE[r["stage"]],
                    "CloseDate": close,
                    "OwnerId": r["owner"],
                    "AccountName": r["account_name"],
                    "ContactEmail": r["contact_email"],
                    "Description": f"lost: {r['lost_reason']}" if r["lost_reason"] else None,
                }
            )
    return out


def export_rows(
    conn: Connection, kind: str, flavour: str, model: LeadModel
) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and rows of a CRM export (``kind`` leads|opportunities, ``flavour``
    hubspot|salesforce). Values are raw: write them with formula neutralisation. A lead's
    CRM status follows its stage's role in ``model`` (the active one)."""
    columns = columns_for(kind, flavour)
    leads_ = kind == "leads"
    return columns, _lead_rows(conn, flavour, model) if leads_ else _opportunity_rows(conn, flavour)
