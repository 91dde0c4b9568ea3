"""One model over one history: the vectorised path, the per-lead core for the rest."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from leadflow.core import lifecycle
from leadflow.core.backtest.engagement import _occurrences, _running_scores, _score_at_as_of
from leadflow.core.backtest.machine import (
    CHANGE_COLUMNS,
    _Changes,
    _criteria,
    _model_fallback_reason,
    _vectorised_machine,
)
from leadflow.core.backtest.prepare import _Prepared, _prepared_for
from leadflow.core.backtest.tables import _INTERNAL, EventTable, _profile_of, _rebuild_events
from leadflow.core.config import LeadModel
from leadflow.core.model import Event, LeadProfile, SalesAction
from leadflow.core.scoring import score_engagement


@dataclass(frozen=True)
class Backtest:
    """One model over one history.

    ``leads``: ``lead_id``, ``stage``, ``score`` (engagement at ``as_of``, rounded to 9
    decimals like the core), ``mql_at`` (first entry into MQL or beyond, or null),
    ``fallback`` (true when the per-lead core computed the lead).
    ``changes``: ``lead_id``, ``from_stage``, ``to_stage``, ``at``, ``rule``, ``cause``.
    ``fallback_reasons``: leads that took the per-lead path, by reason.
    """

    model_version: str
    as_of: datetime
    leads: pl.DataFrame
    changes: pl.DataFrame
    fallback_reasons: Mapping[str, int]
    events: int

    @property
    def fallback_leads(self) -> int:
        return int(self.leads["fallback"].sum())

    def weekly_mql(self, since: datetime | None = None) -> pl.DataFrame:
        """Leads becoming MQL per ISO week (``week`` is the Monday, UTC)."""
        mql = self.leads.filter(pl.col("mql_at").is_not_null())
        if since is not None:
            mql = mql.filter(pl.col("mql_at") >= since)
        return (
            mql.select(pl.col("mql_at").dt.truncate("1w").dt.date().alias("week"))
            .group_by("week")
            .agg(pl.len().alias("mql"))
            .sort("week")
        )


def _replay_leads(
    model: LeadModel,
    prep: _Prepared,
    codes: np.ndarray,
    actions: Mapping[int, Sequence[SalesAction]] | None,
) -> Iterable[tuple[int, lifecycle.LeadState, float]]:
    """The per-lead core for the given leads: (lead code, replayed state, score)."""
    as_of = prep.as_of
    ids = prep.lead_ids[codes]
    wanted = prep.profiles.filter(pl.col("id").is_in(ids))
    profile_rows = {r["id"]: r for r in wanted.iter_rows(named=True)}
    per_lead: dict[int, list[Event]] = {}
    if prep.table.originals is None:
        properties = [c for c in prep.frame.columns if c not in _INTERNAL]
        sub = prep.frame.filter(pl.col("lead_id").is_in(ids))
        for ev in _rebuild_events(sub, properties):
            per_lead.setdefault(ev.lead_id or 0, []).append(ev)
    for c, lead_id in zip(codes.tolist(), ids.tolist(), strict=True):
        base = profile_rows.get(lead_id)
        profile = _profile_of(base) if base else LeadProfile(id=lead_id)
        if prep.table.originals is not None:
            events = list(prep.table.originals.get(lead_id, ()))
        else:
            events = per_lead.get(lead_id, [])
        lead_actions = (actions or {}).get(lead_id, ())
        state = lifecycle.replay(profile, events, model, actions=lead_actions, as_of=as_of)
        yield c, state, score_engagement(events, as_of, model).total


def evaluate(
    model: LeadModel,
    table: EventTable,
    profiles: pl.DataFrame | None = None,
    *,
    as_of: datetime,
    actions: Mapping[int, Sequence[SalesAction]] | None = None,
    _prepared: _Prepared | None = None,
) -> Backtest:
    """Every lead of ``table`` under ``model`` at ``as_of`` (see the module docs)."""
    as_of = as_of.astimezone(UTC)
    prep = _prepared or _prepared_for(table, profiles, as_of)
    n_leads = len(prep.first)
    reasons: Counter[str] = Counter()
    occ = _occurrences(model, prep)
    final_score = _score_at_as_of(occ, prep, n_leads)
    fallback = prep.flagged.copy()
    reasons["event property that is not a string"] += int(fallback.sum())
    if actions:
        with_actions = np.isin(prep.lead_ids, np.array([k for k, v in actions.items() if v]))
        reasons["sales actions"] += int((with_actions & ~fallback).sum())
        fallback |= with_actions
    whole = _model_fallback_reason(model)
    stage_names = list(model.stages)
    if whole is not None:
        reasons[whole] += int((~fallback).sum())
        fallback[:] = True
        stage_of = np.zeros(n_leads, dtype=np.int64)
        changes: _Changes | None = None
    else:
        needs_score = any(c.condition.score is not None for c in _criteria(model))
        if needs_score:
            score, ceiling, overflow = _running_scores(occ, prep)
        else:
            score = ceiling = np.zeros(len(prep.rows))
            overflow = np.zeros(n_leads, dtype=bool)
        reasons["history longer than 1,000 half-lives"] += int((overflow & ~fallback).sum())
        fallback |= overflow
        stage_of, changes, close = _vectorised_machine(model, prep, score, ceiling)
        reasons["score within 1e-6 of a threshold"] += int((close & ~fallback).sum())
        fallback |= close
    stage_col = np.array(stage_names, dtype=object)[stage_of].tolist()
    scores = np.round(final_score, 9)
    parts = [] if changes is None else [changes.frame(prep, ~fallback)]
    # the per-lead core for the rest
    fb_codes = np.flatnonzero(fallback)
    if len(fb_codes):
        fb_rows: list[tuple[Any, ...]] = []
        for c, state, total in _replay_leads(model, prep, fb_codes, actions):
            stage_col[c] = state.stage
            scores[c] = total
            fb_rows += [
                (ch.lead_id, ch.from_stage, ch.to_stage, ch.at, ch.rule, ch.cause)
                for ch in state.history
            ]
        parts.append(pl.DataFrame(fb_rows, schema=CHANGE_COLUMNS, orient="row"))
    changes_df = (
        pl.concat(parts).sort("lead_id", maintain_order=True)
        if parts
        else pl.DataFrame(schema=CHANGE_COLUMNS)
    )
    handoff = model.stage_for("handoff")
    mql_rank = model.rank(handoff) if handoff is not None and handoff in model.stage_order else None
    leads = pl.DataFrame(
        {
            "lead_id": prep.lead_ids,
            "stage": stage_col,
            "score": scores,
            "fallback": fallback,
        }
    )
    if mql_rank is not None:
        qualified = [s for s, r in model.stage_order.items() if r >= mql_rank]
        first_mql = (
            changes_df.filter(pl.col("to_stage").is_in(qualified))
            .group_by("lead_id")
            .agg(pl.col("at").min().alias("mql_at"))
        )
        leads = leads.join(first_mql, on="lead_id", how="left", maintain_order="left")
    else:
        leads = leads.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("mql_at"))
    return Backtest(
        model_version=model.version,
        as_of=as_of,
        leads=leads,
        changes=changes_df,
        fallback_reasons={k: v for k, v in reasons.items() if v},
        events=len(prep.rows),
    )
