"""Two models over one history: what ``leadflow model backtest`` reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from leadflow.core.backtest.evaluate import Backtest, evaluate
from leadflow.core.backtest.prepare import _prepared_for
from leadflow.core.backtest.tables import EventTable
from leadflow.core.config import LeadModel
from leadflow.core.model import SalesAction

OPPORTUNITY_OUTCOMES = frozenset({"opportunity", "won", "lost"})
REJECTED_OUTCOMES = frozenset({"rejected", "sales_rejected", "disqualified"})


@dataclass(frozen=True)
class ModelSummary:
    version: str
    mql: int
    fallback_leads: int
    fallback_reasons: Mapping[str, int]
    with_outcome: int = 0
    """MQLs whose outcome is known."""
    opportunity_rate: float | None = None
    won_rate: float | None = None
    rejected_share: float | None = None


@dataclass(frozen=True)
class BacktestReport:
    """What ``leadflow model backtest`` prints: the current model against a candidate."""

    as_of: datetime
    since: datetime | None
    leads: int
    events: int
    current: ModelSummary
    candidate: ModelSummary
    stage_changes: Mapping[tuple[str, str], int]
    """Leads whose stage at ``as_of`` differs: (current stage, candidate stage) -> leads."""
    sample: tuple[tuple[int, str, str], ...]
    weekly: pl.DataFrame
    """``week``, ``current``, ``candidate``: leads becoming MQL per week."""
    newly_mql: int
    no_longer_mql: int

    @property
    def changed(self) -> int:
        return sum(self.stage_changes.values())

    def lines(self) -> list[str]:
        cur, cand = self.current, self.candidate
        out = [
            f"backtest at {self.as_of:%Y-%m-%d %H:%M} UTC over {self.events:,} events, "
            f"{self.leads:,} leads"
            + (f" (MQLs since {self.since:%Y-%m-%d})" if self.since else ""),
            f"MQL: current {cur.version} {cur.mql:,}  candidate {cand.version} {cand.mql:,} "
            f"({cand.mql - cur.mql:+,}); newly MQL {self.newly_mql:,}, "
            f"no longer MQL {self.no_longer_mql:,}",
            f"leads changing stage: {self.changed:,}",
        ]
        for (a, b), n in sorted(self.stage_changes.items(), key=lambda kv: -kv[1]):
            out.append(f"  {a} -> {b}: {n:,}")
        if self.sample:
            out.append("sample: " + ", ".join(f"{i} ({a}->{b})" for i, a, b in self.sample))
        for s in (cur, cand):
            if s.opportunity_rate is not None:
                out.append(
                    f"{s.version}: of {s.with_outcome:,} MQLs with a known outcome, "
                    f"{s.opportunity_rate:.1%} reached opportunity, {s.won_rate:.1%} won, "
                    f"{s.rejected_share:.1%} rejected by sales"
                )
            if s.fallback_leads:
                why = ", ".join(f"{k}: {v:,}" for k, v in s.fallback_reasons.items())
                out.append(f"{s.version}: {s.fallback_leads:,} leads via the per-lead core ({why})")
        return out


def _summary(
    result: Backtest, mql: pl.DataFrame, outcomes: Mapping[int, str] | None
) -> ModelSummary:
    kw: dict[str, Any] = {}
    if outcomes is not None:
        known = [outcomes[i].strip().lower() for i in mql["lead_id"].to_list() if i in outcomes]
        n = len(known)
        kw["with_outcome"] = n
        if n:
            kw["opportunity_rate"] = sum(o in OPPORTUNITY_OUTCOMES for o in known) / n
            kw["won_rate"] = sum(o == "won" for o in known) / n
            kw["rejected_share"] = sum(o in REJECTED_OUTCOMES for o in known) / n
    return ModelSummary(
        version=result.model_version,
        mql=mql.height,
        fallback_leads=result.fallback_leads,
        fallback_reasons=result.fallback_reasons,
        **kw,
    )


def compare(
    current_model: LeadModel,
    candidate_model: LeadModel,
    events: EventTable,
    profiles: pl.DataFrame | None = None,
    outcomes: Mapping[int, str] | None = None,
    *,
    as_of: datetime,
    since: datetime | None = None,
    actions: Mapping[int, Sequence[SalesAction]] | None = None,
    sample_size: int = 10,
) -> BacktestReport:
    """Replay the same history under both models and report the differences.

    ``outcomes`` maps lead ids to what happened in sales (``opportunity``, ``won``,
    ``lost``, ``rejected``); rates are over the MQLs whose outcome is known. ``since``
    limits the MQL counts and weekly volumes to MQLs from that time (scores still use all
    earlier events)."""
    as_of = as_of.astimezone(UTC)
    prep = _prepared_for(events, profiles, as_of)
    cur = evaluate(current_model, events, as_of=as_of, actions=actions, _prepared=prep)
    cand = evaluate(candidate_model, events, as_of=as_of, actions=actions, _prepared=prep)

    def mqls(result: Backtest) -> pl.DataFrame:
        m = result.leads.filter(pl.col("mql_at").is_not_null())
        return m.filter(pl.col("mql_at") >= since) if since is not None else m

    cur_mql, cand_mql = mqls(cur), mqls(cand)
    both = cur.leads.select("lead_id", pl.col("stage").alias("a")).join(
        cand.leads.select("lead_id", pl.col("stage").alias("b")), on="lead_id"
    )
    diff = both.filter(pl.col("a") != pl.col("b")).sort("lead_id")
    counts = diff.group_by("a", "b").agg(pl.len().alias("n"))
    stage_changes = {(r["a"], r["b"]): r["n"] for r in counts.iter_rows(named=True)}
    sample = tuple(
        (r["lead_id"], r["a"], r["b"]) for r in diff.head(sample_size).iter_rows(named=True)
    )
    weekly = (
        cur.weekly_mql(since)
        .rename({"mql": "current"})
        .join(
            cand.weekly_mql(since).rename({"mql": "candidate"}),
            on="week",
            how="full",
            coalesce=True,
        )
        .fill_null(0)
        .sort("week")
    )
    a_ids, b_ids = set(cur_mql["lead_id"].to_list()), set(cand_mql["lead_id"].to_list())
    return BacktestReport(
        as_of=as_of,
        since=since,
        leads=cur.leads.height,
        events=len(prep.rows),
        current=_summary(cur, cur_mql, outcomes),
        candidate=_summary(cand, cand_mql, outcomes),
        stage_changes=stage_changes,
        sample=sample,
        weekly=weekly,
        newly_mql=len(b_ids - a_ids),
        no_longer_mql=len(a_ids - b_ids),
    )


def week_of(at: datetime) -> date:
    """The Monday (UTC) of ``at``'s ISO week: the key of the weekly MQL series."""
    day = at.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())
