"""``leadflow model calibrate``: points and MQL threshold proposed from the stored outcomes.

Reads (never writes) every lead's events, profile and stage log, builds one
:class:`~leadflow.core.calibrate_points.LeadRecord` per lead -- the outcome is "entered a
stage with role ``outcome``" by the stage log, engagement counts are taken before that entry
(before ``as_of`` for leads that never entered it) -- and hands them to
:func:`~leadflow.core.calibrate_points.propose`. The proposal is written into the active
model's YAML by key path (:func:`leadflow.core.model_edit.edit`), diffed against it and
replayed with the backtest. Nothing is applied.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from leadflow.adapters.db.repositories.models import model_source
from leadflow.adapters.db.tables import stage_changes
from leadflow.core import backtest as bt
from leadflow.core.calibrate_points import LeadRecord, Proposal, fit_values, propose
from leadflow.core.config import load_model
from leadflow.core.model_edit import VERSION, Path, Scalar, edit
from leadflow.core.scoring import score_engagement
from leadflow.services.backtest import run_backtest
from leadflow.services.lifecycle import ModelCache, all_lead_ids, load_events, load_profiles

OUTCOMES = ("won", "opportunity", "handoff")
CHUNK = 1000


@dataclass(frozen=True)
class Calibration:
    outcome: str
    stages: tuple[str, ...]
    proposal: Proposal
    source: str
    proposed_source: str
    diff: str
    backtest: bt.BacktestReport


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
    return Calibration(
        outcome=outcome,
        stages=model.stages_for(outcome),
        proposal=proposal,
        source=source,
        proposed_source=proposed_source,
        diff=diff,
        backtest=report,
    )
