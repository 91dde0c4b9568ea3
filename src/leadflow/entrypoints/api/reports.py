"""``GET /api/reports/funnel|attribution|campaigns|kpis|pipeline``: the CLI's reports as JSON.

Query parameters are validated by FastAPI (422 naming the field); choices the service
refuses (an unknown stage, ``to`` not after ``from``) are 422 with the field named too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query

from leadflow.core.errors import InvalidInput
from leadflow.entrypoints.api.deps import EARLIEST_DAY, LATEST_DAY, ServicesDep
from leadflow.entrypoints.api.responses import (
    AttributionReport,
    CampaignsReport,
    FunnelReport,
    KpisReport,
    PipelineReport,
)
from leadflow.services import reports as svc

router = APIRouter(prefix="/reports", tags=["reports"])

Slice = Literal[
    "channel",
    "campaign",
    "industry",
    "account_tier",
    "employee_band",
    "acquisition_month",
    "model_version",
]
ModelName = Literal[
    "first_touch",
    "last_touch",
    "linear",
    "time_decay",
    "u_shaped",
    "w_shaped",
    "full_path",
    "markov",
    "shapley",
    "all",
]
# Report dates stay far from the calendar's ends: a report also reads the period before
# the one asked for (the funnel compares with it, the forecast backtests on past months).
EARLIEST, LATEST = EARLIEST_DAY, LATEST_DAY
_RANGE = f" From {EARLIEST} to {LATEST}."
FromQuery = Query(
    None, alias="from", description="Period start (UTC date); default to - 90 d." + _RANGE
)
ToQuery = Query(
    None, alias="to", description="Period end, exclusive (UTC date); default tomorrow." + _RANGE
)


def _in_range(field: str, day: date | None) -> None:
    if day is not None and not EARLIEST <= day <= LATEST:
        raise InvalidInput(f"{field}: {day} is not between {EARLIEST} and {LATEST}", field=field)


def _period(services: Any, start: date | None, end: date | None) -> svc.Period:
    _in_range("from", start)
    _in_range("to", end)
    now = services.clock()
    to = (
        datetime.combine(end, time(), UTC)
        if end
        else datetime.combine(now.date(), time(), UTC) + timedelta(days=1)
    )
    frm = datetime.combine(start, time(), UTC) if start else to - timedelta(days=90)
    if to <= frm:
        raise InvalidInput(f"to: {to.date()} must be after from ({frm.date()})", field="to")
    return svc.Period(frm, to)


def _store(services: Any) -> svc.Store:
    with services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
    return svc.load_store(services.engine, model)


def _run(field: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except svc.ReportError as exc:
        named = exc.field or field
        raise InvalidInput(f"{named}: {exc}", field=named) from None


CurrencyQuery = Query(
    None,
    pattern=r"^[A-Za-z]{3}$",
    description="Only the deals in this currency (ISO 4217). Amounts are never summed across "
    "currencies: without it, deals in several currencies give null amounts and figures per "
    "currency.",
)


@router.get("/funnel", operation_id="report_funnel", response_model=FunnelReport)
def funnel_report(
    services: ServicesDep,
    start: date | None = FromQuery,
    end: date | None = ToQuery,
    by: Slice | None = Query(None, description="Slice every figure by this lead attribute."),
    unit: Literal["lead", "deal"] = Query(
        "lead", description="Count leads through the lead stages, or deals (open -> won/lost)."
    ),
    currency: str | None = CurrencyQuery,
) -> dict[str, Any]:
    """Flow & balance per stage, Sankey links, bottleneck and velocity for the period; with
    ``unit=deal`` the deals per deal stage, the period's opened deals step by step with
    conversions and amounts, and the loss reasons."""
    period = _period(services, start, end)
    return _run("by", svc.funnel_report, _store(services), period, by, unit=unit, currency=currency)


@router.get("/attribution", operation_id="report_attribution", response_model=AttributionReport)
def attribution_report(
    services: ServicesDep,
    start: date | None = FromQuery,
    end: date | None = ToQuery,
    model: ModelName = Query("all"),
    level: Literal["lead", "account"] = Query("lead"),
    touch: Literal["channel", "campaign", "content"] = Query("channel"),
    order: int = Query(1, ge=1, le=3, description="Markov chain order."),
    to_stage: str | None = Query(
        None, max_length=64, description="The conversion stage (default: the won role's)."
    ),
    allocation: Literal["removal", "path"] = Query(
        "removal",
        description="Markov credits: removal (ChannelAttribution's) or path (per converted "
        "path, mam's).",
    ),
) -> dict[str, Any]:
    """Attribution of conversions into ``to_stage`` and their value, per model."""
    period = _period(services, start, end)
    return _run(
        "to_stage",
        svc.attribution_report,
        _store(services),
        period,
        model=model,
        level=level,
        touch=touch,
        order=order,
        to_stage=to_stage,
        allocation=allocation,
    )


@router.get("/campaigns", operation_id="report_campaigns", response_model=CampaignsReport)
def campaigns_report(
    services: ServicesDep,
    start: date | None = FromQuery,
    end: date | None = ToQuery,
) -> dict[str, Any]:
    """E-mail rates per campaign, form conversion, webinar attendance, content downloads."""
    period = _period(services, start, end)
    return svc.campaigns_report(_store(services), period)


@router.get("/kpis", operation_id="report_kpis", response_model=KpisReport)
def kpis_report(
    services: ServicesDep,
    role: Literal["executive", "department", "campaign"] = Query("executive"),
    start: date | None = FromQuery,
    end: date | None = ToQuery,
    currency: str | None = CurrencyQuery,
) -> dict[str, Any]:
    """The KPIs of one role."""
    period = _period(services, start, end)
    return _run("currency", svc.kpis, _store(services), period, role, currency)


@router.get("/pipeline", operation_id="report_pipeline", response_model=PipelineReport)
def pipeline_report(
    services: ServicesDep,
    as_of: date | None = Query(None, description="Forecast date (UTC); default today." + _RANGE),
    months: int = Query(6, ge=0, le=36, description="Past months to backtest the forecast on."),
    by: str | None = Query(
        None, min_length=1, max_length=64, description="Segment: " + svc.SEGMENT_HELP + "."
    ),
    currency: str | None = CurrencyQuery,
) -> dict[str, Any]:
    """Open pipeline by expected close month, weighted by win rates measured from the
    history, with the forecast's error on past months, the sales cycle, deals per stage,
    loss reasons, and with ``by`` deals, win rate, won amount and sales cycle per segment."""
    _in_range("as_of", as_of)
    at = datetime.combine(as_of, time(), UTC) if as_of else services.clock()
    with services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
    return _run(
        "months",
        svc.pipeline_report,
        services.engine,
        at,
        months,
        by=by,
        currency=currency,
        model=model,
    )
