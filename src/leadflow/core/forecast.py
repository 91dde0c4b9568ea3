"""Pipeline and forecast: open opportunities by expected close month, weighted by win rates
measured from the history, with the forecast's own error on past months next to it.

Opportunities in leadflow are open, won or lost (no typed-in deal stages with guessed
probabilities). The stage an open deal is in is its **age band** (days since it was
opened): the win rate of a band is measured, as of the forecast time, from the deals that
closed before then and were still open at the band's lower age —
``P(win | still open at age a) = won / closed`` among closed deals that lived at least
``a`` days. A young deal carries the overall win rate; a deal open far longer than deals
usually take carries the (typically lower) rate of the deals that dragged on that long.

The backtest replays the method at the start of each past month with only what was
known then (deals opened before, deals closed before) and compares the forecast for that
month with the won amount that actually closed in it. One limit, stated in the report:
``expected_close`` is stored as it is now, not as it was then.

Pure: plain Polars frames in, plain dicts out; the caller passes ``as_of``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from leadflow.core import deals as deal_figures

# Lower bounds (days) of the age bands.
AGE_BANDS: tuple[int, ...] = (0, 30, 60, 90, 180)
# Closed deals a band needs before its own rate is used; below, the previous band's.
MIN_CLOSED = 5

OPPORTUNITY_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "amount": pl.Float64,
    "stage": pl.Utf8,
    "created_at": pl.Datetime("us", "UTC"),
    "closed_at": pl.Datetime("us", "UTC"),
    "expected_close": pl.Date,
}


def band_label(lower: int, bands: Sequence[int] = AGE_BANDS) -> str:
    i = list(bands).index(lower)
    return f"{lower}+ days" if i == len(bands) - 1 else f"{lower}-{bands[i + 1]} days"


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def _days(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_seconds() / 86_400.0


def win_rates(
    opportunities: pl.DataFrame, as_of: datetime, bands: Sequence[int] = AGE_BANDS
) -> list[dict[str, Any]]:
    """Win rate per age band from the deals closed before ``as_of``."""
    closed = opportunities.filter(
        pl.col("stage").is_in(["won", "lost"])
        & pl.col("closed_at").is_not_null()
        & (pl.col("closed_at") < as_of)
    ).with_columns(life=_days(pl.col("closed_at") - pl.col("created_at")))
    rows: list[dict[str, Any]] = []
    previous: float | None = None
    for lower in bands:
        alive = closed.filter(pl.col("life") >= lower)
        won = int(alive.filter(pl.col("stage") == "won").height)
        n = int(alive.height)
        measured = won / n if n else None
        if n >= MIN_CLOSED:
            rate, basis = measured, "measured"
        elif previous is not None:
            rate, basis = previous, "previous band (too few closed deals)"
        else:
            rate, basis = measured, "measured (few closed deals)" if n else "no closed deals"
        rows.append(
            {
                "band": band_label(lower, bands),
                "min_days": lower,
                "closed": n,
                "won": won,
                "win_rate": rate,
                "basis": basis,
            }
        )
        if rate is not None:
            previous = rate
    return rows


def sales_cycle(
    opportunities: pl.DataFrame, as_of: datetime, *, money: bool = True
) -> dict[str, Any]:
    """Days from a deal's open date to its close date, for the deals closed before
    ``as_of``: per outcome (won, lost) the count, mean, median and 90th percentile (linear
    interpolation, as numpy's default); and the deals per stage at ``as_of`` with their
    amounts (:func:`leadflow.core.deals.deals_per_stage`)."""
    closed = opportunities.filter(
        pl.col("stage").is_in(["won", "lost"])
        & pl.col("closed_at").is_not_null()
        & (pl.col("closed_at") < as_of)
    ).with_columns(days=_days(pl.col("closed_at") - pl.col("created_at")))
    cycle: dict[str, Any] = {}
    for outcome in ("won", "lost"):
        days = closed.filter(pl.col("stage") == outcome).select(
            deals=pl.len(),
            mean_days=pl.col("days").mean(),
            median_days=pl.col("days").median(),
            p90_days=pl.col("days").quantile(0.9, "linear"),
        )
        cycle[outcome] = days.to_dicts()[0]
    return {
        "sales_cycle": cycle,
        "deals_per_stage": deal_figures.deals_per_stage(opportunities, as_of, money=money),
    }


def _rate_expr(rates: list[dict[str, Any]]) -> pl.Expr:
    expr: pl.Expr = pl.lit(None, dtype=pl.Float64)
    for row in rates:  # later bands override earlier ones
        expr = (
            pl.when(pl.col("age") >= row["min_days"])
            .then(pl.lit(row["win_rate"], dtype=pl.Float64))
            .otherwise(expr)
        )
    return expr


def open_at(opportunities: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Deals open at ``as_of`` (opened before it and not closed before it)."""
    return opportunities.filter(
        (pl.col("created_at") < as_of)
        & (pl.col("closed_at").is_null() | (pl.col("closed_at") >= as_of))
    )


def weighted_pipeline(
    opportunities: pl.DataFrame,
    as_of: datetime,
    bands: Sequence[int] = AGE_BANDS,
    rates_from: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Open deals at ``as_of`` with their age, band win rate and weighted amount, and the
    rates used (measured from ``rates_from``, default the same deals)."""
    rates = win_rates(opportunities if rates_from is None else rates_from, as_of, bands)
    deals = open_at(opportunities, as_of).with_columns(
        age=_days(pl.lit(as_of) - pl.col("created_at")),
        amount=pl.col("amount").fill_null(0.0),
    )
    deals = deals.with_columns(win_rate=_rate_expr(rates))
    deals = deals.with_columns(weighted=pl.col("amount") * pl.col("win_rate").fill_null(0.0))
    return deals, rates


def _bucket(deals: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    this_month = _month_start(as_of.date())
    return deals.with_columns(
        month=pl.when(pl.col("expected_close").is_null())
        .then(pl.lit("unscheduled"))
        .when(pl.col("expected_close") < pl.lit(this_month))
        .then(pl.lit("overdue"))
        .otherwise(pl.col("expected_close").dt.strftime("%Y-%m"))
    )


def forecast(
    opportunities: pl.DataFrame,
    as_of: datetime,
    *,
    backtest_months: int = 6,
    bands: Sequence[int] = AGE_BANDS,
    rates_from: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """The pipeline report: open pipeline by expected close month (count, amount, weighted),
    the win rates used, and the forecast's error on the ``backtest_months`` past months.
    The win rates are measured from ``rates_from`` (default: the same deals), so a forecast
    of the deals of one currency can use the rates of every deal."""
    deals, rates = weighted_pipeline(opportunities, as_of, bands, rates_from)
    by_month = (
        _bucket(deals, as_of)
        .group_by("month")
        .agg(
            deals=pl.len(),
            amount=pl.col("amount").sum(),
            weighted=pl.col("weighted").sum(),
        )
        .sort("month")
    )
    return {
        "as_of": as_of.isoformat(),
        "open_deals": deals.height,
        "open_amount": float(deals["amount"].sum()) if deals.height else 0.0,
        "weighted_amount": float(deals["weighted"].sum()) if deals.height else 0.0,
        "by_month": [
            {**row, "amount": float(row["amount"]), "weighted": float(row["weighted"])}
            for row in by_month.to_dicts()
        ],
        "win_rates": rates,
        "backtest": backtest(opportunities, as_of, backtest_months, bands, rates_from),
        "definitions": {
            "win_rate": "won / closed among deals closed before the forecast time that were "
            "still open at the band's age (measured, not typed in)",
            "weighted": "amount x win rate of the deal's age band",
            "overdue": "open deals whose expected close month has passed",
            "backtest": "forecast made at the start of each past month with only what was "
            "known then (expected_close as stored now), against the won amount closed in "
            "that month; overdue deals at that time count toward that month",
        },
    }


def backtest(
    opportunities: pl.DataFrame,
    as_of: datetime,
    months: int,
    bands: Sequence[int] = AGE_BANDS,
    rates_from: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Forecast vs actual for each of the ``months`` whole months before ``as_of``: the
    forecast made at the month's start with only the deals opened and closed before it (win
    rates measured then, from ``rates_from`` or the same deals), against the amount of the
    deals won in the month at their true close dates."""
    current = _month_start(as_of.date())
    rows: list[dict[str, Any]] = []
    for k in range(months, 0, -1):
        start = _add_months(current, -k)
        end = _add_months(start, 1)
        at = datetime(start.year, start.month, 1, tzinfo=UTC)
        until = datetime(end.year, end.month, 1, tzinfo=UTC)
        deals, _ = weighted_pipeline(opportunities, at, bands, rates_from)
        due = deals.filter(
            pl.col("expected_close").is_not_null() & (pl.col("expected_close") < pl.lit(end))
        )
        predicted = float(due["weighted"].sum()) if due.height else 0.0
        won = opportunities.filter(
            (pl.col("stage") == "won")
            & pl.col("closed_at").is_not_null()
            & (pl.col("closed_at") >= at)
            & (pl.col("closed_at") < until)
        )
        actual = float(won["amount"].fill_null(0.0).sum()) if won.height else 0.0
        rows.append(
            {
                "month": start.strftime("%Y-%m"),
                "forecast": predicted,
                "actual": actual,
                "error": predicted - actual,
                "abs_pct_error": abs(predicted - actual) / actual if actual > 0 else None,
            }
        )
    scored = [r["abs_pct_error"] for r in rows if r["abs_pct_error"] is not None]
    return {
        "months": rows,
        "mape": sum(scored) / len(scored) if scored else None,
        "bias": sum(r["error"] for r in rows) / len(rows) if rows else None,
    }


def without_amounts(report: dict[str, Any]) -> dict[str, Any]:
    """The forecast with every amount set to ``None`` (deals in several currencies: their
    amounts are not summed; counts and win rates stay)."""
    out = dict(report)
    out["open_amount"] = out["weighted_amount"] = None
    out["by_month"] = [{**r, "amount": None, "weighted": None} for r in report["by_month"]]
    bt = dict(report["backtest"])
    bt["months"] = [
        {**r, "forecast": None, "actual": None, "error": None, "abs_pct_error": None}
        for r in bt["months"]
    ]
    bt["mape"] = bt["bias"] = None
    out["backtest"] = bt
    return out
