"""Revenue analytics over the store: flow & balance, attribution, campaigns, KPIs by role.

This module only *loads* plain tables and hands them to the pure analytics core
(:mod:`leadflow.core.funnel`, :mod:`leadflow.core.attribution`); every figure is computed
there or in Polars expressions here, never in per-row ORM loops. Each table is read with
one SQL query (``pl.read_database`` on the SQLAlchemy connection; timestamps are read as
plain ``DateTime`` and marked UTC in Polars, which is what makes a million-row load cheap).

Definitions the reports share (also in ``docs/reports.md``):

- **stage log**: ``stage_changes`` plus, per lead, one synthetic entry into the stage the
  lead started in (the first change's ``from_stage``, else its current stage) at the
  lead's first sign of life (earliest of ``leads.created_at``, its first event and its first
  stage change). So a lead is *in* the initial stage (``anonymous``) from when it was first
  seen, and the Sankey starts at ``(new)``.
- **slices** (one value per lead, so the balance identity holds per slice):
  ``channel`` / ``campaign``: channel / ``utm_campaign`` of the lead's first event that has
  one; ``industry``: the account's industry; ``account_tier``: ``target`` or ``other``
  (``accounts.is_target``); ``employee_band``: the account's size band from the model's
  ``fit.company_size`` labels; ``acquisition_month``: UTC month of the lead's first entry
  into a stage that is neither the initial stage nor dead end; ``model_version``: the
  version recorded on the lead's last stage change before the period end (the model that
  put the lead where it stands at the end). Missing values show as null.
- **conversion** (attribution): a lead's first entry into ``to_stage`` (default: the stage
  with role ``won``) inside the period. Its **value** is the ``amount`` of the lead's latest
  ``qualify`` sales action at or before the conversion, else 1 (a count). When the
  opportunities table (issue 5) exists, won and pipeline values will be read from it instead.
- **touchpoints**: the lead's events up to its conversion (the event that caused it
  included; before the period end for leads that did not convert): every ``track`` and
  ``page`` event except ``email_sent`` and ``email_bounce`` (things we did, not things the
  person did). Touch keys: ``channel``, ``campaign`` (``utm_campaign``, ``(none)`` when
  absent) and ``content`` (``properties.asset``, else the page path; touches without
  content are left out).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from sqlalchemy import Connection, DateTime, Engine, select, type_coerce

from leadflow.adapters.db.tables import (
    accounts,
    email_sends,
    events,
    form_submissions,
    lead_models,
    lead_states,
    leads,
    opportunities,
    sales_actions,
    stage_changes,
)
from leadflow.core import attribution as attr
from leadflow.core import forecast, funnel
from leadflow.core.config import LeadModel, check, load_model
from leadflow.core.model import Event
from leadflow.core.scoring import event_matches

SLICES = (
    "channel",
    "campaign",
    "industry",
    "account_tier",
    "employee_band",
    "acquisition_month",
    "model_version",
)
MODEL_CHOICES = (*attr.HEURISTIC_MODELS, "markov", "shapley", "all")
LEVELS = ("lead", "account")
TOUCH_KEYS = ("channel", "campaign", "content")
ROLES = ("executive", "department", "campaign")
NOT_TOUCHES = ("email_sent", "email_bounce")
NONE = "(none)"


class ReportError(ValueError):
    """A request the reports cannot answer; the message names the option and the reason."""


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ReportError("period: start and end must be aware UTC times")
        if self.end <= self.start:
            raise ReportError(
                f"period: --to ({self.end:%Y-%m-%d}) must be after --from ({self.start:%Y-%m-%d})"
            )

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def parse_day(value: str, option: str) -> datetime:
    """``YYYY-MM-DD`` (or a full ISO time) as an aware UTC datetime, refused clearly."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(f"{option}: {value!r} is not a date (use YYYY-MM-DD)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _check_choice(value: str | None, choices: Sequence[str], option: str) -> None:
    if value is not None and value not in choices:
        raise ReportError(f"{option}: unknown value {value!r}; choose one of {', '.join(choices)}")


# --------------------------------------------------------------------------- stage model


def stage_model_for(model: LeadModel, extra: Sequence[str] = ()) -> funnel.StageModel:
    """The analytics core's stage model from the active leadflow.yaml (see
    :meth:`funnel.StageModel.from_lead_model`)."""
    return funnel.StageModel.from_lead_model(model, extra)


# --------------------------------------------------------------------------- loading


def _utc_cols(frame: pl.DataFrame, *names: str) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(n).cast(pl.Datetime("us")).dt.replace_time_zone("UTC") for n in names
    )


def _ts(column: Any, name: str) -> Any:
    # Plain DateTime: parsed by SQLAlchemy's C processors (no per-value tz decoration).
    return type_coerce(column, DateTime()).label(name)


def _read(conn: Connection, stmt: Any, schema: Mapping[str, Any]) -> pl.DataFrame:
    frame = pl.read_database(stmt, conn, schema_overrides=dict(schema))
    if frame.width == 0 or frame.height == 0:
        frame = pl.DataFrame(schema=dict(schema))
    return frame


def load_stage_log(conn: Connection) -> pl.DataFrame:
    """``stage_changes`` as a frame: lead_id, from_stage, to_stage, at, model_version."""
    stmt = select(
        stage_changes.c.lead_id,
        stage_changes.c.from_stage,
        stage_changes.c.to_stage,
        _ts(stage_changes.c.at, "at"),
        stage_changes.c.model_version,
    ).order_by(stage_changes.c.lead_id, stage_changes.c.at, stage_changes.c.id)
    schema = {
        "lead_id": pl.Int64,
        "from_stage": pl.String,
        "to_stage": pl.String,
        "at": pl.Datetime("us"),
        "model_version": pl.String,
    }
    return _utc_cols(_read(conn, stmt, schema), "at")


def load_leads(conn: Connection) -> pl.DataFrame:
    """One row per lead with its account attributes and current stage."""
    stmt = select(
        leads.c.id.label("lead_id"),
        leads.c.account_id,
        _ts(leads.c.created_at, "created_at"),
        accounts.c.industry,
        accounts.c.employee_count,
        accounts.c.is_target,
        lead_states.c.stage.label("current_stage"),
    ).select_from(
        leads.outerjoin(accounts, accounts.c.id == leads.c.account_id).outerjoin(
            lead_states, lead_states.c.lead_id == leads.c.id
        )
    )
    schema = {
        "lead_id": pl.Int64,
        "account_id": pl.Int64,
        "created_at": pl.Datetime("us"),
        "industry": pl.String,
        "employee_count": pl.Int64,
        "is_target": pl.Boolean,
        "current_stage": pl.String,
    }
    return _utc_cols(_read(conn, stmt, schema), "created_at")


def load_events(conn: Connection, until: datetime | None = None) -> pl.DataFrame:
    """Events of known leads (``identify``/``group``/``alias`` left out), with the columns
    the reports use: content from ``properties.asset`` or the page path."""
    props = events.c.properties
    stmt = select(
        events.c.lead_id,
        _ts(events.c.occurred_at, "at"),
        events.c.type,
        events.c.name,
        events.c.channel,
        events.c.utm_campaign.label("campaign"),
        events.c.utm_source,
        events.c.utm_medium,
        events.c.page_url,
        events.c.anonymous_id,
        props["asset"].as_string().label("asset"),
        props["asset_type"].as_string().label("asset_type"),
        props["bounce_type"].as_string().label("bounce_type"),
        props["webinar"].as_string().label("webinar"),
        props["form"].as_string().label("form"),
    ).where(events.c.type.in_(("track", "page", "screen")))
    if until is not None:
        stmt = stmt.where(events.c.occurred_at < until)
    schema = {
        "lead_id": pl.Int64,
        "at": pl.Datetime("us"),
        "type": pl.String,
        "name": pl.String,
        "channel": pl.String,
        "campaign": pl.String,
        "utm_source": pl.String,
        "utm_medium": pl.String,
        "page_url": pl.String,
        "anonymous_id": pl.String,
        "asset": pl.String,
        "asset_type": pl.String,
        "bounce_type": pl.String,
        "webinar": pl.String,
        "form": pl.String,
    }
    frame = _utc_cols(_read(conn, stmt, schema), "at")
    # The same normalisation as core.model.Event.path: URL path, lower-cased, no trailing /.
    path = (
        pl.col("page_url")
        .str.replace(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*", "")
        .str.replace(r"[?#].*$", "")
        .str.to_lowercase()
        .str.strip_chars_end("/")
    )
    path = (
        pl.when(pl.col("page_url").is_null())
        .then(None)
        .otherwise(pl.when(path == "").then(pl.lit("/")).otherwise(path))
    )
    return frame.with_columns(path=path).with_columns(
        content=pl.coalesce(pl.col("asset"), pl.col("path"))
    )


def load_actions(conn: Connection) -> pl.DataFrame:
    stmt = select(
        sales_actions.c.lead_id,
        sales_actions.c.name,
        _ts(sales_actions.c.at, "at"),
        sales_actions.c.amount,
    ).order_by(sales_actions.c.at, sales_actions.c.id)
    schema = {"lead_id": pl.Int64, "name": pl.String, "at": pl.Datetime("us"), "amount": pl.Float64}
    return _utc_cols(_read(conn, stmt, schema), "at")


def active_model_source(conn: Connection) -> str | None:
    return conn.execute(select(lead_models.c.source).where(lead_models.c.active)).scalar()


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


# --------------------------------------------------------------------------- funnel


def funnel_report(store: Store, period: Period, by: str | None = None) -> dict[str, Any]:
    """Flow & balance per stage (per slice value), Sankey links, bottleneck, velocity."""
    _check_choice(by, SLICES, "--by")
    attrs = lead_attributes(store.history, store.lead_rows, store.events, store.model, period.end)
    flow = funnel.flow_and_balance(
        store.history,
        start=period.start,
        end=period.end,
        model=store.stage_model,
        attributes=attrs,
        by=by,
    )
    neck = funnel.find_bottleneck(
        store.history, start=period.start, end=period.end, model=store.stage_model
    )
    speed = (
        funnel.velocity(store.history, start=period.start, end=period.end, model=store.stage_model)
        if store.stage_model.won_stage
        else None
    )
    return {
        "report": "funnel",
        "period": period.as_dict(),
        "slice_by": by,
        "stages": flow.to_rows(),
        "sankey": [{"source": s, "target": t, "value": v} for s, t, v in flow.sankey()],
        "bottleneck": {
            "stage": neck.stage,
            "kind": neck.kind,
            "impact_leads": neck.impact_leads,
            "reason": neck.reason,
            "candidates": neck.to_rows(),
        },
        "velocity": speed.to_rows() if speed is not None else [],
        "definitions": {**flow.definitions, **neck.definitions},
    }


# --------------------------------------------------------------------------- attribution


def _opportunity_values(store: Store, first: pl.DataFrame) -> pl.DataFrame:
    """lead_id, amount of the lead's latest opportunity opened by its conversion (the
    won or lost outcome and the stage change are recorded within the same second)."""
    opps = store.opportunities
    if opps.height == 0 or "lead_id" not in opps.columns:
        return pl.DataFrame(schema={"lead_id": pl.Int64, "opp_amount": pl.Float64})
    return (
        first.join(
            opps.filter(pl.col("lead_id").is_not_null() & pl.col("amount").is_not_null()).select(
                "lead_id", o_at="created_at", opp_amount="amount"
            ),
            on="lead_id",
        )
        .filter(pl.col("o_at") <= pl.col("at") + pl.duration(seconds=1))
        .sort("lead_id", "o_at")
        .group_by("lead_id")
        .agg(pl.col("opp_amount").last())
    )


def conversions(store: Store, period: Period, to_stage: str) -> pl.DataFrame:
    """lead_id, at (first entry into ``to_stage`` in the period), value: the amount of the
    lead's opportunity, else of its latest qualify action, else 1 (a count)."""
    first = (
        store.history.filter(pl.col("to_stage") == to_stage)
        .group_by("lead_id")
        .agg(at=pl.col("at").min())
        .filter((pl.col("at") >= period.start) & (pl.col("at") < period.end))
    )
    qualify = store.actions.filter(
        (pl.col("name") == "qualify") & pl.col("amount").is_not_null()
    ).select("lead_id", q_at=pl.col("at"), amount="amount")
    valued = (
        first.join(qualify, on="lead_id", how="left")
        .filter(pl.col("q_at").is_null() | (pl.col("q_at") <= pl.col("at")))
        .sort("lead_id", "q_at", nulls_last=False)
        .group_by("lead_id")
        .agg(pl.col("amount").last())
    )
    return (
        first.join(valued, on="lead_id", how="left")
        .join(_opportunity_values(store, first), on="lead_id", how="left")
        .with_columns(value=pl.coalesce("opp_amount", "amount", pl.lit(1.0)))
        .select("lead_id", "at", "value")
        .sort("lead_id")
    )


def _touch_frame(store: Store, period: Period, conv: pl.DataFrame, touch: str) -> pl.DataFrame:
    """Touches of every lead before its conversion (or the period end), with flags."""
    ev = store.events.filter(
        pl.col("lead_id").is_not_null() & ~pl.col("name").is_in(list(NOT_TOUCHES)).fill_null(False)
    )
    ev = ev.join(conv.select("lead_id", conv_at="at"), on="lead_id", how="left").filter(
        pl.when(pl.col("conv_at").is_null())
        .then(pl.col("at") < period.end)
        .otherwise(pl.col("at") <= pl.col("conv_at"))
    )
    key = {
        "channel": pl.col("channel").fill_null("direct"),
        "campaign": pl.col("campaign").fill_null(NONE),
        "content": pl.col("content"),
    }[touch]
    ev = ev.with_columns(touch=key).filter(pl.col("touch").is_not_null())
    milestones = store.history.group_by("lead_id").agg(
        lead_created=pl.col("at").filter(pl.col("to_stage") == _acquired_stage(store)).min(),
        opp_created=pl.col("at")
        .filter(pl.col("to_stage").is_in(store.model.stages_for("opportunity")))
        .min(),
    )
    ev = ev.join(milestones, on="lead_id", how="left").sort("lead_id", "at", maintain_order=True)
    # The touch that created the lead / the opportunity: the last one at or before it.
    last_before = lambda col: (  # noqa: E731
        pl.col("at") == pl.col("at").filter(pl.col("at") <= pl.col(col)).max().over("lead_id")
    )
    return ev.with_columns(
        is_lead_creation=last_before("lead_created").fill_null(False),
        is_opportunity_creation=last_before("opp_created").fill_null(False),
    )


def _acquired_stage(store: Store) -> str:
    """The stage with role ``acquired`` (else the main path's second stage)."""
    found = store.model.stage_for("acquired")
    if found is not None:
        return found
    main = store.model.spec.lifecycle.main_path
    return main[1] if len(main) > 1 else main[0]


def _exclude_earlier(store: Store, period: Period, to_stage: str) -> pl.DataFrame:
    """Leads that already converted before the period: their paths are not in this one."""
    return (
        store.history.filter((pl.col("to_stage") == to_stage) & (pl.col("at") < period.start))
        .select("lead_id")
        .unique()
    )


def attribution_inputs(
    store: Store,
    period: Period,
    *,
    to_stage: str | None = None,
    touch: str = "channel",
    level: str = "lead",
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``(touchpoints, conversions, lead_conversions)`` ready for core.attribution."""
    _check_choice(touch, TOUCH_KEYS, "--touch")
    _check_choice(level, LEVELS, "--level")
    to_stage = to_stage or store.model.won_stage
    if to_stage not in store.stage_model.stages:
        raise ReportError(
            f"--to-stage: unknown stage {to_stage!r}; choose one of "
            f"{', '.join(store.stage_model.stages)}"
        )
    conv = conversions(store, period, to_stage)
    earlier = _exclude_earlier(store, period, to_stage)
    tp = _touch_frame(store, period, conv, touch).join(earlier, on="lead_id", how="anti")
    tp = tp.select(
        "lead_id",
        "at",
        "touch",
        "type",
        "name",
        "channel",
        "campaign",
        "utm_source",
        "utm_medium",
        "path",
        "page_url",
        "asset_type",
        "bounce_type",
        "is_lead_creation",
        "is_opportunity_creation",
    )
    if level == "lead":
        touchpoints = tp.with_columns(path_id=pl.col("lead_id"), person_id=pl.col("lead_id"))
        conv_table = conv.select(
            "lead_id", path_id="lead_id", converted=pl.lit(True), value="value"
        )
        return touchpoints, conv_table.drop("lead_id"), conv
    accounts_of = store.lead_rows.select("lead_id", "account_id").filter(
        pl.col("account_id").is_not_null()
    )
    conv_acc = (
        conv.join(accounts_of, on="lead_id")
        .group_by("account_id")
        .agg(created_at=pl.col("at").min(), amount=pl.col("value").sum())
        .with_columns(won=pl.lit(True))
    )
    touched = tp.join(accounts_of, on="lead_id").select("account_id").unique()
    open_acc = touched.join(conv_acc, on="account_id", how="anti").with_columns(
        created_at=pl.lit(period.end), amount=pl.lit(0.0), won=pl.lit(False)
    )
    opps = pl.concat(
        [conv_acc.select("account_id", "created_at", "amount", "won"), open_acc], how="vertical"
    ).with_columns(opportunity_id=pl.col("account_id"))
    touches = tp.join(accounts_of, on="lead_id").with_columns(person_id=pl.col("lead_id"))
    touchpoints, conv_table = attr.account_paths(touches, opps)
    return touchpoints, conv_table, conv


def _models(model: str, order: int) -> list[tuple[str, int]]:
    if model == "all":
        return (
            [(m, 1) for m in attr.HEURISTIC_MODELS]
            + [("markov", k) for k in (1, 2, 3)]
            + [("shapley", 1)]
        )
    return [(model, order)]


def attribution_report(
    store: Store,
    period: Period,
    *,
    model: str = "all",
    touch: str = "channel",
    level: str = "lead",
    order: int = 1,
    to_stage: str | None = None,
    half_life_days: float = 7.0,
) -> dict[str, Any]:
    """Credits per touch-key value for one model or all side by side."""
    _check_choice(model, MODEL_CHOICES, "--model")
    to_stage = to_stage or store.model.won_stage
    if order not in (1, 2, 3):
        raise ReportError(f"--order: {order} is not 1, 2 or 3")
    touchpoints, conv_table, conv = attribution_inputs(
        store, period, to_stage=to_stage, touch=touch, level=level
    )
    results: list[attr.Attribution] = []
    if touchpoints.height:
        for name, k in _models(model, order):
            results.append(
                attr.attribute(
                    touchpoints,
                    conv_table,
                    model=name,
                    touch_key="touch",
                    order=k,
                    half_life_days=half_life_days,
                    allocation="per_touch" if name == "markov" else "removal_share",
                )
            )
    credits: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    for res in results:
        for row in res.to_rows():
            credits.append({**row, "touch_key": touch})
        if res.per_person is not None and level == "account":
            people.extend(res.per_person.head(20).to_dicts())
    credited_paths = touchpoints.filter(
        pl.col("path_id").is_in(conv_table.filter(pl.col("converted"))["path_id"].implode())
    )["path_id"].n_unique()
    return {
        "report": "attribution",
        "period": period.as_dict(),
        "level": level,
        "touch": touch,
        "to_stage": to_stage,
        "conversions": conv.height,
        "conversion_value": float(conv["value"].sum()) if conv.height else 0.0,
        "converted_paths_with_touches": credited_paths,
        "paths": touchpoints["path_id"].n_unique() if touchpoints.height else 0,
        "models": [
            {
                "model": r.model,
                "definition": r.definition,
                "parameters": dict(r.parameters),
                "total_conversions": r.total_conversions,
                "total_value": r.total_value,
                "top_touch": r.top_touch(),
            }
            for r in results
        ],
        "credits": credits,
        "per_person": people,
        "definitions": {
            "conversion": f"a lead's first entry into {to_stage!r} in the period",
            "value": "amount of the lead's latest opportunity opened by the conversion, else "
            "of its latest qualify action at or before it, else 1 (a count)",
            "touchpoints": "track/page events up to the conversion (or before the period end), "
            "email_sent and email_bounce excluded",
            "level": "lead: one path per lead; account: one path per account with every "
            "member's touches before the account's first conversion",
        },
    }


# --------------------------------------------------------------------------- suggest points


def _rule_signatures(
    tp: pl.DataFrame, model: LeadModel
) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """Each touch's matching engagement rules, matched by core.scoring.event_matches once per
    distinct combination of the fields rules can look at (never once per row)."""
    fields = [
        "type",
        "name",
        "channel",
        "campaign",
        "utm_source",
        "utm_medium",
        "path",
        "asset_type",
        "bounce_type",
    ]
    distinct = tp.select(fields).unique()
    sigs: list[str] = []
    rules_of: dict[str, list[str]] = {}
    for row in distinct.iter_rows(named=True):
        props = {k: row[k] for k in ("asset_type", "bounce_type") if row[k] is not None}
        event = Event(
            message_id="-",
            type=row["type"],
            occurred_at=datetime(2000, 1, 1, tzinfo=UTC),
            lead_id=None,
            name=row["name"],
            properties=props,
            page_url=row["path"],
            utm_campaign=row["campaign"],
            utm_source=row["utm_source"],
            utm_medium=row["utm_medium"],
            channel=row["channel"],
        )
        matched = [r.id for r in model.spec.engagement.rules if event_matches(r.match, event)]
        sig = "+".join(matched) or NONE
        rules_of[sig] = matched
        sigs.append(sig)
    return distinct.with_columns(signature=pl.Series(sigs, dtype=pl.String)), rules_of


@dataclass(frozen=True)
class PointsSuggestion:
    rows: list[dict[str, Any]]
    scale: float
    source: str
    proposed_source: str
    diff: str
    model: str
    check_ok: bool
    check_errors: tuple[str, ...] = ()


SUGGEST_FORMULA = (
    "value_per_occurrence(r) = attributed value credited to touches matching rule r / "
    "occurrences of r among all touches; proposed(r) = round(k * value_per_occurrence(r)) "
    "with k = sum(points(r) * occurrences(r)) / sum(attributed value(r)) over rules with "
    "positive points, so the points all touches earn in total stay the same and the MQL "
    "threshold keeps its meaning; rules with zero or negative points and rules without "
    "occurrences keep their points"
)


def suggest_points(
    store: Store,
    period: Period,
    *,
    model: str = "linear",
    to_stage: str | None = None,
    order: int = 1,
) -> PointsSuggestion:
    """Propose engagement points per rule from attributed value (see SUGGEST_FORMULA)."""
    if model == "all":
        model = "linear"
    _check_choice(model, attr.MODELS, "--model")
    to_stage = to_stage or store.model.won_stage
    if store.model_source is None:
        raise ReportError("suggest-points: no active model stored; run `leadflow init`")
    tp, conv_table, _ = attribution_inputs(store, period, to_stage=to_stage, touch="channel")
    if tp.height == 0 or conv_table.filter(pl.col("converted")).height == 0:
        raise ReportError(
            f"suggest-points: no lead reached {to_stage!r} in the period with touches before it; "
            "widen --from/--to or choose --to-stage"
        )
    sig_table, rules_of = _rule_signatures(tp, store.model)
    keyed = tp.join(
        sig_table,
        on=[
            "type",
            "name",
            "channel",
            "campaign",
            "utm_source",
            "utm_medium",
            "path",
            "asset_type",
            "bounce_type",
        ],
        how="left",
        nulls_equal=True,
    )
    result = attr.attribute(
        keyed,
        conv_table,
        model=model,
        touch_key="signature",
        order=order,
        allocation="per_touch" if model == "markov" else "removal_share",
    )
    occurrences = keyed.group_by("signature").agg(n=pl.len())
    value_by_rule: dict[str, float] = {}
    occ_by_rule: dict[str, int] = {}
    for sig, n in occurrences.iter_rows():
        for rule in rules_of.get(sig, []):
            occ_by_rule[rule] = occ_by_rule.get(rule, 0) + int(n)
    for row in result.credits.iter_rows(named=True):
        matched = rules_of.get(row["touch"], [])
        for rule in matched:
            value_by_rule[rule] = value_by_rule.get(rule, 0.0) + row["value"] / len(matched)
    rules = store.model.spec.engagement.rules
    positive = [r for r in rules if r.points > 0 and occ_by_rule.get(r.id)]
    earned = sum(r.points * occ_by_rule[r.id] for r in positive)
    credited = sum(value_by_rule.get(r.id, 0.0) for r in positive)
    scale = earned / credited if credited else 0.0
    rows = []
    proposed: dict[str, float] = {}
    for r in rules:
        occ = occ_by_rule.get(r.id, 0)
        value = value_by_rule.get(r.id, 0.0)
        new = r.points
        if r in positive and scale:
            new = float(round(scale * value / occ))
            proposed[r.id] = new
        rows.append(
            {
                "rule": r.id,
                "occurrences": occ,
                "attributed_value": value,
                "value_per_occurrence": value / occ if occ else None,
                "points": r.points,
                "proposed": new,
            }
        )
    source = store.model_source
    new_source = _rewrite_points(source, proposed, store.model.version)
    report = check(new_source)
    diff = "".join(
        difflib.unified_diff(
            source.splitlines(keepends=True),
            new_source.splitlines(keepends=True),
            fromfile="leadflow.yaml",
            tofile="leadflow.yaml (suggested)",
        )
    )
    return PointsSuggestion(
        rows=rows,
        scale=scale,
        source=source,
        proposed_source=new_source,
        diff=diff,
        model=result.model,
        check_ok=report.ok,
        check_errors=report.errors,
    )


def _fmt_points(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _rewrite_points(source: str, proposed: Mapping[str, float], version: str) -> str:
    """Change the ``points`` of each rule in the YAML text, keeping comments and layout;
    fall back to re-serialising the document when the text edit cannot be verified."""
    lines = source.splitlines(keepends=True)
    done: set[str] = set()
    for rule_id, points in proposed.items():
        id_re = re.compile(r"\bid:\s*['\"]?" + re.escape(rule_id) + r"['\"]?\s*(?=[,}\s]|$)")
        for i, line in enumerate(lines):
            if not id_re.search(line):
                continue
            for j in range(i, min(i + 12, len(lines))):
                if j > i and re.search(r"\bid:\s*", lines[j]):
                    break
                new, n = re.subn(
                    r"(\bpoints:\s*)(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)",
                    lambda m, p=points: m.group(1) + _fmt_points(p),
                    lines[j],
                    count=1,
                )
                if n:
                    lines[j] = new
                    done.add(rule_id)
                    break
            break
    suffix = "-suggested"
    new_version = version if version.endswith(suffix) else f"{version}{suffix}"
    text = "".join(lines)
    text, n = re.subn(
        r"^(version:\s*)(['\"]?)" + re.escape(version) + r"\2",
        lambda m: f'{m.group(1)}"{new_version}"',
        text,
        count=1,
        flags=re.MULTILINE,
    )
    if n and done == set(proposed) and _points_of(text) == _expected(source, proposed):
        return text
    import yaml

    data = yaml.safe_load(source)
    data["version"] = new_version
    for rule in data.get("engagement", {}).get("rules", []):
        if rule.get("id") in proposed:
            rule["points"] = proposed[rule["id"]]
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _points_of(text: str) -> dict[str, float] | None:
    try:
        model = load_model(text)
    except ValueError:
        return None
    return {r.id: r.points for r in model.spec.engagement.rules}


def _expected(source: str, proposed: Mapping[str, float]) -> dict[str, float] | None:
    current = _points_of(source)
    return None if current is None else {**current, **proposed}


# --------------------------------------------------------------------------- campaigns


def _rate(num: str, den: str) -> pl.Expr:
    return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den))


def load_sends(conn: Connection) -> pl.DataFrame:
    """``email_sends`` as a frame (no addresses): program, step, seminar, status, times."""
    stmt = select(
        email_sends.c.id,
        email_sends.c.lead_id,
        email_sends.c.category,
        email_sends.c.program_key,
        email_sends.c.step_id,
        email_sends.c.seminar_id,
        email_sends.c.template,
        email_sends.c.status,
        _ts(email_sends.c.sent_at, "sent_at"),
        _ts(email_sends.c.opened_at, "opened_at"),
        _ts(email_sends.c.clicked_at, "clicked_at"),
        _ts(email_sends.c.unsubscribed_at, "unsubscribed_at"),
        _ts(email_sends.c.bounced_at, "bounced_at"),
    ).order_by(email_sends.c.id)
    times = ("sent_at", "opened_at", "clicked_at", "unsubscribed_at", "bounced_at")
    schema = {
        "id": pl.Int64,
        "lead_id": pl.Int64,
        "category": pl.String,
        "program_key": pl.String,
        "step_id": pl.String,
        "seminar_id": pl.Int64,
        "template": pl.String,
        "status": pl.String,
        **{t: pl.Datetime("us") for t in times},
    }
    return _utc_cols(_read(conn, stmt, schema), *times)


def load_form_submissions(conn: Connection) -> pl.DataFrame:
    stmt = select(
        form_submissions.c.lead_id,
        form_submissions.c.form_key,
        _ts(form_submissions.c.submitted_at, "submitted_at"),
    ).order_by(form_submissions.c.id)
    schema = {"lead_id": pl.Int64, "form_key": pl.String, "submitted_at": pl.Datetime("us")}
    return _utc_cols(_read(conn, stmt, schema), "submitted_at")


def _seminar_funnel(conn: Connection, model: LeadModel) -> list[dict[str, Any]]:
    from leadflow.services.seminars import funnel as seminar_funnel

    return seminar_funnel(conn, model)


# A form submission counts toward the email that led to it when it comes this soon after.
FORM_AFTER_EMAIL = timedelta(days=14)


def program_email_funnel(store: Store, period: Period) -> list[dict[str, Any]]:
    """Per program and step: emails sent in the period -> opened -> clicked -> a form
    submitted within 14 days of the send, with the rates of each step."""
    sends = store.sends
    if sends.height == 0:
        return []
    sent = sends.filter(
        pl.col("program_key").is_not_null()
        & pl.col("sent_at").is_not_null()
        & (pl.col("sent_at") >= period.start)
        & (pl.col("sent_at") < period.end)
    )
    if sent.height == 0:
        return []
    subs = store.form_submissions
    converted = (
        sent.select("id", "lead_id", "sent_at")
        .join(subs.select("lead_id", "submitted_at"), on="lead_id")
        .filter(
            (pl.col("submitted_at") >= pl.col("sent_at"))
            & (pl.col("submitted_at") < pl.col("sent_at") + FORM_AFTER_EMAIL)
        )
        .select("id")
        .unique()
        .with_columns(form=pl.lit(True))
    )
    return (
        sent.join(converted, on="id", how="left")
        .group_by("program_key", "step_id")
        .agg(
            sent=pl.len(),
            opened=pl.col("opened_at").is_not_null().sum(),
            clicked=pl.col("clicked_at").is_not_null().sum(),
            form_submitted=pl.col("form").fill_null(False).sum(),
            unsubscribed=pl.col("unsubscribed_at").is_not_null().sum(),
            bounced=pl.col("bounced_at").is_not_null().sum(),
        )
        .with_columns(
            open_rate=_rate("opened", "sent"),
            click_rate=_rate("clicked", "sent"),
            form_rate=_rate("form_submitted", "sent"),
        )
        .sort("program_key", "step_id")
        .rename({"program_key": "program", "step_id": "step"})
        .to_dicts()
    )


def campaigns_report(store: Store, period: Period) -> dict[str, Any]:
    """Campaign staff's view: e-mail rates, form conversion, webinars, content."""
    ev = store.events.filter((pl.col("at") >= period.start) & (pl.col("at") < period.end))
    who = pl.coalesce(pl.col("lead_id").cast(pl.String), pl.lit("a:") + pl.col("anonymous_id"))
    ev = ev.with_columns(person=who)
    named = lambda n: pl.col("person").filter(pl.col("name") == n).n_unique()  # noqa: E731
    email = (
        ev.filter(pl.col("name").str.starts_with("email_").fill_null(False))
        .with_columns(campaign=pl.col("campaign").fill_null(NONE))
        .group_by("campaign")
        .agg(
            sent=named("email_sent"),
            opened=named("email_open"),
            clicked=named("email_click"),
            unsubscribed=named("email_unsubscribe"),
            bounced=named("email_bounce"),
        )
        .with_columns(
            open_rate=_rate("opened", "sent"),
            click_rate=_rate("clicked", "sent"),
            click_to_open=_rate("clicked", "opened"),
        )
        .sort("sent", "campaign", descending=[True, False])
    )
    forms = (
        ev.filter(pl.col("campaign").is_not_null())
        .group_by("campaign")
        .agg(
            visitors=pl.col("person").filter(pl.col("type") == "page").n_unique(),
            form_submitters=named("form_submit"),
            leads=pl.col("lead_id").drop_nulls().n_unique(),
        )
        .with_columns(form_conversion=_rate("form_submitters", "visitors"))
        .sort("visitors", "campaign", descending=[True, False])
    )
    webinars = (
        ev.filter(pl.col("name").is_in(["webinar_registered", "webinar_attended"]))
        .with_columns(webinar=pl.col("webinar").fill_null(NONE))
        .group_by("webinar")
        .agg(registered=named("webinar_registered"), attended=named("webinar_attended"))
        .with_columns(attendance_rate=_rate("attended", "registered"))
        .sort("webinar")
    )
    content = (
        ev.filter(pl.col("name") == "content_download")
        .with_columns(asset=pl.col("asset").fill_null(NONE))
        .group_by("asset", "asset_type")
        .agg(downloads=pl.len(), people=pl.col("person").n_unique())
        .sort("downloads", "asset", descending=[True, False])
    )
    seminars = ev.filter(pl.col("name") == "event_attended")["person"].n_unique()
    return {
        "report": "campaigns",
        "period": period.as_dict(),
        "email": email.to_dicts(),
        "forms": forms.to_dicts(),
        "webinars": webinars.to_dicts(),
        "content": content.to_dicts(),
        "seminar_attendees": seminars,
        "programs": program_email_funnel(store, period),
        "seminars": [
            {k: v for k, v in row.items() if k != "emails"}
            for row in store.seminar_funnel
            if period.start <= row["starts_at"] < period.end
        ],
        "definitions": {
            "sent/opened/clicked": "distinct people with an email_sent / email_open / "
            "email_click event of the campaign (utm_campaign) in the period",
            "open_rate": "opened / sent; click_rate: clicked / sent; click_to_open: clicked / "
            "opened",
            "form_conversion": "people who submitted a form / people who viewed a page, per "
            "utm_campaign (a person is a lead, or an anonymous id not yet linked)",
            "attendance_rate": "attended / registered people per webinar",
            "downloads": "content_download events per asset; people: distinct people",
            "seminar_attendees": "distinct people with event_attended in the period",
            "programs": "per nurture program step: emails sent in the period, how many were "
            "opened and clicked, and after how many the lead submitted a form within 14 "
            "days; rates are over sent",
            "seminars": "per seminar starting in the period: invited -> registered -> "
            "reminded -> attended / no-show -> followed up, and participants who reached "
            "MQL or an opportunity after the start",
        },
    }


# --------------------------------------------------------------------------- KPIs


def _stage_at(history: pl.DataFrame, t: datetime) -> pl.DataFrame:
    return history.filter(pl.col("at") < t).group_by("lead_id").agg(stage=pl.col("to_stage").last())


def _amounts(store: Store) -> pl.DataFrame:
    """lead_id, amount: the lead's latest opportunity's amount, else its latest qualify
    action's amount."""
    qualify = (
        store.actions.filter((pl.col("name") == "qualify") & pl.col("amount").is_not_null())
        .group_by("lead_id")
        .agg(q_amount=pl.col("amount").last())
    )
    opps = store.opportunities
    if opps.height == 0 or "lead_id" not in opps.columns:
        return qualify.rename({"q_amount": "amount"})
    latest = (
        opps.filter(pl.col("lead_id").is_not_null() & pl.col("amount").is_not_null())
        .sort("lead_id", "created_at")
        .group_by("lead_id")
        .agg(o_amount=pl.col("amount").last())
    )
    return (
        qualify.join(latest, on="lead_id", how="full", coalesce=True)
        .with_columns(amount=pl.coalesce("o_amount", "q_amount"))
        .select("lead_id", "amount")
    )


def kpis(store: Store, period: Period, role: str) -> dict[str, Any]:
    _check_choice(role, ROLES, "--role")
    if role == "campaign":
        return {**campaigns_report(store, period), "report": "kpis", "role": role}
    if role == "department":
        return _department(store, period)
    return _executive(store, period)


def _executive(store: Store, period: Period) -> dict[str, Any]:
    won_stage = store.stage_model.won_stage or store.model.won_stage
    won = conversions(store, period, won_stage)
    attrs = lead_attributes(store.history, store.lead_rows, store.events, store.model, period.end)
    ev = store.events.filter(pl.col("lead_id").is_not_null())
    marketing = ev.filter(
        pl.col("channel").is_not_null()
        & (pl.col("channel") != "direct")
        & ~pl.col("name").is_in(list(NOT_TOUCHES)).fill_null(False)
    )
    influenced = (
        marketing.join(won.select("lead_id", won_at="at"), on="lead_id")
        .filter(pl.col("at") < pl.col("won_at"))
        .select("lead_id")
        .unique()
    )
    won_rows = won.join(attrs.select("lead_id", "channel"), on="lead_id", how="left").with_columns(
        first_channel=pl.col("channel").fill_null(NONE)
    )
    sourced = won_rows.filter(~pl.col("first_channel").is_in(["direct", NONE]))
    has_amount = won.join(_amounts(store), on="lead_id", how="inner")
    opportunity = store.model.stages_for("opportunity")
    in_opportunity = _stage_at(store.history, period.end).filter(pl.col("stage").is_in(opportunity))
    pipeline = in_opportunity.join(_amounts(store), on="lead_id", how="left")
    by_channel = (
        won_rows.group_by("first_channel")
        .agg(won=pl.len(), revenue=pl.col("value").sum())
        .sort("revenue", "first_channel", descending=[True, False])
    )
    return {
        "report": "kpis",
        "role": "executive",
        "period": period.as_dict(),
        "kpis": {
            "won_leads": won.height,
            "won_revenue": float(has_amount["amount"].sum()) if has_amount.height else 0.0,
            "won_without_amount": won.height - has_amount.height,
            "pipeline_leads": in_opportunity.height,
            "pipeline_value": float(pipeline["amount"].fill_null(0).sum()),
            "marketing_sourced_won": sourced.height,
            "marketing_sourced_revenue": float(sourced["value"].sum()),
            "marketing_influenced_won": influenced.height,
            "marketing_influenced_revenue": float(
                won.join(influenced, on="lead_id")["value"].sum()
            ),
        },
        "revenue_by_first_channel": by_channel.to_dicts(),
        "definitions": {
            "won_leads": f"leads whose first entry into {won_stage!r} is in the period",
            "won_revenue": "sum of those leads' opportunity amounts (else their qualify amounts)",
            "pipeline_value": "opportunity (else qualify) amounts of leads in stage "
            f"{', '.join(opportunity) or '(none)'} at the period end",
            "marketing_sourced": "won leads whose first touch channel is a marketing channel "
            "(not direct)",
            "marketing_influenced": "won leads with any non-direct touch before winning",
            "revenue_by_first_channel": "won value (amount, else 1) by the lead's first channel",
        },
    }


def _department(store: Store, period: Period) -> dict[str, Any]:
    flow = funnel.flow_and_balance(
        store.history, start=period.start, end=period.end, model=store.stage_model
    )
    neck = funnel.find_bottleneck(
        store.history, start=period.start, end=period.end, model=store.stage_model
    )
    speed = (
        funnel.velocity(store.history, start=period.start, end=period.end, model=store.stage_model)
        if store.stage_model.won_stage
        else None
    )
    in_period = (pl.col("at") >= period.start) & (pl.col("at") < period.end)
    handoff = store.model.handoff_stage
    mql_entries = store.history.filter(in_period & (pl.col("to_stage") == handoff)).height
    accepted = store.actions.filter(in_period & (pl.col("name") == "accept")).height
    rows = [
        {
            k: r[k]
            for k in (
                "stage",
                "balance_start",
                "flow_in",
                "flow_out",
                "balance_end",
                "cvr",
                "median_days_in_stage",
            )
        }
        for r in flow.to_rows()
    ]
    return {
        "report": "kpis",
        "role": "department",
        "period": period.as_dict(),
        "stages": rows,
        "bottleneck": {"stage": neck.stage, "kind": neck.kind, "reason": neck.reason},
        "velocity": speed.to_rows() if speed is not None else [],
        "kpis": {
            "mql_entries": mql_entries,
            "accepted": accepted,
            "sales_acceptance": accepted / mql_entries if mql_entries else None,
        },
        "definitions": {
            **flow.definitions,
            "sales_acceptance": f"accept actions in the period / entries into {handoff!r} (the "
            "hand-off stage) in the period",
        },
    }


__all__ = [
    "LEVELS",
    "MODEL_CHOICES",
    "ROLES",
    "SLICES",
    "SUGGEST_FORMULA",
    "TOUCH_KEYS",
    "Period",
    "PointsSuggestion",
    "ReportError",
    "Store",
    "attribution_report",
    "campaigns_report",
    "funnel_report",
    "kpis",
    "load_store",
    "parse_day",
    "stage_model_for",
    "suggest_points",
]


# --------------------------------------------------------------------------- pipeline


def load_opportunities(conn: Connection) -> pl.DataFrame:
    """``opportunities`` as a frame: id, lead_id, account_id, amount, stage, created_at,
    closed_at, expected_close."""
    stmt = select(
        opportunities.c.id,
        opportunities.c.lead_id,
        opportunities.c.account_id,
        opportunities.c.amount,
        opportunities.c.stage,
        _ts(opportunities.c.created_at, "created_at"),
        _ts(opportunities.c.closed_at, "closed_at"),
        opportunities.c.expected_close,
    ).order_by(opportunities.c.id)
    schema = {
        "id": pl.Int64,
        "lead_id": pl.Int64,
        "account_id": pl.Int64,
        "amount": pl.Float64,
        "stage": pl.String,
        "created_at": pl.Datetime("us"),
        "closed_at": pl.Datetime("us"),
        "expected_close": pl.Date,
    }
    return _utc_cols(_read(conn, stmt, schema), "created_at", "closed_at")


def pipeline_report(engine: Engine, as_of: datetime, months: int = 6) -> dict[str, Any]:
    """Open pipeline by expected close month, weighted by measured win rates, with the
    forecast's error on the ``months`` past months (see :mod:`leadflow.core.forecast`), and
    the ``addressable_market`` of target accounts (see :mod:`leadflow.services.targets`)."""
    if not 0 <= months <= 36:
        raise ReportError("must be between 0 and 36")
    from leadflow.services.targets import addressable_market

    with engine.connect() as conn:
        frame = load_opportunities(conn)
        market = addressable_market(conn)
    return {
        "report": "pipeline",
        **forecast.forecast(frame, as_of, backtest_months=months),
        "addressable_market": market,
    }
