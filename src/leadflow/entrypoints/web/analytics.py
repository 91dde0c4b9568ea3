"""Attribution (models side by side) and the per-role KPI pages.

The figures come from :mod:`leadflow.services.reports` (the same numbers as ``leadflow
report attribution|kpis|pipeline`` and ``/api/reports/*``) on the store the funnel page
loads and caches; each result is cached under the ``funnel`` prefix, so a sales action on
this process drops it with the funnel.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from leadflow.adapters.db.repositories import dashboard
from leadflow.bootstrap import Services
from leadflow.core import attribution as attr
from leadflow.core.config import LeadModel
from leadflow.entrypoints.web import auth, drill
from leadflow.entrypoints.web.cache import TTLCache
from leadflow.entrypoints.web.funnel import _store, choose_period, default_period, stage_label
from leadflow.entrypoints.web.i18n import Translator
from leadflow.entrypoints.web.rendering import render, translator_for
from leadflow.entrypoints.web.state import cache_of, services_of
from leadflow.services import reports

router = APIRouter(include_in_schema=False)
AttributionUser = Annotated[auth.WebUser, auth.require("attribution.view")]
KpisUser = Annotated[auth.WebUser, auth.require("kpis.view")]

MODELS = (
    "first_touch",
    "last_touch",
    "linear",
    "time_decay",
    "u_shaped",
    "w_shaped",
    "markov",
    "shapley",
)
METRICS = ("conversions", "value")
CHART_TOUCHES = 12
TABLE_TOUCHES = 200
FORECAST_MONTHS = 6


async def _period(
    request: Request, start: str, end: str
) -> tuple[reports.Period, list[tuple[str, dict[str, str]]]]:
    services = services_of(request)
    newest = await run_in_threadpool(dashboard.newest_stage_change, services.engine)
    return choose_period(start, end, default_period(newest, services.clock()))


def conversion_stages(model: LeadModel) -> list[str]:
    """Stages a conversion may be counted into: the main path after acquisition."""
    main = list(model.spec.lifecycle.main_path)
    return main[2:] if len(main) > 2 else main


# ---------------------------------------------------------------- attribution


def attribution_figures(
    store: reports.Store, period: reports.Period, level: str, touch: str, to_stage: str
) -> dict[str, Any]:
    """The credits of every model in :data:`MODELS` -- what
    :func:`reports.attribution_report` gives for each model, with its inputs (the slow
    part) built once instead of once per model."""
    touchpoints, conv_table, conv = reports.attribution_inputs(
        store, period, to_stage=to_stage, touch=touch, level=level
    )
    credits: dict[str, dict[str, dict[str, float]]] = {m: {} for m in MODELS}
    tops: dict[str, str | None] = {m: None for m in MODELS}
    if touchpoints.height:
        for name in MODELS:
            result = attr.attribute(
                touchpoints,
                conv_table,
                model=name,
                touch_key="touch",
                order=1,
                half_life_days=7.0,
                allocation="removal_share",  # the report's default (ChannelAttribution's)
            )
            tops[name] = result.top_touch()
            for row in result.to_rows():
                credits[name][str(row["touch"])] = {
                    "conversions": float(row["conversions"] or 0.0),
                    "value": float(row["value"] or 0.0),
                }
    converted = conv_table.filter(pl.col("converted"))["path_id"].implode()
    return {
        "conversions": conv.height,
        "conversion_value": float(conv["value"].sum()) if conv.height else 0.0,
        "paths": touchpoints["path_id"].n_unique() if touchpoints.height else 0,
        "with_touches": touchpoints.filter(pl.col("path_id").is_in(converted))[
            "path_id"
        ].n_unique(),
        "credits": credits,
        "tops": tops,
    }


def attribution_view(
    services: Services,
    cache: TTLCache,
    period: reports.Period,
    level: str,
    touch: str,
    to_stage: str,
) -> dict[str, Any]:
    store = _store(services, cache)
    key = ("funnel", "attribution", store.model.content_hash, period, level, touch, to_stage)
    data = cache.get(key, lambda: attribution_figures(store, period, level, touch, to_stage))
    return {**data, "model": store.model}


@router.get("/attribution")
async def attribution_page(
    request: Request,
    user: AttributionUser,
    start: Annotated[str, Query(alias="from", max_length=40)] = "",
    end: Annotated[str, Query(alias="to", max_length=40)] = "",
    level: Annotated[str, Query(max_length=20)] = "lead",
    touch: Annotated[str, Query(max_length=20)] = "channel",
    to_stage: Annotated[str, Query(max_length=64)] = "",
    metric: Annotated[str, Query(max_length=20)] = "conversions",
) -> HTMLResponse:
    services = services_of(request)
    t = translator_for(request, user)
    period, errors = await _period(request, start, end)
    if level not in reports.LEVELS:
        errors.append(("attribution.error.level", {"value": level[:40]}))
        level = "lead"
    if touch not in reports.TOUCH_KEYS:
        errors.append(("attribution.error.touch", {"value": touch[:40]}))
        touch = "channel"
    if metric not in METRICS:
        errors.append(("attribution.error.metric", {"value": metric[:40]}))
        metric = "conversions"

    def load() -> dict[str, Any]:
        model = services.active_model()
        stages = conversion_stages(model)
        stage = to_stage or model.won_stage
        if stage not in model.spec.stages:
            errors.append(("attribution.error.stage", {"value": stage[:64]}))
            stage = model.won_stage if model.won_stage in stages else stages[-1]
        data = attribution_view(services, cache_of(request), period, level, touch, stage)
        credits: dict[str, dict[str, dict[str, float]]] = data["credits"]
        totals: dict[str, float] = {}
        for rows in credits.values():
            for name, figs in rows.items():
                totals[name] = totals.get(name, 0.0) + figs[metric]
        order = sorted(totals, key=lambda k: (-totals[k], k))
        table = [
            {
                "touch": name,
                "values": [credits.get(m, {}).get(name, {}).get(metric) for m in MODELS],
            }
            for name in order[:TABLE_TOUCHES]
        ]
        shown = order[:CHART_TOUCHES]
        chart = {
            "categories": shown,
            "series": [
                {
                    "name": t("attribution.model." + m),
                    "data": [
                        round(credits.get(m, {}).get(n, {}).get(metric, 0.0), 2) for n in shown
                    ],
                }
                for m in MODELS
            ],
        }
        tops = [{"model": m, "top": data["tops"][m]} for m in MODELS]
        touch_links = attribution_drill(order[:TABLE_TOUCHES], period, level, touch, stage)
        return {
            "touch_links": touch_links,
            "conversions_link": drill.converted(stage, period.start, period.end)
            if level == "lead"
            else None,
            "conversions": data["conversions"],
            "conversion_value": data["conversion_value"],
            "paths": data["paths"],
            "with_touches": data["with_touches"],
            "table": table,
            "chart": chart,
            "tops": tops,
            "stage": stage,
            "stage_name": stage_label(model, stage, t),
            "stages": [(s, stage_label(model, s, t)) for s in stages],
            "model_version": model.version,
        }

    data = await run_in_threadpool(load)
    data.update(
        {
            "period": period,
            "period_to": period.end - timedelta(days=1),
            "level": level,
            "touch": touch,
            "metric": metric,
            "models": MODELS,
            "levels": reports.LEVELS,
            "touches": reports.TOUCH_KEYS,
            "metrics": METRICS,
            "errors": errors,
        }
    )
    return render(
        request,
        "attribution.html",
        data,
        status_code=400 if errors else 200,
        active="attribution",
    )


def attribution_drill(
    touches: list[str], period: reports.Period, level: str, touch: str, stage: str
) -> dict[str, str]:
    """Touch -> the converted leads whose journey has that touch (lead level, channel or
    campaign touches: the paths the attribution models credit; see docs/lead-lists.md)."""
    if level != "lead" or touch not in ("channel", "campaign"):
        return {}
    return {
        name: drill.converted(stage, period.start, period.end, **{f"touched_{touch}": name})
        for name in touches
    }


# ---------------------------------------------------------------- KPIs


def kpi_drill(
    role: str, model: LeadModel, period: reports.Period, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The lead lists behind the KPI tiles (and the department table's cells)."""
    start, end = period.start, period.end
    if role == "executive":
        won = model.won_stage
        return {
            "won": drill.converted(won, start, end) if won else None,
            "pipeline": drill.leads_href([("role", "opportunity"), ("as_of", drill.day(end))]),
        }
    if role == "department":
        handoff = model.handoff_stage
        return {
            "mql": drill.moved(start, end, to=[handoff]) if handoff else None,
            "accepted": drill.leads_href(
                [
                    ("action", "accept"),
                    ("action_after", drill.day(start)),
                    ("action_before", drill.day(end)),
                ]
            ),
            "cells": drill.funnel_cells(rows, model, start, end),
        }
    return {}


def kpis_view(
    services: Services, cache: TTLCache, period: reports.Period, role: str
) -> dict[str, Any]:
    store = _store(services, cache)
    key = ("funnel", "kpis", store.model.content_hash, period, role)
    data = cache.get(key, lambda: reports.kpis(store, period, role))
    return {**data, "model": store.model}


def forecast_view(services: Services, cache: TTLCache) -> dict[str, Any]:
    now = services.clock()
    # One forecast per UTC hour is fresh enough; the cache key holds the hour.
    hour = now.replace(minute=0, second=0, microsecond=0)
    return cache.get(
        ("funnel", "pipeline", hour),
        lambda: reports.pipeline_report(services.engine, now, FORECAST_MONTHS),
    )


def _executive(data: dict[str, Any], forecast: dict[str, Any], t: Translator) -> dict[str, Any]:
    channels = [
        (str(r["first_channel"]), round(float(r["revenue"] or 0.0), 2))
        for r in data["revenue_by_first_channel"]
    ]
    months = forecast["by_month"]
    backtest = forecast["backtest"]
    return {
        "k": data["kpis"],
        "channels": data["revenue_by_first_channel"],
        "channel_chart": channels[:12],
        "forecast": forecast,
        "forecast_chart": {
            "categories": [str(m["month"]) for m in months],
            "series": [
                {"name": t("kpis.forecast.amount"), "data": [m["amount"] for m in months]},
                {"name": t("kpis.forecast.weighted"), "data": [m["weighted"] for m in months]},
            ],
        },
        "backtest": backtest,
        "backtest_chart": {
            "categories": [str(m["month"]) for m in backtest["months"]],
            "series": [
                {
                    "name": t("kpis.backtest.forecast"),
                    "data": [m["forecast"] for m in backtest["months"]],
                },
                {
                    "name": t("kpis.backtest.actual"),
                    "data": [m["actual"] for m in backtest["months"]],
                },
            ],
        },
    }


def _department(data: dict[str, Any], model: LeadModel, t: Translator) -> dict[str, Any]:
    neck = data["bottleneck"]
    return {
        "stages": data["stages"],
        "labels": {r["stage"]: stage_label(model, r["stage"], t) for r in data["stages"]},
        "bottleneck": neck,
        "bottleneck_label": stage_label(model, neck["stage"], t) if neck["stage"] else None,
        "velocity": data["velocity"][0] if data["velocity"] else None,
        "k": data["kpis"],
        "cvr_chart": [
            (stage_label(model, r["stage"], t), round(float(r["cvr"]) * 100, 1))
            for r in data["stages"]
            if r["cvr"] is not None
        ],
    }


def _campaign(data: dict[str, Any]) -> dict[str, Any]:
    email = data["email"]
    sent = sum(int(r["sent"]) for r in email)
    opened = sum(int(r["opened"]) for r in email)
    clicked = sum(int(r["clicked"]) for r in email)
    registered = sum(int(r["registered"]) for r in data["webinars"])
    attended = sum(int(r["attended"]) for r in data["webinars"])
    visitors = sum(int(r["visitors"]) for r in data["forms"])
    submitters = sum(int(r["form_submitters"]) for r in data["forms"])
    return {
        "email": email,
        "forms": data["forms"],
        "webinars": data["webinars"],
        "content": data["content"],
        "seminar_attendees": data["seminar_attendees"],
        "totals": {
            "sent": sent,
            "open_rate": opened / sent if sent else None,
            "click_rate": clicked / sent if sent else None,
            "form_conversion": submitters / visitors if visitors else None,
            "attendance_rate": attended / registered if registered else None,
            "downloads": sum(int(r["downloads"]) for r in data["content"]),
        },
        "content_chart": [(str(r["asset"]), int(r["downloads"])) for r in data["content"][:12]],
    }


@router.get("/kpis")
async def kpis_page(
    request: Request,
    user: KpisUser,
    role: Annotated[str, Query(max_length=20)] = "executive",
    start: Annotated[str, Query(alias="from", max_length=40)] = "",
    end: Annotated[str, Query(alias="to", max_length=40)] = "",
) -> HTMLResponse:
    services = services_of(request)
    t = translator_for(request, user)
    period, errors = await _period(request, start, end)
    if role not in reports.ROLES:
        errors.append(("kpis.error.role", {"value": role[:40]}))
        role = "executive"

    def load() -> dict[str, Any]:
        cache = cache_of(request)
        data = kpis_view(services, cache, period, role)
        model: LeadModel = data["model"]
        if role == "executive":
            view = _executive(data, forecast_view(services, cache), t)
        elif role == "department":
            view = _department(data, model, t)
        else:
            view = _campaign(data)
        return {
            "v": view,
            "model_version": model.version,
            "drill": kpi_drill(role, model, period, data.get("stages") or []),
        }

    data = await run_in_threadpool(load)
    data.update(
        {
            "role": role,
            "roles": reports.ROLES,
            "period": period,
            "period_to": period.end - timedelta(days=1),
            "errors": errors,
        }
    )
    return render(request, "kpis.html", data, status_code=400 if errors else 200, active="kpis")
