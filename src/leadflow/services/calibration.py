"""``leadflow model calibrate``: points and MQL threshold proposed from the stored outcomes.

Reads (never writes) every lead's events, profile and stage log, builds one
:class:`~leadflow.core.calibrate_points.LeadRecord` per lead -- the outcome is "entered a
stage with role ``outcome``" by the stage log, engagement counts are taken before that entry
(before ``as_of`` for leads that never entered it) -- and hands them to
:func:`~leadflow.core.calibrate_points.propose`. The proposal is written into the active
model's YAML by key path (:func:`leadflow.core.model_edit.edit`), diffed against it and
replayed with the backtest. Nothing is applied.

Sales capacity (:class:`AtCapacity`): the team's daily hand-off capacity (active reps in
the table, else in the model: :func:`leadflow.services.acceptance.capacity_per_day`) times
the sales working days from the first stored event to ``as_of``; precision and recall of
the leads with the highest engagement scores that fit in it, under the current and the
proposed points (:func:`leadflow.core.calibrate_points.at_capacity`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select

from leadflow.adapters.db.repositories.models import model_source
from leadflow.adapters.db.tables import events, stage_changes
from leadflow.core import backtest as bt
from leadflow.core.calibrate_points import LeadRecord, Proposal, at_capacity, fit_values, propose
from leadflow.core.config import load_model
from leadflow.core.model_edit import VERSION, Path, Scalar, edit
from leadflow.core.scoring import score_engagement
from leadflow.services.acceptance import capacity_per_day, working_days
from leadflow.services.backtest import run_backtest
from leadflow.services.lifecycle import ModelCache, all_lead_ids, load_events, load_profiles

OUTCOMES = ("won", "opportunity", "handoff")
CHUNK = 1000


@dataclass(frozen=True)
class AtCapacity:
    """Precision and recall of the ``capacity`` highest-scored leads (``None``: not
    measurable), current points vs proposed."""

    capacity: int
    per_day: int
    working_days: int
    precision_current: float | None
    recall_current: float | None
    precision_proposed: float | None
    recall_proposed: float | None


@dataclass(frozen=True)
class Calibration:
    outcome: str
    stages: tuple[str, ...]
    proposal: Proposal
    source: str
    proposed_source: str
    diff: str
    backtest: bt.BacktestReport
    at_capacity: AtCapacity


def calibration_records(
    engine: Engine, cache: ModelCache, outcome: str, as_of: datetime
) -> list[LeadRecord]:
    """One record per lead: reached ``outcome`` (a stage role) by ``as_of``, engagement rule
    occurrences before that (or before ``as_of``), fit values."""
    if outcome not in OUTCOMES:
        raise ValueError(f"--outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")
    with engine.begin() as conn:
        model = cache.active(conn, as_of)
    stages = model.stages_for(outcome)
    records: list[LeadRecord] = []
    with engine.connect() as conn:
        reached: dict[int, datetime] = {
            lead_id: at
            for lead_id, at in conn.execute(
                select(stage_changes.c.lead_id, func.min(stage_changes.c.at))
                .where(stage_changes.c.to_stage.in_(stages), stage_changes.c.at <= as_of)
                .group_by(stage_changes.c.lead_id)
            )
        }
        ids = all_lead_ids(conn)
        for i in range(0, len(ids), CHUNK):
            part = ids[i : i + CHUNK]
            events = load_events(conn, part)
            profiles = load_profiles(conn, part)
            for lead_id in part:
                at = reached.get(lead_id)
                cutoff = as_of if at is None else at - timedelta(microseconds=1)
                score = score_engagement(events.get(lead_id, []), cutoff, model)
                records.append(
                    LeadRecord(
                        converted=at is not None,
                        counts={c.rule_id: c.occurrences for c in score.contributions},
                        fit=fit_values(profiles[lead_id], model) if lead_id in profiles else {},
                    )
                )
    return records


def calibrate(
    engine: Engine,
    cache: ModelCache,
    outcome: str,
    as_of: datetime,
    *,
    min_support: int = 10,
) -> Calibration:
    """The proposal for ``outcome``, its YAML, the diff against the active model and the
    backtest of the proposed model against the current one."""
    records = calibration_records(engine, cache, outcome, as_of)
    with engine.begin() as conn:
        model = cache.active(conn, as_of)
        source = model_source(conn, model.content_hash)
    proposal = propose(model, records, min_support=min_support)
    suffix = f"-calibrated-{outcome}"
    version = model.version if model.version.endswith(suffix) else f"{model.version}{suffix}"
    changes: dict[Path, Scalar] = dict(proposal.changes(model))
    changes[VERSION] = version
    proposed_source = edit(source, changes)
    diff = "".join(
        difflib.unified_diff(
            source.splitlines(keepends=True),
            proposed_source.splitlines(keepends=True),
            fromfile="leadflow.yaml (active)",
            tofile=f"leadflow.yaml (calibrated on {outcome})",
        )
    )
    report = run_backtest(engine, cache, load_model(proposed_source), as_of)
    with engine.connect() as conn:
        first = conn.execute(select(func.min(events.c.occurred_at))).scalar()
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=UTC)
        per_day = capacity_per_day(conn, model)
    days = working_days(model, [as_of] if first is None else [first, as_of])
    current = {r.id: r.points for r in model.spec.engagement.rules}
    new = {r.key: r.proposed for r in proposal.rows if r.kind == "engagement"}
    converted = [r.converted for r in records]

    def scores(points: dict[str, float]) -> list[float]:
        return [sum(points.get(k, 0.0) * n for k, n in r.counts.items()) for r in records]

    capacity = per_day * days
    p_cur, r_cur = at_capacity(converted, scores(current), capacity)
    p_new, r_new = at_capacity(converted, scores(new), capacity)
    return Calibration(
        outcome=outcome,
        stages=model.stages_for(outcome),
        proposal=proposal,
        source=source,
        proposed_source=proposed_source,
        diff=diff,
        backtest=report,
        at_capacity=AtCapacity(
            capacity=capacity,
            per_day=per_day,
            working_days=days,
            precision_current=p_cur,
            recall_current=r_cur,
            precision_proposed=p_new,
            recall_proposed=r_new,
        ),
    )
