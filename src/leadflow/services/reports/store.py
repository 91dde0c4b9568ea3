"""The store one report reads: per-lead stage history and attributes (the slices), loaded
once by :func:`load_store`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Engine

from leadflow.core import funnel
from leadflow.core.config import LeadModel
from leadflow.services.reports.common import stage_model_for
from leadflow.services.reports.loading import (
    _seminar_funnel,
    active_model_source,
    load_actions,
    load_events,
    load_form_submissions,
    load_leads,
    load_opportunities,
    load_sends,
    load_stage_log,
)

# --------------------------------------------------------------------------- preparation


def stage_history(log: pl.DataFrame, lead_rows: pl.DataFrame, model: LeadModel) -> pl.DataFrame:
    """The log with one synthetic entry per lead into its starting stage (see module doc)."""
    first = log.group_by("lead_id").agg(
        first_at=pl.col("at").first(), first_from=pl.col("from_stage").first()
    )
    entry = (
        lead_rows.select("lead_id", "created_at", "current_stage")
        .join(first, on="lead_id", how="left")
        .with_columns(
            at=pl.min_horizontal("created_at", "first_at"),
            to_stage=pl.coalesce("first_from", "current_stage", pl.lit(model.initial_stage)),
        )
        .select(
            "lead_id",
            pl.lit(None, pl.String).alias("from_stage"),
            "to_stage",
            "at",
            pl.lit(None, pl.String).alias("model_version"),
        )
    )
    return pl.concat([entry, log.select(entry.columns)], how="vertical").sort(
        "lead_id", "at", maintain_order=True
    )


def _band(model: LeadModel) -> pl.Expr:
    expr: pl.Expr = pl.lit(None, pl.String)
    for band in reversed(model.spec.fit.company_size):
        cond = pl.col("employee_count") >= band.min
        if band.max is not None:
            cond = cond & (pl.col("employee_count") <= band.max)
        expr = pl.when(cond).then(pl.lit(band.label)).otherwise(expr)
    return expr


def employee_band(model: LeadModel) -> pl.Expr:
    """The ``employee_count`` column as the model's company-size band label (null outside
    every band or unknown)."""
    return _band(model)


def lead_attributes(
    history: pl.DataFrame,
    lead_rows: pl.DataFrame,
    evts: pl.DataFrame,
    model: LeadModel,
    end: datetime,
) -> pl.DataFrame:
    """One row per lead with every slice column (see the module docstring)."""
    ordered = evts.sort("lead_id", "at", maintain_order=True)
    first_channel = (
        ordered.filter(pl.col("channel").is_not_null() & pl.col("lead_id").is_not_null())
        .group_by("lead_id")
        .agg(channel=pl.col("channel").first())
    )
    first_campaign = (
        ordered.filter(pl.col("campaign").is_not_null() & pl.col("lead_id").is_not_null())
        .group_by("lead_id")
        .agg(campaign=pl.col("campaign").first())
    )
    not_lead = [model.initial_stage, model.dead_end_stage]
    acquired = (
        history.filter(pl.col("from_stage").is_not_null() & ~pl.col("to_stage").is_in(not_lead))
        .group_by("lead_id")
        .agg(acquisition_month=pl.col("at").min().dt.truncate("1mo").dt.date())
    )
    version = (
        history.filter(pl.col("model_version").is_not_null() & (pl.col("at") < end))
        .group_by("lead_id")
        .agg(model_version=pl.col("model_version").last())
    )
    return (
        lead_rows.select(
            "lead_id",
            "industry",
            account_tier=pl.when(pl.col("account_id").is_null())
            .then(None)
            .when(pl.col("is_target"))
            .then(pl.lit("target"))
            .otherwise(pl.lit("other")),
            employee_band=_band(model),
        )
        .join(first_channel, on="lead_id", how="left")
        .join(first_campaign, on="lead_id", how="left")
        .join(acquired, on="lead_id", how="left")
        .join(version, on="lead_id", how="left")
    )


@dataclass
class Store:
    """The plain tables one report needs, loaded once (one query per table)."""

    model: LeadModel
    stage_model: funnel.StageModel
    history: pl.DataFrame
    lead_rows: pl.DataFrame
    events: pl.DataFrame
    actions: pl.DataFrame
    model_source: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    opportunities: pl.DataFrame = field(default_factory=lambda: pl.DataFrame())
    # Nurture (issue 4): every email send, form submission, and the seminar funnels.
    sends: pl.DataFrame = field(default_factory=lambda: pl.DataFrame())
    form_submissions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame())
    seminar_funnel: list[dict[str, Any]] = field(default_factory=list)


def load_store(engine: Engine, model: LeadModel, *, with_events: bool = True) -> Store:
    import time

    timings: dict[str, float] = {}
    with engine.connect() as conn:
        t0 = time.perf_counter()
        log = load_stage_log(conn)
        timings["stage_changes"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        lead_rows = load_leads(conn)
        timings["leads"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        evts = load_events(conn) if with_events else load_events(conn).clear()
        timings["events"] = time.perf_counter() - t0
        actions = load_actions(conn)
        opps = load_opportunities(conn)
        sends, submissions = load_sends(conn), load_form_submissions(conn)
        seminar_rows = _seminar_funnel(conn, model)
        source = active_model_source(conn)
    history = stage_history(log, lead_rows, model)
    extra = sorted(set(history["to_stage"].unique().to_list()) - set(model.stages))
    return Store(
        model=model,
        stage_model=stage_model_for(model, extra),
        history=history,
        lead_rows=lead_rows,
        events=evts,
        actions=actions,
        model_source=source,
        timings=timings,
        opportunities=opps,
        sends=sends,
        form_submissions=submissions,
        seminar_funnel=seminar_rows,
    )
