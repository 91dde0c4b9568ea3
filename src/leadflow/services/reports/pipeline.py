"""Pipeline: open opportunities by expected close month, with the forecast."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from leadflow.core import forecast
from leadflow.services.reports.common import ReportError
from leadflow.services.reports.loading import load_opportunities

# --------------------------------------------------------------------------- pipeline


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
        **forecast.sales_cycle(frame, as_of),
        "addressable_market": market,
    }
