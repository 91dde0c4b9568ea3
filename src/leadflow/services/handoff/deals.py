"""Sales actions on the deal: :func:`qualify` (BANT, and with an amount the opportunity),
:func:`win` and :func:`lose`, recorded like the hand-off actions (:mod:`.actions`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from leadflow.adapters.db.tables import accounts, lead_states, leads, opportunities
from leadflow.core import lifecycle as lifecycle_core
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
    _utc,
    check_close,
    check_moment,
    create_opportunity,
    deal_for,
    get_opportunity,
    open_deals,
)
from leadflow.services.lifecycle import ActionRefused


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


AFTER_WIN_ROLES = frozenset({"won", "customer", "expansion"})


def _close_deal(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    name: str,
    opp: dict[str, Any] | None,
    at: datetime,
    now: datetime,
    *,
    action_id: str | None,
    actor: str | None,
    history: bool = False,
    **extra: Any,
) -> bool:
    """The lead's side of a deal's win or loss at ``at``; returns whether the lead moved
    (the caller has already answered a repeated ``action_id``).

    - A loss while the lead has another deal open at ``at`` closes only the deal.
    - A past close (``history``) of a lead not (yet) at the opportunity stage is history:
      the deal's own open date moves the lead there first (the built-in ``open_deal``
      action, replayed in its place), then the win or loss. A close happening now is a
      live sales action: the lead must be at the opportunity stage.
    - A win for a lead already won (a second deal of a customer), and a past loss the stage
      machine has no place for, close only the deal; any other refusal raises
      :class:`~leadflow.services.lifecycle.ActionRefused`."""
    if opp is not None and name == "lose" and open_deals(conn, lead_id, at=at, besides=opp["id"]):
        return False
    try:
        _record(conn, model, lead_id, name, now, at=at, action_id=action_id, actor=actor, **extra)
        return True
    except ActionRefused as refused:
        if opp is None:
            raise
        first = refused
    if not history:
        if (
            name == "win"
            and model.role_of(_stage(conn, lead_id, model.initial_stage)) in AFTER_WIN_ROLES
        ):
            return False
        raise first
    # The deal's open date; else (the lead left the opportunity stage in between, e.g.
    # another deal lost first) just before the close.
    tries = (
        (min(_utc(opp["created_at"]), _utc(at)), f"open_deal:{opp['id']}"),
        (_utc(at) - timedelta(microseconds=1), f"reopen_deal:{opp['id']}"),
    )
    for when, open_id in tries:
        try:
            _record(
                conn,
                model,
                lead_id,
                lifecycle_core.OPEN_DEAL,
                now,
                at=when,
                action_id=open_id,
                actor=actor,
            )
        except ActionRefused:
            continue
        try:
            _record(
                conn, model, lead_id, name, now, at=at, action_id=action_id, actor=actor, **extra
            )
            return True
        except ActionRefused:
            continue
    role = model.role_of(_stage(conn, lead_id, model.initial_stage))
    if name == "lose" or role in AFTER_WIN_ROLES:
        return False
    raise first


def _named_deal(
    conn: Connection, lead_id: int, opportunity_id: int | None, at: datetime, outcome: str
) -> dict[str, Any] | None:
    opp = deal_for(conn, lead_id, opportunity_id)
    if opp is None:
        return None
    if opp["stage"] != "open":
        raise ActionRefused(
            f"opportunity_id: opportunity {opp['id']} is already {opp['stage']}; "
            f"a closed deal cannot be {outcome} again"
        )
    check_close(opp["created_at"], at)
    return opp


def win(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    amount: float | None = None,
    actor: str | None = None,
    action_id: str | None = None,
    opportunity_id: int | None = None,
    at: datetime | None = None,
) -> ActionResult:
    """The deal closed won at ``at`` (its close date, default ``now``): the named
    opportunity (else the lead's only open one) is won, and the lead goes opportunity ->
    won (see :func:`_close_deal`). Another deal of the lead is never touched."""
    if amount is not None and not amount > 0:
        raise ValueError("amount: must be greater than 0")
    require_lead(conn, lead_id)
    when = now if at is None else check_moment("closed_at", at)
    history = when < now
    if action_id is not None and _seen(conn, action_id, lead_id):
        return ActionResult(
            lead_id, "win", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    opp = _named_deal(conn, lead_id, opportunity_id, when, "won")
    _close_deal(
        conn,
        model,
        lead_id,
        "win",
        opp,
        when,
        now,
        action_id=action_id,
        actor=actor,
        history=history,
        amount=amount,
    )
    values: dict[str, Any] = {"stage": "won", "closed_at": when, "updated_at": now}
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
                "closed_at": when.isoformat(),
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
    opportunity_id: int | None = None,
    at: datetime | None = None,
) -> ActionResult:
    """The deal was lost at ``at`` (a configured reason): the named opportunity (else the
    lead's only open one) is lost; the lead goes opportunity -> recycle B unless another of
    its deals is still open then (see :func:`_close_deal`)."""
    check_lost_reason(sales_spec(model), reason)
    require_lead(conn, lead_id)
    when = now if at is None else check_moment("closed_at", at)
    history = when < now
    if action_id is not None and _seen(conn, action_id, lead_id):
        return ActionResult(
            lead_id, "lose", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    opp = _named_deal(conn, lead_id, opportunity_id, when, "lost")
    moved = _close_deal(
        conn,
        model,
        lead_id,
        "lose",
        opp,
        when,
        now,
        action_id=action_id,
        actor=actor,
        history=history,
        reason=reason,
    )
    if opp is not None:
        conn.execute(
            update(opportunities)
            .where(opportunities.c.id == opp["id"])
            .values(stage="lost", lost_reason=reason, closed_at=when, updated_at=now)
        )
        _signal(
            conn,
            "opportunity.lost",
            lead_id,
            now,
            "actions.lose",
            model,
            {
                "opportunity_id": opp["id"],
                "reason": reason,
                "closed_at": when.isoformat(),
                "actor": actor,
            },
        )
    if not moved:
        return ActionResult(
            lead_id,
            "lose",
            _stage(conn, lead_id, model.initial_stage),
            opportunity_id=opp["id"] if opp else None,
            detail="the deal closed; the lead's stage is unchanged",
        )
    result = _recycled(conn, model, lead_id, now, "lose", reason, actor)
    result.opportunity_id = opp["id"] if opp else None
    return result


def close_opportunity(
    conn: Connection,
    model: LeadModel,
    opp_id: int,
    stage: str,
    now: datetime,
    *,
    at: datetime | None = None,
    reason: str | None = None,
    amount: float | None = None,
    actor: str | None = None,
    action_id: str | None = None,
) -> None:
    """Close the opportunity ``opp_id`` (and no other) ``won`` or ``lost`` at ``at``: through
    :func:`win` / :func:`lose` when it has a lead, else on the deal alone."""
    opp = get_opportunity(conn, opp_id)
    if opp is None:
        raise LookupError(f"opportunity_id: no opportunity with id {opp_id}")
    if stage not in ("won", "lost"):
        raise ValueError("stage: expected won or lost")
    if stage == "lost" and reason is None:
        raise ValueError("lost_reason: required to mark a deal lost")
    lead_id = opp["lead_id"] or (opp["contacts"][0]["lead_id"] if opp["contacts"] else None)
    if lead_id is not None and stage == "won":
        win(
            conn,
            model,
            lead_id,
            now,
            amount=amount,
            actor=actor,
            action_id=action_id,
            opportunity_id=opp_id,
            at=at,
        )
        return
    if lead_id is not None:
        assert reason is not None
        lose(
            conn,
            model,
            lead_id,
            reason,
            now,
            actor=actor,
            action_id=action_id,
            opportunity_id=opp_id,
            at=at,
        )
        return
    if opp["stage"] != "open":
        raise ActionRefused(f"opportunity_id: opportunity {opp_id} is already {opp['stage']}")
    when = now if at is None else check_moment("closed_at", at)
    check_close(opp["created_at"], when)
    if stage == "lost":
        check_lost_reason(sales_spec(model), reason or "")
    values: dict[str, Any] = {"stage": stage, "closed_at": when, "updated_at": now}
    if stage == "lost":
        values["lost_reason"] = reason
    if amount is not None:
        values["amount"] = float(amount)
    conn.execute(update(opportunities).where(opportunities.c.id == opp_id).values(values))
