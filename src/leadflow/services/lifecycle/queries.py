"""One lead at a time: its current state, a sales action on it, its stage counts, history,
signals and score explanation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from leadflow.adapters.db.tables import lead_states, sales_actions, signals, stage_changes
from leadflow.core.config import LeadModel
from leadflow.core.lifecycle import LeadState, apply_action, replay
from leadflow.core.model import SalesAction, StageChange
from leadflow.core.scoring import score_fit, score_qualification
from leadflow.services.lifecycle.loading import load_actions, load_events, load_profiles
from leadflow.services.lifecycle.recomputing import _qualification_bant, recompute


class ActionRefused(ValueError):
    """A sales action the stage machine refuses (wrong stage, BANT below the threshold...)."""


def current_state(conn: Connection, lead_id: int, model: LeadModel, as_of: datetime) -> LeadState:
    profile = load_profiles(conn, [lead_id], model).get(lead_id)
    if profile is None:
        raise LookupError(f"no lead with id {lead_id}")
    return replay(
        profile,
        load_events(conn, [lead_id]).get(lead_id, ()),
        model,
        actions=load_actions(conn, [lead_id]).get(lead_id, ()),
        as_of=as_of,
    )


def record_action(
    conn: Connection, action: SalesAction, model: LeadModel, now: datetime
) -> StageChange | None:
    """Apply a sales action to its lead inside the caller's transaction: refused actions
    raise :class:`ActionRefused` with the machine's reason and store nothing; accepted ones
    are stored (idempotent by ``action_id``) and the lead is recomputed."""
    assert action.lead_id is not None
    existing = conn.execute(
        select(sales_actions.c.lead_id).where(sales_actions.c.action_id == action.action_id)
    ).first()
    if existing is not None:
        if existing.lead_id != action.lead_id:
            raise ActionRefused(f"action_id {action.action_id!r} was used for another lead")
        return None
    state = current_state(conn, action.lead_id, model, max(now, action.at))
    outcome = apply_action(state, action, model)
    if outcome.refusal is not None:
        raise ActionRefused(outcome.refusal)
    bant = action.bant
    conn.execute(
        insert(sales_actions).values(
            action_id=action.action_id,
            lead_id=action.lead_id,
            name=action.name,
            at=action.at,
            amount=action.amount,
            bant=None
            if bant is None
            else {
                "budget": bant.budget,
                "authority": bant.authority,
                "need": bant.need,
                "timeframe": bant.timeframe,
            },
            reason=action.reason,
            actor=action.actor,
            created_at=now,
        )
    )
    recompute(conn, [action.lead_id], model, max(now, action.at))
    return outcome.change


def stage_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(lead_states.c.stage, func.count()).group_by(lead_states.c.stage)
    ).all()
    return {stage: count for stage, count in rows}


def lead_history(conn: Connection, lead_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(stage_changes)
        .where(stage_changes.c.lead_id == lead_id)
        .order_by(stage_changes.c.at, stage_changes.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def lead_signals(conn: Connection, lead_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(signals).where(signals.c.lead_id == lead_id).order_by(signals.c.at)
    ).mappings()
    return [dict(r) for r in rows]


def explain(conn: Connection, lead_id: int, model: LeadModel, as_of: datetime) -> dict[str, Any]:
    """Every rule that contributed to the lead's scores, before and after decay."""
    return explanation(current_state(conn, lead_id, model, as_of), model, as_of)


def explanation(state: LeadState, model: LeadModel, as_of: datetime) -> dict[str, Any]:
    """:func:`explain` for a state already folded to ``as_of`` (no reading)."""
    lead_id = state.lead_id
    engagement = state.engagement(as_of, model)
    fit = score_fit(state.profile, model)
    qualification = score_qualification(_qualification_bant(state), model)
    mql = model.mql_threshold
    return {
        "lead_id": lead_id,
        "as_of": as_of.isoformat(),
        "model_version": model.version,
        "model_hash": model.content_hash,
        "stage": state.stage,
        "stage_display": {
            "en": model.display_name(state.stage, "en"),
            "ko": model.display_name(state.stage, "ko"),
        },
        "paused_until": state.pause_until.isoformat() if state.pause_until else None,
        "engagement": {
            "total": engagement.total,
            "mql_threshold": mql,
            "half_life_days": model.spec.engagement.half_life_days,
            "rules": [
                {
                    "rule": c.rule_id,
                    "occurrences": c.occurrences,
                    "capped": c.capped,
                    "points_before_decay": c.points_before_decay,
                    "points_after_decay": c.points_after_decay,
                }
                for c in engagement.contributions
            ],
        },
        "fit": {
            "score": fit.score,
            "grade": fit.grade,
            "criteria": [
                {"criterion": c.criterion, "value": c.value, "points": c.points}
                for c in fit.contributions
            ],
        },
        "qualification": {
            "score": qualification.score,
            "threshold": qualification.threshold,
            "ready_for_handoff": qualification.ready_for_handoff,
            "criteria": [
                {
                    "criterion": c.criterion,
                    "level": c.level,
                    "weight": c.weight,
                    "points": c.points,
                }
                for c in qualification.contributions
            ],
        },
    }
