"""Pipeline: open opportunities by expected close month, with the forecast, the sales cycle
(overall and by segment), deals per stage and the loss reasons."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Engine

from leadflow.core import deals as deal_figures
from leadflow.core import forecast
from leadflow.core.config import LeadModel
from leadflow.services.reports.common import ReportError, scope
from leadflow.services.reports.loading import DEAL_SEGMENTS, load_opportunities
from leadflow.services.reports.store import employee_band

# A custom attribute name as the import keeps it (a JSON key; bound, never spliced).
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\- ]{0,63}$")
SEGMENT_HELP = (
    f"{'|'.join(DEAL_SEGMENTS)}, or the name of a custom lead/account attribute (deals "
    "grouped by the value of their contact's or account's attribute)"
)

# --------------------------------------------------------------------------- scope


def check_segment(by: str | None) -> None:
    """Refuse a ``--by`` that is neither a deal segment nor an attribute name."""
    if by is None or by in DEAL_SEGMENTS:
        return
    if not _ATTRIBUTE.match(by):
        raise ReportError(
            f"--by: {by[:80]!r} is not a segment ({', '.join(DEAL_SEGMENTS)}) nor an attribute "
            "name (letters, digits, _ . - and spaces, up to 64, starting with a letter or _)",
            field="by",
        )


def load_deals(
    engine: Engine, model: LeadModel | None = None, by: str | None = None
) -> pl.DataFrame:
    """The deals with their segment columns (``size`` from the model's company-size bands)
    and, for ``by`` naming a custom attribute, that attribute as ``attr``."""
    check_segment(by)
    custom = by if by is not None and by not in DEAL_SEGMENTS else None
    with engine.connect() as conn:
        frame = load_opportunities(conn, attribute=custom)
    if model is None:
        from leadflow.core.config import load_default_model

        model = load_default_model()
    frame = frame.with_columns(size=employee_band(model))
    if custom is not None and frame["attr"].drop_nulls().len() == 0 and frame.height:
        raise ReportError(
            f"--by: no deal's contact or account has an attribute {custom!r} (segments: "
            f"{', '.join(DEAL_SEGMENTS)}, or a custom attribute name)",
            field="by",
        )
    return frame


# --------------------------------------------------------------------------- pipeline


def pipeline_report(
    engine: Engine,
    as_of: datetime,
    months: int = 6,
    *,
    by: str | None = None,
    currency: str | None = None,
    model: LeadModel | None = None,
) -> dict[str, Any]:
    """Open pipeline by expected close month, weighted by measured win rates, with the
    forecast's error on the ``months`` past months (see :mod:`leadflow.core.forecast`),
    the sales cycle and deals per stage, the loss reasons, the ``addressable_market`` of
    target accounts (see :mod:`leadflow.services.targets`), and with ``by`` the deals,
    win rate, won amount and sales cycle (median, p90) per segment value.

    Amounts are never summed across currencies: with ``currency`` the report covers the
    deals in it; without, when the deals are in several currencies, counts and rates cover
    every deal, amounts are null and ``by_currency`` gives each currency's forecast."""
    if not 0 <= months <= 36:
        raise ReportError("must be between 0 and 36", field="months")
    from leadflow.services.targets import addressable_market

    frame = load_deals(engine, model, by)
    chosen = scope(frame, currency)
    with engine.connect() as conn:
        market = addressable_market(conn)
    picked = chosen.deals
    plan = forecast.forecast(picked, as_of, backtest_months=months)
    report: dict[str, Any] = {
        "report": "pipeline",
        **(plan if chosen.money else forecast.without_amounts(plan)),
        **forecast.sales_cycle(picked, as_of, money=chosen.money),
        **chosen.as_dict(),
        "lost_reasons": deal_figures.lost_reasons(
            picked, datetime.min.replace(tzinfo=as_of.tzinfo), as_of, money=chosen.money
        ),
        "addressable_market": market,
    }
    if not chosen.money:
        report["by_currency"] = [
            {
                "currency": code,
                **{
                    k: v
                    for k, v in forecast.forecast(
                        picked.filter(pl.col("currency") == code),
                        as_of,
                        backtest_months=months,
                        rates_from=picked,
                    ).items()
                    if k in ("open_deals", "open_amount", "weighted_amount", "by_month", "backtest")
                },
            }
            for code in chosen.currencies
        ]
    if by is not None:
        column = "attr" if by not in DEAL_SEGMENTS else by
        report["segment_by"] = by
        report["by_segment"] = deal_figures.cycle_by_segment(
            picked, as_of, column, money=chosen.money
        )
    report["definitions"] = {
        **report["definitions"],
        **deal_figures.DEFINITIONS,
        "by_segment": "per value of the segment (missing as (none)), the deals opened before "
        "as_of: open, won and lost by then, win rate, won amount, and the sales cycle "
        "(median and p90 days, open -> close) of the won deals and of every closed deal",
        "segments": "industry, country: the deal's account (else its contact's account, else "
        "the contact's attribute); size: the account's head count in the model's company-size "
        "bands; source: the contact's lead source; owner, currency, product: the deal's own",
    }
    return report
