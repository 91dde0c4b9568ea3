"""The funnel page: flow & balance per stage for a period and slice, bottleneck, Sankey;
with ``unit=deal`` the deal funnel (deals per deal stage, the period's opened deals step by
step, amounts per currency: :func:`leadflow.services.reports.deal_funnel_report`).

The figures come from :func:`leadflow.services.reports.funnel_report` (the same numbers as
``leadflow report funnel``). A slice *value* narrows the report to the leads with that
value (one value per lead, so this equals the sliced rows of the CLI's ``--by``), which
also gives the slice its own Sankey and bottleneck. The loaded store is cached per model
for :attr:`TTLCache.ttl` seconds and dropped after every sales action on this process.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from leadflow.adapters.db.repositories import dashboard
from leadflow.bootstrap import Services
from leadflow.core.config import LeadModel
from leadflow.core.inputs import date_problem
from leadflow.entrypoints.web import auth, drill
from leadflow.entrypoints.web.cache import TTLCache
from leadflow.entrypoints.web.i18n import Translator
from leadflow.entrypoints.web.rendering import render, translator_for
from leadflow.entrypoints.web.state import cache_of, services_of
from leadflow.services import reports

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
FunnelUser = Annotated[auth.WebUser, auth.require("funnel.view")]

DEFAULT_DAYS = 90
MAX_DAYS = 3 * 366
NEW = "(new)"
RETURN_SUFFIX = "↩"
SLICE_VALUES_SHOWN = 200


def _day(text: str) -> datetime | None:
    """``YYYY-MM-DD`` as UTC midnight; None when it is not a date."""
    try:
        parsed = datetime.strptime(text.strip(), "%Y-%m-%d")
    except ValueError:
        return None
    if date_problem(parsed) is not None:  # near year 1 or 9999: periods overflow
        return None
    return parsed.replace(tzinfo=UTC)


def default_period(newest: datetime | None, now: datetime) -> reports.Period:
    """The 90 days ending at the day after the newest stage change (or today)."""
    last = newest or now
    end = datetime.combine(last.astimezone(UTC).date(), time(), UTC) + timedelta(days=1)
    return reports.Period(end - timedelta(days=DEFAULT_DAYS), end)


def choose_period(
    start: str, end: str, default: reports.Period
) -> tuple[reports.Period, list[tuple[str, dict[str, str]]]]:
    """The period asked for, or the default with the reasons it was refused."""
    errors: list[tuple[str, dict[str, str]]] = []
    frm, to = default.start, default.end
    if start.strip():
        parsed = _day(start)
        if parsed is None:
            errors.append(("funnel.error.date", {"field": "from", "value": start[:40]}))
        else:
            frm = parsed
    if end.strip():
        parsed = _day(end)
        if parsed is None:
            errors.append(("funnel.error.date", {"field": "to", "value": end[:40]}))
        else:
            to = parsed + timedelta(days=1)  # the form's "to" day is included
    if not errors and to <= frm:
        errors.append(("funnel.error.order", {}))
    elif not errors and to - frm > timedelta(days=MAX_DAYS):
        errors.append(("funnel.error.long", {"days": str(MAX_DAYS)}))
    if errors:
        return default, errors
    return reports.Period(frm, to), errors


def stage_label(model: LeadModel, stage: str, t: Translator) -> str:
    if stage == NEW:
        return t("funnel.new")
    base = stage.removesuffix(RETURN_SUFFIX)
    label = model.display_name(base, t.locale) if base in model.spec.stages else base
    return f"{label} {RETURN_SUFFIX}" if base != stage else label


def sankey_graph(links: list[dict[str, Any]], model: LeadModel, t: Translator) -> dict[str, Any]:
    """Nodes and links for ECharts' Sankey, which needs a graph without cycles: a move back
    (recycle -> nurturing, mql -> nurturing) goes to a separate 'returned' node."""
    spec = model.spec
    rank: dict[str, int] = {NEW: -1}
    rank.update({s: i for i, s in enumerate(spec.lifecycle.main_path)})
    for i, key in enumerate(k for k in spec.stages if k not in rank):
        rank[key] = 100 + i
    rank[spec.lifecycle.dead_end] = 1000
    out_links = []
    nodes: dict[str, dict[str, Any]] = {}
    for link in links:
        source, target = link["source"], link["target"]
        if rank.get(target, 500) <= rank.get(source, 500):
            target = target + RETURN_SUFFIX
        for key in (source, target):
            base = key.removesuffix(RETURN_SUFFIX)
            kind = (
                "dead"
                if base == spec.lifecycle.dead_end
                else "recycle"
                if base in spec.stages and spec.stages[base].recycle is not None
                else "won"
                if base == model.won_stage
                else "return"
                if key.endswith(RETURN_SUFFIX)
                else "main"
            )
            nodes.setdefault(key, {"name": key, "label": stage_label(model, key, t), "kind": kind})
        out_links.append({"source": source, "target": target, "value": int(link["value"])})
    return {"nodes": list(nodes.values()), "links": out_links}


def localized_reason(
    bottleneck: dict[str, Any], next_stage: str | None, model: LeadModel, t: Translator
) -> list[str]:
    """The bottleneck's reason in the user's language, from its figures."""
    stage = bottleneck["stage"]
    if stage is None:
        return [t("funnel.bottleneck.none")]
    row = next((c for c in bottleneck["candidates"] if c["stage"] == stage), None)
    if row is None:
        return [bottleneck["reason"]]
    lines = []
    if bottleneck["kind"] in ("balance_growth", "both"):
        lines.append(
            t(
                "funnel.reason.balance",
                growth=t.number(row["balance_growth"]),
                start=t.number(row["balance_start"]),
                end=t.number(row["balance_end"]),
            )
        )
    if bottleneck["kind"] in ("cvr_drop", "both"):
        lines.append(
            t(
                "funnel.reason.cvr",
                next=stage_label(model, next_stage, t) if next_stage else "–",
                prev=t.percent(row["prev_cvr"]),
                cvr=t.percent(row["cvr"]),
                lost=t.number(round(row["lost_to_cvr_drop"])),
            )
        )
    return lines


def _store(services: Services, cache: TTLCache) -> reports.Store:
    model = services.active_model()
    return cache.get(
        ("funnel", model.content_hash), lambda: reports.load_store(services.reader, model)
    )


def warm(app: Any) -> None:
    """Load the report store in a background thread at start-up (``LEADFLOW_WARM_REPORTS``):
    at 1,000,000 leads it takes tens of seconds, which the first visitor of the funnel or
    attribution page would otherwise wait for (they now wait only for what is left)."""
    services: Services = app.state.services
    if not services.settings.warm_reports:
        return

    def run() -> None:
        try:
            _store(services, app.state.web_cache)
        except Exception:  # the first request computes it instead
            log.exception("warming the report store failed")

    threading.Thread(target=run, name="leadflow-warm-reports", daemon=True).start()


def _computed(
    services: Services, cache: TTLCache, period: reports.Period, by: str, value: str
) -> tuple[LeadModel, dict[str, Any], list[tuple[str, int]]]:
    """The funnel report (and slice values) for one period and slice, cached like the
    store it is computed from (the language only changes labels, applied afterwards)."""
    model = services.active_model()

    def compute() -> tuple[LeadModel, dict[str, Any], list[tuple[str, int]]]:
        store = _store(services, cache)
        values: list[tuple[str, int]] = []
        if by:
            sliced = slice_values(store, period, by)
            counts = sliced.group_by("value").len().sort(["len", "value"], descending=[True, False])
            values = [(str(v), int(n)) for v, n in counts.head(SLICE_VALUES_SHOWN).iter_rows()]
            if value:
                store = narrowed(store, sliced.filter(pl.col("value") == value)["lead_id"])
        return store.model, reports.funnel_report(store, period, None), values

    key = ("funnel", model.content_hash, "report", period.start, period.end, by, value)
    return cache.get(key, compute)


def slice_values(store: reports.Store, period: reports.Period, by: str) -> pl.DataFrame:
    """lead_id and the slice value as text (missing values as ``(none)``)."""
    attrs = reports.lead_attributes(
        store.history, store.lead_rows, store.events, store.model, period.end
    )
    return attrs.select("lead_id", value=pl.col(by).cast(pl.String).fill_null(reports.NONE))


def narrowed(store: reports.Store, ids: pl.Series) -> reports.Store:
    keep = pl.col("lead_id").is_in(ids.implode())
    return dataclasses.replace(
        store,
        history=store.history.filter(keep),
        lead_rows=store.lead_rows.filter(keep),
        events=store.events.filter(keep),
        actions=store.actions.filter(keep),
    )


def deal_view(services: Services, cache: TTLCache, period: reports.Period) -> dict[str, Any]:
    """The deal funnel of the period (the same figures as ``report funnel --unit deal``)."""
    model = services.active_model()

    def compute() -> dict[str, Any]:
        return reports.funnel_report(_store(services, cache), period, None, unit="deal")

    report = cache.get(("funnel", model.content_hash, "deals", period.start, period.end), compute)
    stages = {r["stage"]: r for r in report["stages"]}
    opened = stages[reports.DEAL_STAGES[0]]
    cells = drill.deal_cells(period.start, period.end)
    return {
        "deal_cells": cells,
        "deal_tiles": {"opened": cells["open"]["flow_in"], "won": cells["open"]["out_won"]},
        "deals": report,
        "deal_figs": {
            "opened": opened["flow_in"],
            "won": opened["out_won"],
            "win_rate": report["win_rate"],
            "median_days": opened["median_days_open"],
        },
        "model_version": model.version,
    }


def funnel_view(
    services: Services,
    cache: TTLCache,
    period: reports.Period,
    by: str,
    value: str,
    t: Translator,
) -> dict[str, Any]:
    data = _funnel_view(services, cache, period, by, value, t)
    data.update(funnel_drill(data, services.active_model(), period, sliced=bool(by and value)))
    return data


def funnel_drill(
    data: dict[str, Any], model: LeadModel, period: reports.Period, *, sliced: bool
) -> dict[str, Any]:
    """The lead list behind each cell, KPI tile and Sankey link (:mod:`.drill`). A slice
    value narrows the report to leads the list cannot filter by (first channel...), so a
    sliced funnel has no links rather than links whose counts differ."""
    if sliced:
        return {
            "cells": {},
            "tiles": {"acquired": None, "mql": None, "won": None},
            "sankey_drill": {},
        }
    start, end = period.start, period.end
    cells = drill.funnel_cells(data["rows"], model, start, end)
    main = model.spec.lifecycle.main_path
    acquired = model.stage_for("acquired") or (main[1] if len(main) > 1 else main[0])
    tiles = {
        "acquired": cells.get(acquired, {}).get("flow_in"),
        "mql": cells.get(model.handoff_stage or "", {}).get("flow_in"),
        "won": cells.get(model.won_stage or "", {}).get("flow_in"),
    }
    return {
        "cells": cells,
        "tiles": tiles,
        "sankey_drill": drill.sankey_hrefs(data["sankey"]["links"], start, end, RETURN_SUFFIX),
    }


def _funnel_view(
    services: Services,
    cache: TTLCache,
    period: reports.Period,
    by: str,
    value: str,
    t: Translator,
) -> dict[str, Any]:
    model, report, values = _computed(services, cache, period, by, value)
    rows = report["stages"]
    by_stage = {r["stage"]: r for r in rows}
    neck = report["bottleneck"]
    neck_next = by_stage.get(neck["stage"] or "", {}).get("next_stage")
    main = model.spec.lifecycle.main_path
    acquired = model.stage_for("acquired") or (main[1] if len(main) > 1 else main[0])
    handoff, won = model.handoff_stage, model.won_stage
    velocity = report["velocity"][0] if report["velocity"] else None
    return {
        "rows": rows,
        "labels": {r["stage"]: stage_label(model, r["stage"], t) for r in rows},
        "kinds": {
            r["stage"]: "recycle"
            if r["stage"] in model.spec.stages and model.spec.stages[r["stage"]].recycle
            else "dead"
            if r["stage"] == model.spec.lifecycle.dead_end
            else "main"
            for r in rows
        },
        "sankey": sankey_graph(report["sankey"], model, t),
        "bottleneck": neck,
        "bottleneck_label": stage_label(model, neck["stage"], t) if neck["stage"] else None,
        "reason_lines": localized_reason(neck, neck_next, model, t),
        "values": values,
        "figs": {
            "acquired": by_stage.get(acquired, {}).get("flow_in", 0),
            "acquired_label": stage_label(model, acquired, t),
            "mql": by_stage[handoff].get("flow_in") if handoff in by_stage else None,
            "won": by_stage[won].get("flow_in") if won in by_stage else None,
            "velocity_days": velocity["median_days"] if velocity else None,
        },
        "model_version": model.version,
    }


@router.get("/funnel")
async def funnel_page(
    request: Request,
    user: FunnelUser,
    start: Annotated[str, Query(alias="from", max_length=40)] = "",
    end: Annotated[str, Query(alias="to", max_length=40)] = "",
    by: Annotated[str, Query(max_length=40)] = "",
    value: Annotated[str, Query(max_length=200)] = "",
    unit: Annotated[str, Query(max_length=10)] = "lead",
) -> HTMLResponse:
    services = services_of(request)
    cache = cache_of(request)
    t = translator_for(request, user)
    newest = await run_in_threadpool(dashboard.newest_stage_change, services.engine)
    default = default_period(newest, services.clock())
    period, errors = choose_period(start, end, default)
    if unit not in reports.UNITS:
        errors.append(("funnel.error.unit", {"value": unit[:10]}))
        unit = "lead"
    if unit == "deal":
        data = await run_in_threadpool(deal_view, services, cache, period)
        data.update(
            {
                "period": period,
                "period_to": period.end - timedelta(days=1),
                "unit": unit,
                "units": reports.UNITS,
                "by": "",
                "errors": errors,
            }
        )
        return render(
            request, "funnel.html", data, status_code=400 if errors else 200, active="funnel"
        )
    if by and by not in reports.SLICES:
        errors.append(("funnel.error.slice", {"value": by[:40]}))
        by = ""
    if not by:
        value = ""
    data = await run_in_threadpool(funnel_view, services, cache, period, by, value, t)
    if value and value not in {v for v, _ in data["values"]}:
        errors.append(("funnel.error.value", {"value": value[:60]}))
    data.update(
        {
            "period": period,
            "period_to": period.end - timedelta(days=1),
            "by": by,
            "value": value,
            "slices": reports.SLICES,
            "unit": unit,
            "units": reports.UNITS,
            "errors": errors,
        }
    )
    return render(request, "funnel.html", data, status_code=400 if errors else 200, active="funnel")
