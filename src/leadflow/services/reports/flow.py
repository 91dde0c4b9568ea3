"""Flow & balance: the funnel report over the store."""

from __future__ import annotations

from typing import Any

from leadflow.core import funnel
from leadflow.services.reports.common import SLICES, Period, _check_choice
from leadflow.services.reports.store import Store, lead_attributes

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
