"""Attribution: conversions in the period, the touchpoints before them, and the credit each
model gives them."""

from __future__ import annotations

from typing import Any

import polars as pl

from leadflow.core import attribution as attr
from leadflow.core.config import channels as channel_config
from leadflow.services.reports.common import (
    LEVELS,
    MODEL_CHOICES,
    NONE,
    NOT_TOUCHES,
    TOUCH_KEYS,
    Period,
    ReportError,
    _check_choice,
)
from leadflow.services.reports.store import Store

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
    key = (
        _channel(ev, store)
        if touch == "channel"
        else {"campaign": pl.col("campaign").fill_null(NONE), "content": pl.col("content")}[touch]
    )
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


_HOST = r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/?#]*@)?([^/?#:]+)"


def _channel(ev: pl.DataFrame, store: Store) -> pl.Expr:
    """The touch's channel: the company's own (the model's ``channels:``) when one matches,
    else the built-in grouping stored at ingestion (no channel: ``direct``). Each distinct
    (source, medium, referrer host, page host, event) is classified once."""
    stored = pl.col("channel").fill_null("direct")
    own = channel_config.taxonomy(store.model.spec.channels)
    if not own.channels or ev.height == 0:
        return stored
    host = lambda col: (  # noqa: E731
        pl.col(col).str.extract(_HOST, 1).str.to_lowercase().str.strip_prefix("www.")
    )
    fields = ev.select(
        "utm_source",
        "utm_medium",
        ref_host=host("referrer") if "referrer" in ev.columns else pl.lit(None, pl.String),
        page_host=host("page_url"),
        event=pl.when(pl.col("type") == "track").then(pl.col("name")),
    )
    combos = fields.unique()
    combos = combos.with_columns(
        own_channel=pl.Series(
            [
                own.match(
                    utm_source=r["utm_source"],
                    utm_medium=r["utm_medium"],
                    referrer_host=r["ref_host"],
                    page_host=r["page_host"],
                    event=r["event"],
                )
                for r in combos.iter_rows(named=True)
            ],
            dtype=pl.String,
        )
    )
    matched = fields.join(
        combos, on=fields.columns, how="left", nulls_equal=True, maintain_order="left"
    )
    return pl.coalesce(pl.lit(matched["own_channel"]), stored)


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


ALLOCATIONS = {"removal": "removal_share", "path": "per_touch"}
"""``--allocation``: ``removal`` splits all conversions (value) in proportion to the normalised
removal effects (ChannelAttribution's ``markov_model``); ``path`` splits each converted path
over its touches by their removal effects (mam's ``MAM.attribution_markov``; per person too)."""


SHAPLEY_GAMES = ("conversions", "conversion_rate")
"""``--shapley-game``: ``conversions`` (exact closed form at any size) or ``conversion_rate``
(exact up to 15 channels, sampled permutations with a standard error above)."""


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
    allocation: str = "removal",
    shapley_game: str = "conversions",
) -> dict[str, Any]:
    """Credits per touch-key value for one model or all side by side. ``allocation`` is how
    Markov removal effects become credits (see :data:`ALLOCATIONS`)."""
    _check_choice(model, MODEL_CHOICES, "--model")
    _check_choice(allocation, tuple(ALLOCATIONS), "--allocation")
    _check_choice(shapley_game, SHAPLEY_GAMES, "--shapley-game")
    to_stage = to_stage or store.model.won_stage
    if order not in (1, 2, 3):
        raise ReportError(f"--order: {order} is not 1, 2 or 3")
    touchpoints, conv_table, conv = attribution_inputs(
        store, period, to_stage=to_stage, touch=touch, level=level
    )
    results: list[attr.Attribution] = []
    if touchpoints.height:
        results = attr.attribute_models(
            touchpoints,
            conv_table,
            _models(model, order),
            touch_key="touch",
            half_life_days=half_life_days,
            allocation=ALLOCATIONS[allocation],
            characteristic=shapley_game,
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
        "allocation": allocation,
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
            "allocation": "markov credits: "
            + (
                "all conversions (value) split in proportion to the normalised removal "
                "effects, as ChannelAttribution's markov_model"
                if allocation == "removal"
                else "each converted path split over its touches by their removal effects, "
                "as mam's attribution_markov"
            ),
            "level": "lead: one path per lead; account: one path per account with every "
            "member's touches before the account's first conversion",
        },
    }
