"""Flow & balance: the funnel report over the store."""

from __future__ import annotations

from typing import Any

from leadflow.core import deals as deal_figures
from leadflow.core import funnel
from leadflow.services.reports.common import (
    SLICES,
    UNITS,
    Period,
    ReportError,
    _check_choice,
    scope,
)
from leadflow.services.reports.store import Store, lead_attributes

# --------------------------------------------------------------------------- funnel


def funnel_report(
    store: Store,
    period: Period,
    by: str | None = None,
    *,
    unit: str = "lead",
    currency: str | None = None,
) -> dict[str, Any]:
    """Flow & balance per stage (per slice value), Sankey links, bottleneck, velocity; with
    ``unit="deal"`` the deal funnel instead (:func:`deal_funnel_report`)."""
    _check_choice(unit, UNITS, "--unit")
    if unit == "deal":
        if by is not None:
            raise ReportError(
                "--by: slices are lead attributes and apply to --unit lead; for deals by "
                "segment use the pipeline report's --by",
                field="by",
            )
        return deal_funnel_report(store, period, currency)
    if currency is not None:
        raise ReportError("--currency: only with --unit deal", field="currency")
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
        "unit": "lead",
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


def deal_funnel_report(store: Store, period: Period, currency: str | None = None) -> dict[str, Any]:
    """The funnel of deals: flow & balance per stored deal stage (open -> won / lost), the
    deals opened in the period step by step with conversions, amounts per step (within one
    currency, see :func:`leadflow.core.deals.currency_scope`) and the loss reasons."""
    chosen = scope(store.opportunities, currency)
    flow = deal_figures.deal_funnel(chosen.deals, period.start, period.end, money=chosen.money)
    return {
        "report": "funnel",
        "unit": "deal",
        "period": period.as_dict(),
        "slice_by": None,
        **chosen.as_dict(),
        "stages": flow["stages"],
        "steps": flow["steps"],
        "win_rate": flow["win_rate"],
        "lost_reasons": deal_figures.lost_reasons(
            chosen.deals, period.start, period.end, money=chosen.money
        ),
        "money_by_currency": []
        if chosen.money
        else deal_figures.money_by_currency(chosen.deals, period.start, period.end),
        "sankey": [
            {"source": s["stage"], "target": t, "value": s[f"out_{t}"]}
            for s in flow["stages"][:1]
            for t in (deal_figures.WON, deal_figures.LOST)
            if s[f"out_{t}"]
        ],
        "bottleneck": None,
        "velocity": [],
        "definitions": flow["definitions"],
    }
