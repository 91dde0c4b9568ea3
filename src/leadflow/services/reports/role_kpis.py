"""KPIs by role: executive, department and campaign."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl

from leadflow.core import deals as deal_figures
from leadflow.core import funnel
from leadflow.services.reports.attribution import conversions
from leadflow.services.reports.campaigns import campaigns_report
from leadflow.services.reports.common import (
    NONE,
    NOT_TOUCHES,
    ROLES,
    Period,
    _check_choice,
    scope,
)
from leadflow.services.reports.store import Store, lead_attributes

# --------------------------------------------------------------------------- KPIs


def _stage_at(history: pl.DataFrame, t: datetime) -> pl.DataFrame:
    return history.filter(pl.col("at") < t).group_by("lead_id").agg(stage=pl.col("to_stage").last())


def _qualify_amounts(store: Store) -> pl.DataFrame:
    """lead_id, amount: the lead's latest qualify action's amount."""
    return (
        store.actions.filter((pl.col("name") == "qualify") & pl.col("amount").is_not_null())
        .group_by("lead_id")
        .agg(amount=pl.col("amount").last())
    )


def _deal_leads(opps: pl.DataFrame, period: Period) -> tuple[set[int], set[int]]:
    """Leads with a won deal at any time, and leads with a deal opened before the end."""
    if opps.height == 0 or "stage" not in opps.columns:
        return set(), set()
    won = opps.filter(pl.col("stage") == "won")["lead_id"].drop_nulls().to_list()
    opened = opps.filter(pl.col("created_at") < period.end)["lead_id"].drop_nulls().to_list()
    return {int(i) for i in won}, {int(i) for i in opened}


def kpis(store: Store, period: Period, role: str, currency: str | None = None) -> dict[str, Any]:
    """The KPIs of one role; the executive's deal figures are the deals of ``currency``
    (default: every deal; amounts then only when the deals share one currency)."""
    _check_choice(role, ROLES, "--role")
    if role == "campaign":
        return {**campaigns_report(store, period), "report": "kpis", "role": role}
    if role == "department":
        return _department(store, period)
    return _executive(store, period, currency)


def _executive(store: Store, period: Period, currency: str | None = None) -> dict[str, Any]:
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
    chosen = scope(store.opportunities, currency)
    figures = deal_figures.totals(chosen.deals, period.start, period.end)
    covered, with_deal = _deal_leads(store.opportunities, period)
    # Won leads with no won deal on record: their qualify amount stands in (as before).
    by_qualify = won.filter(~pl.col("lead_id").is_in(list(covered))).join(
        _qualify_amounts(store), on="lead_id", how="inner"
    )
    won_revenue = figures["won_amount"] + (
        float(by_qualify["amount"].sum()) if by_qualify.height else 0.0
    )
    without_amount = won.filter(~pl.col("lead_id").is_in(list(covered))).height - by_qualify.height
    opportunity = store.model.stages_for("opportunity")
    in_opportunity = _stage_at(store.history, period.end).filter(pl.col("stage").is_in(opportunity))
    # Leads in the opportunity stage with no deal on record: their qualify amount stands in.
    by_qualify_open = in_opportunity.filter(~pl.col("lead_id").is_in(list(with_deal))).join(
        _qualify_amounts(store), on="lead_id", how="inner"
    )
    pipeline_value = figures["open_amount"] + float(by_qualify_open["amount"].sum())
    # Lead-level values (a lead's opportunity amount) carry no currency filter: shown only
    # when every deal is in one currency.
    lead_money = len(chosen.currencies) <= 1
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
            "won_deals": figures["won_deals"],
            "won_revenue": chosen.amount(won_revenue),
            "won_without_amount": without_amount,
            "lost_deals": figures["lost_deals"],
            "win_rate": figures["win_rate"],
            "pipeline_leads": in_opportunity.height,
            "pipeline_deals": figures["open_deals"],
            "pipeline_value": chosen.amount(pipeline_value),
            "marketing_sourced_won": sourced.height,
            "marketing_sourced_revenue": float(sourced["value"].sum()) if lead_money else None,
            "marketing_influenced_won": influenced.height,
            "marketing_influenced_revenue": float(won.join(influenced, on="lead_id")["value"].sum())
            if lead_money
            else None,
        },
        **chosen.as_dict(),
        "money_by_currency": [
            {
                "currency": r["currency"],
                "won_deals": r["won_deals"],
                "won_revenue": r["won_amount"],
                "lost_deals": r["lost_deals"],
                "win_rate": r["win_rate"],
                "pipeline_deals": r["open_deals"],
                "pipeline_value": r["open_amount"],
            }
            for r in deal_figures.money_by_currency(chosen.deals, period.start, period.end)
        ],
        "revenue_by_first_channel": by_channel.to_dicts()
        if lead_money
        else [{**r, "revenue": None} for r in by_channel.to_dicts()],
        "definitions": {
            "won_leads": f"leads whose first entry into {won_stage!r} is in the period",
            "won_deals": "opportunities won (closed as won) in the period, each deal once",
            "won_revenue": "sum of the amounts of the deals won in the period; a won lead with "
            "no won deal on record counts its qualify amount",
            "win_rate": "won_deals / (won_deals + lost_deals): the deals closed in the period",
            "currency": "amounts are summed within one currency only; with deals in several "
            "currencies and none chosen, the money KPIs are null and money_by_currency gives "
            "each currency's figures",
            "pipeline_deals": "opportunities open at the period end (opened before it, not "
            "closed by then)",
            "pipeline_value": "amounts of the deals open at the period end; a lead in stage "
            f"{', '.join(opportunity) or '(none)'} at the period end with no deal on record "
            "counts its qualify amount",
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
