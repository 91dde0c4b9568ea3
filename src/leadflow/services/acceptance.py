"""Sales acceptance and win rates of hand-offs, and the MQL threshold that reaches a target
acceptance within capacity (``leadflow report acceptance``).

Reads assignments (one per hand-off; re-routed ones are left out as the next one counts),
the stage change that made each lead an MQL (its ``rule``), the score at hand-off (from the
hand-off summary) and the opportunities that followed; for the BANT hand-off threshold,
sales' ``qualify`` actions with their BANT (scored with the model's qualification weights)
and the opportunity each opened. The arithmetic is in :mod:`leadflow.core.calibration`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from leadflow.adapters.db.tables import (
    assignments,
    lead_models,
    lead_states,
    opportunities,
    sales_actions,
    stage_changes,
)
from leadflow.core import calibration as cal
from leadflow.core import model_edit
from leadflow.core.config import WEEKDAYS, LeadModel
from leadflow.core.model import Bant
from leadflow.core.scoring import score_qualification
from leadflow.services import handoff


def mql_stage(model: LeadModel) -> str:
    """The MQL stage: the model's stage with role ``handoff``."""
    return model.handoff_stage


def score_rules(model: LeadModel) -> tuple[float | None, set[str]]:
    """The MQL score threshold (:attr:`LeadModel.mql_threshold`) and the rule names of the
    MQL stage's criteria that use a score."""
    stage = mql_stage(model)
    rules = {
        f"stages.{stage}.enter_when[{i}]"
        for i, cond in enumerate(model.spec.stages[stage].enter_when)
        if cond.score is not None
    }
    return model.mql_threshold, rules


def _summary_score(summary: Any) -> float | None:
    if isinstance(summary, dict) and isinstance(summary.get("score"), dict):
        value = summary["score"].get("engagement")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def load_handoffs(
    conn: Connection, model: LeadModel
) -> tuple[list[cal.HandOff], list[tuple[float, bool]], list[datetime]]:
    """Hand-offs with outcomes; every MQL entry's (score, score-made); MQL entry times."""
    stage = mql_stage(model)
    _, made_by_score = score_rules(model)
    entries: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for lead_id, at, rule in conn.execute(
        select(stage_changes.c.lead_id, stage_changes.c.at, stage_changes.c.rule)
        .where(stage_changes.c.to_stage == stage)
        .order_by(stage_changes.c.at, stage_changes.c.id)
    ):
        entries[lead_id].append((at, rule))
    current_scores = dict(
        conn.execute(select(lead_states.c.lead_id, lead_states.c.engagement)).tuples().all()
    )
    by_lead: dict[int, list[Any]] = defaultdict(list)
    for row in conn.execute(
        select(assignments)
        .where(assignments.c.status != "rerouted")
        .order_by(assignments.c.assigned_at, assignments.c.id)
    ).mappings():
        by_lead[row["lead_id"]].append(row)
    opps: dict[int, list[Any]] = defaultdict(list)
    for opp in conn.execute(
        select(opportunities.c.lead_id, opportunities.c.stage, opportunities.c.created_at).where(
            opportunities.c.lead_id.is_not(None)
        )
    ):
        opps[opp.lead_id].append(opp)

    handoffs: list[cal.HandOff] = []
    scored_entries: dict[tuple[int, datetime], float] = {}
    for lead_id, rows in by_lead.items():
        for n, a in enumerate(rows):
            following = rows[n + 1]["assigned_at"] if n + 1 < len(rows) else None
            made = [e for e in entries.get(lead_id, []) if e[0] <= a["assigned_at"]]
            rule = made[-1][1] if made else "unknown"
            score = _summary_score(a["summary"])
            if score is None:
                score = float(current_scores.get(lead_id) or 0.0)
            if made:
                scored_entries.setdefault((lead_id, made[-1][0]), score)
            status = a["status"]
            closed_unaccepted = status == "closed" and str(a["close_reason"] or "").endswith(
                handoff.NOT_ACCEPTED
            )
            decision: cal.Decision = (
                None
                if closed_unaccepted
                else "accepted"
                if status in ("accepted", "closed")
                else "rejected"
                if status == "rejected"
                else None
            )
            stages = [
                o.stage
                for o in opps.get(lead_id, [])
                if o.created_at >= a["assigned_at"]
                and (following is None or o.created_at < following)
            ]
            outcome: cal.Outcome = (
                "won" if "won" in stages else "lost" if "lost" in stages else None
            )
            handoffs.append(
                cal.HandOff(
                    lead_id=lead_id,
                    score=score,
                    rule=rule,
                    decision=decision,
                    outcome=outcome,
                    score_made=rule in made_by_score,
                )
            )
    mql_scores = []
    times = []
    for lead_id, items in entries.items():
        for at, rule in items:
            score = scored_entries.get((lead_id, at), float(current_scores.get(lead_id) or 0.0))
            mql_scores.append((score, rule in made_by_score))
            times.append(at)
    return handoffs, mql_scores, times


def working_days(model: LeadModel, times: list[datetime]) -> int:
    """Sales working days from the first to the last MQL entry (at least 1)."""
    if not times:
        return 1
    spec = handoff.sales_spec(model)
    zone = ZoneInfo(spec.timezone)
    first = min(times).astimezone(zone).date()
    last = max(times).astimezone(zone).date()
    open_days = {WEEKDAYS.index(d) for d in spec.working_hours.days}
    holidays = set(spec.working_hours.holidays)
    count = 0
    day: date = first
    while day <= last:
        if day.weekday() in open_days and day not in holidays:
            count += 1
        day += timedelta(days=1)
    return max(count, 1)


def capacity_per_day(conn: Connection, model: LeadModel) -> int:
    """The team's daily hand-off capacity: active reps in the table, else in the model."""
    spec = handoff.sales_spec(model)
    reps = handoff.load_reps(conn, spec.default_capacity)
    if reps:
        return sum(r.daily_capacity for r in reps if r.active)
    return sum(
        r.daily_capacity if r.daily_capacity is not None else spec.default_capacity
        for r in spec.reps
        if r.active
    )


def _bant(value: Any) -> Bant | None:
    if not isinstance(value, dict):
        return None
    parts: dict[str, Any] = {}
    for key in ("budget", "authority", "need", "timeframe"):
        v = value.get(key)
        parts[key] = v if isinstance(v, str | int | float) and not isinstance(v, bool) else None
    return Bant(**parts)


def load_qualified(conn: Connection, model: LeadModel) -> list[cal.Qualified]:
    """Every ``qualify`` action with BANT, scored with the model's qualification weights, and
    the outcome of the opportunity it opened (the lead's first opportunity created from the
    action until the lead's next ``qualify``). BANT the model cannot read is left out."""
    actions: dict[int, list[tuple[datetime, Bant]]] = defaultdict(list)
    for lead_id, at, raw in conn.execute(
        select(sales_actions.c.lead_id, sales_actions.c.at, sales_actions.c.bant)
        .where(sales_actions.c.name == "qualify", sales_actions.c.bant.is_not(None))
        .order_by(sales_actions.c.at, sales_actions.c.id)
    ):
        bant = _bant(raw)
        if bant is not None:
            actions[lead_id].append((at, bant))
    opps: dict[int, list[Any]] = defaultdict(list)
    if actions:
        for row in conn.execute(
            select(opportunities.c.lead_id, opportunities.c.stage, opportunities.c.created_at)
            .where(opportunities.c.lead_id.is_not(None))
            .order_by(opportunities.c.created_at, opportunities.c.id)
        ):
            opps[row.lead_id].append(row)
    qualified: list[cal.Qualified] = []
    for lead_id, items in actions.items():
        for n, (at, bant) in enumerate(items):
            following = items[n + 1][0] if n + 1 < len(items) else None
            try:
                score = score_qualification(bant, model).score
            except ValueError:
                continue  # a level the model no longer knows
            opened = next(
                (
                    o
                    for o in opps.get(lead_id, [])
                    if o.created_at >= at and (following is None or o.created_at < following)
                ),
                None,
            )
            stage = opened.stage if opened is not None else None
            outcome: cal.Outcome = "won" if stage == "won" else "lost" if stage == "lost" else None
            qualified.append(cal.Qualified(lead_id=lead_id, score=score, outcome=outcome))
    return qualified


def report(
    conn: Connection,
    model: LeadModel,
    *,
    target: float = 0.70,
    win_target: float = cal.DEFAULT_WIN_TARGET,
    edges: tuple[float, ...] = cal.DEFAULT_BANDS,
    qualification_edges: tuple[float, ...] = cal.QUALIFICATION_BANDS,
    min_decided: int = 1,
    min_closed: int = 1,
) -> dict[str, Any]:
    handoffs, mql_scores, times = load_handoffs(conn, model)
    qualified = load_qualified(conn, model)
    handoff_rec = cal.recommend_handoff_threshold(
        qualified,
        current=float(model.spec.qualification.handoff_threshold),
        target=win_target,
        min_closed=min_closed,
    )
    current, _ = score_rules(model)
    days = working_days(model, times)
    capacity = capacity_per_day(conn, model)
    rec = cal.recommend_threshold(
        handoffs,
        mql_scores,
        current=current,
        target=target,
        capacity_per_day=capacity,
        working_days=days,
        min_decided=min_decided,
    )
    return {
        "model_version": model.version,
        "handoffs": len(handoffs),
        "mqls": len(mql_scores),
        "working_days": days,
        "by_band": [r.as_dict() for r in cal.rates_by_band(handoffs, edges)],
        "by_rule": [r.as_dict() for r in cal.rates_by_rule(handoffs)],
        "handoff_threshold": model.spec.qualification.handoff_threshold,
        "recommendation": rec.as_dict(),
        "qualified": len(qualified),
        "by_qualification_band": [
            r.as_dict() for r in cal.win_rates_by_band(qualified, qualification_edges)
        ],
        "handoff_recommendation": handoff_rec.as_dict(),
    }


def active_source(conn: Connection) -> str | None:
    return conn.execute(
        select(lead_models.c.source).where(lead_models.c.active)
    ).scalar_one_or_none()


def _num(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:g}"


def candidate_suffix(threshold: float | None, handoff_threshold: float | None = None) -> str:
    """``mql105``, ``bant88`` or ``mql105-bant88``: what the candidate changes."""
    parts = []
    if threshold is not None:
        parts.append(f"mql{_num(threshold)}")
    if handoff_threshold is not None:
        parts.append(f"bant{_num(handoff_threshold)}")
    return "-".join(parts)


def candidate_source(
    source: str,
    model: LeadModel,
    threshold: float | None,
    handoff_threshold: float | None = None,
) -> str:
    """The model's source with the MQL score threshold and/or the BANT hand-off threshold
    (``qualification.handoff_threshold``) changed and a new version, through the one model
    editor (:mod:`leadflow.core.model_edit`); it must pass ``leadflow model check`` (raises
    :class:`~leadflow.core.config.ModelConfigError`, a ``ValueError``, naming the key path)."""
    if threshold is None and handoff_threshold is None:
        raise ValueError("candidate model: nothing to change")
    base = re.sub(r"[^A-Za-z0-9._-]", "", model.version)[:40] or "model"
    changes: dict[model_edit.Path, float | str] = {
        model_edit.VERSION: f"{base}-{candidate_suffix(threshold, handoff_threshold)}"
    }
    if threshold is not None:
        changes[model_edit.mql_threshold_path(model)] = threshold
    if handoff_threshold is not None:
        changes[model_edit.HANDOFF_THRESHOLD] = handoff_threshold
    return model_edit.edit(source, changes)
