"""Sales actions on the deal: :func:`qualify` (BANT, and with an amount the opportunity),
:func:`win` and :func:`lose`, recorded like the hand-off actions (:mod:`.actions`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from leadflow.adapters.db.tables import accounts, lead_states, leads, opportunities
from leadflow.core.config import LeadModel
from leadflow.core.model import Bant
from leadflow.core.routing import check_lost_reason
from leadflow.services import lifecycle
from leadflow.services.handoff.actions import ActionResult, _record, _recycled, _seen
from leadflow.services.handoff.common import (
    _close,
    _signal,
    _stage,
    active_assignment,
    require_lead,
    sales_spec,
)
from leadflow.services.handoff.opportunities import (
    BUYING_ROLES,
    _open_opportunity,
    create_opportunity,
)


def _check_bant(model: LeadModel, bant: Mapping[str, Any]) -> dict[str, Any]:
    levels = model.spec.qualification.levels
    clean: dict[str, Any] = {}
    for key, value in bant.items():
        if key not in ("budget", "authority", "need", "timeframe"):
            raise ValueError(f"{key}: not a BANT field (budget, authority, need, timeframe)")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"{key}: expected a level name or a number from 0 to 1")
        if isinstance(value, str) and value not in levels:
            raise ValueError(f"{key}: unknown level '{value}' (known: {', '.join(levels)})")
        if not isinstance(value, str) and not 0 <= float(value) <= 1:
            raise ValueError(f"{key}: must be between 0 and 1")
        clean[key] = value
    return clean


def qualify(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    bant: Mapping[str, Any],
    amount: float | None = None,
    currency: str = "KRW",
    expected_close: date | None = None,
    name: str | None = None,
    role: str = "contact",
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """Record sales' BANT (the qualification score follows); with an amount, qualify the
    lead to the opportunity stage (refused below ``qualification.handoff_threshold``) and
    open an opportunity owned by the lead's rep."""
    require_lead(conn, lead_id)
    clean = _check_bant(model, bant)
    if role not in BUYING_ROLES:
        raise ValueError(f"role: unknown buying role '{role}' (known: {', '.join(BUYING_ROLES)})")
    if amount is not None and not amount > 0:
        raise ValueError("amount: must be greater than 0")
    if action_id is not None and _seen(conn, action_id, lead_id):
        opp = _open_opportunity(conn, lead_id)
        return ActionResult(
            lead_id,
            "qualify",
            _stage(conn, lead_id, model.initial_stage),
            duplicate=True,
            opportunity_id=opp["id"] if opp else None,
        )
    attrs = conn.execute(select(leads.c.attributes).where(leads.c.id == lead_id)).scalar_one()
    attrs = dict(attrs or {})
    known = attrs.get("bant")
    merged = {**(known if isinstance(known, dict) else {}), **clean}
    attrs["bant"] = merged
    conn.execute(
        update(leads).where(leads.c.id == lead_id).values(attributes=attrs, updated_at=now)
    )
    if amount is None:
        lifecycle.recompute(conn, [lead_id], model, now)
        score = conn.execute(
            select(lead_states.c.qualification).where(lead_states.c.lead_id == lead_id)
        ).scalar_one_or_none()
        return ActionResult(
            lead_id,
            "qualify",
            _stage(conn, lead_id, model.initial_stage),
            qualification=score,
            detail="BANT recorded; give an amount to open an opportunity",
        )
    full = Bant(**{k: merged.get(k) for k in ("budget", "authority", "need", "timeframe")})
    _record(
        conn,
        model,
        lead_id,
        "qualify",
        now,
        action_id=action_id,
        actor=actor,
        amount=float(amount),
        bant=full,
    )
    current = active_assignment(conn, lead_id)
    lead = conn.execute(
        select(leads.c.account_id, leads.c.email).where(leads.c.id == lead_id)
    ).one()
    account_name = None
    if lead.account_id is not None:
        account_name = conn.execute(
            select(accounts.c.name).where(accounts.c.id == lead.account_id)
        ).scalar_one_or_none()
    opp_id = create_opportunity(
        conn,
        {
            "name": name or f"{account_name or lead.email or f'lead {lead_id}'}",
            "account_id": lead.account_id,
            "lead_id": lead_id,
            "amount": float(amount),
            "currency": currency,
            "expected_close": expected_close,
            "owner": current["rep_key"] if current else actor,
            "contacts": [{"lead_id": lead_id, "role": role}],
        },
        now,
        model=model,
    )
    score = conn.execute(
        select(lead_states.c.qualification).where(lead_states.c.lead_id == lead_id)
    ).scalar_one_or_none()
    return ActionResult(
        lead_id,
        "qualify",
        _stage(conn, lead_id, model.initial_stage),
        opportunity_id=opp_id,
        qualification=score,
        assignment_id=current["id"] if current else None,
    )


def win(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    amount: float | None = None,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """The deal closed: opportunity -> won; the lead's open opportunity is won."""
    if amount is not None and not amount > 0:
        raise ValueError("amount: must be greater than 0")
    _, duplicate = _record(
        conn, model, lead_id, "win", now, action_id=action_id, actor=actor, amount=amount
    )
    if duplicate:
        return ActionResult(
            lead_id, "win", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    opp = _open_opportunity(conn, lead_id)
    values: dict[str, Any] = {"stage": "won", "closed_at": now, "updated_at": now}
    if amount is not None:
        values["amount"] = float(amount)
    if opp is not None:
        conn.execute(update(opportunities).where(opportunities.c.id == opp["id"]).values(values))
        _signal(
            conn,
            "opportunity.won",
            lead_id,
            now,
            "actions.win",
            model,
            {
                "opportunity_id": opp["id"],
                "amount": values.get("amount", opp["amount"]),
                "currency": opp["currency"],
                "actor": actor,
            },
        )
    current = active_assignment(conn, lead_id)
    if current is not None:
        _close(conn, current["id"], "closed", now, "won")
    return ActionResult(
        lead_id,
        "win",
        _stage(conn, lead_id, model.initial_stage),
        opportunity_id=opp["id"] if opp else None,
    )


def lose(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    reason: str,
    now: datetime,
    *,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """The deal was lost (a configured reason): opportunity -> recycle B."""
    check_lost_reason(sales_spec(model), reason)
    _, duplicate = _record(
        conn, model, lead_id, "lose", now, action_id=action_id, actor=actor, reason=reason
    )
    if duplicate:
        return ActionResult(
            lead_id, "lose", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    opp = _open_opportunity(conn, lead_id)
    if opp is not None:
        conn.execute(
            update(opportunities)
            .where(opportunities.c.id == opp["id"])
            .values(stage="lost", lost_reason=reason, closed_at=now, updated_at=now)
        )
        _signal(
            conn,
            "opportunity.lost",
            lead_id,
            now,
            "actions.lose",
            model,
            {"opportunity_id": opp["id"], "reason": reason, "actor": actor},
        )
    result = _recycled(conn, model, lead_id, now, "lose", reason, actor)
    result.opportunity_id = opp["id"] if opp else None
    return result
