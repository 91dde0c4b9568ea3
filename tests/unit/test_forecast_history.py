"""The forecast on a generated two-year history of 5,000 deals at their true dates: the win
rates per age band, the weighted pipeline, every month of the backtest, the sales cycle and
the deals per stage equal what a plain loop over the rows computes."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from leadflow.core import deals as dl
from leadflow.core import forecast as fc

START = datetime(2024, 1, 1, tzinfo=UTC)
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
MONTHS = 18


def _history(n: int = 5_000, seed: int = 11) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        created = START + timedelta(days=rnd.uniform(0, 720))
        # Long deals win less often, as in real pipelines.
        life = rnd.expovariate(1 / 60)
        stage = rnd.choices(["won", "lost"], weights=[0.45 if life < 60 else 0.2, 0.55])[0]
        closed = created + timedelta(days=life)
        if closed >= AS_OF + timedelta(days=rnd.uniform(0, 200)):
            stage, closed = "open", None  # still open today (some closed after AS_OF later)
        rows.append(
            {
                "id": i,
                "amount": float(rnd.randrange(500, 50_000)),
                "stage": stage,
                "created_at": created,
                "closed_at": closed,
                "expected_close": (created + timedelta(days=rnd.randrange(10, 200))).date()
                if rnd.random() < 0.8
                else None,
            }
        )
    # A few deals closed after AS_OF: open as of AS_OF, won later.
    for row in rows[:40]:
        if row["stage"] == "open":
            row["stage"], row["closed_at"] = "won", AS_OF + timedelta(days=3)
    return rows


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{k: r[k] for k in fc.OPPORTUNITY_SCHEMA} for r in rows], schema=fc.OPPORTUNITY_SCHEMA
    )


def _life(r: dict[str, Any]) -> float:
    return (r["closed_at"] - r["created_at"]).total_seconds() / 86_400


def _closed_before(rows, t):
    return [r for r in rows if r["stage"] != "open" and r["closed_at"] < t]


def _rates(rows, t) -> list[float | None]:
    closed = _closed_before(rows, t)
    out: list[float | None] = []
    previous = None
    for lower in fc.AGE_BANDS:
        alive = [r for r in closed if _life(r) >= lower]
        won = sum(r["stage"] == "won" for r in alive)
        enough = len(alive) >= fc.MIN_CLOSED or (previous is None and alive)
        rate = won / len(alive) if enough else previous
        out.append(rate)
        previous = rate if rate is not None else previous
    return out


def _open_at(rows, t):
    return [
        r for r in rows if r["created_at"] < t and (r["closed_at"] is None or r["closed_at"] >= t)
    ]


def _weighted(rows, t, due_before: date | None = None) -> float:
    rates = _rates(rows, t)
    total = 0.0
    for r in _open_at(rows, t):
        if due_before is not None and (
            r["expected_close"] is None or r["expected_close"] >= due_before
        ):
            continue
        age = (t - r["created_at"]).total_seconds() / 86_400
        rate = [x for lower, x in zip(fc.AGE_BANDS, rates, strict=True) if age >= lower][-1]
        total += r["amount"] * (rate or 0.0)
    return total


@pytest.fixture(scope="module")
def history() -> tuple[list[dict[str, Any]], pl.DataFrame, dict[str, Any]]:
    rows = _history()
    frame = _frame(rows)
    return rows, frame, fc.forecast(frame, AS_OF, backtest_months=MONTHS)


def test_win_rates_are_measured_from_the_deals_closed_before_the_forecast(history):
    rows, _, report = history
    closed = _closed_before(rows, AS_OF)
    assert len(closed) > 3_000
    overall = report["win_rates"][0]
    assert overall["closed"] == len(closed)
    assert overall["won"] == sum(r["stage"] == "won" for r in closed)
    for got, want in zip(report["win_rates"], _rates(rows, AS_OF), strict=True):
        assert got["win_rate"] == pytest.approx(want)
    # Deals closed after the forecast date (won later) are not used, and were open then.
    assert overall["closed"] < sum(r["stage"] != "open" for r in rows)


def test_weighted_pipeline_is_the_measured_rates_times_the_open_amounts(history):
    rows, _, report = history
    still = _open_at(rows, AS_OF)
    assert report["open_deals"] == len(still)
    assert report["open_amount"] == pytest.approx(sum(r["amount"] for r in still))
    assert report["weighted_amount"] == pytest.approx(_weighted(rows, AS_OF))
    assert 0 < report["weighted_amount"] < report["open_amount"]


def test_every_backtest_month_is_the_forecast_made_then_against_what_closed(history):
    rows, _, report = history
    months = report["backtest"]["months"]
    assert len(months) == MONTHS
    errors = []
    for row in months:
        start = datetime.strptime(row["month"], "%Y-%m").replace(tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1)
        won = [r for r in rows if r["stage"] == "won" and start <= r["closed_at"] < end]
        assert row["actual"] == pytest.approx(sum(r["amount"] for r in won))
        assert row["forecast"] == pytest.approx(_weighted(rows, start, due_before=end.date()))
        if row["actual"] > 0:
            errors.append(abs(row["forecast"] - row["actual"]) / row["actual"])
    assert report["backtest"]["mape"] == pytest.approx(statistics.fmean(errors))


def test_sales_cycle_and_deals_per_stage_equal_the_rows(history):
    rows, frame, _ = history
    got = fc.sales_cycle(frame, AS_OF)
    closed = _closed_before(rows, AS_OF)
    for outcome in ("won", "lost"):
        days = [_life(r) for r in closed if r["stage"] == outcome]
        cycle = got["sales_cycle"][outcome]
        assert cycle["deals"] == len(days)
        assert cycle["mean_days"] == pytest.approx(statistics.fmean(days))
        assert cycle["median_days"] == pytest.approx(statistics.median(days))
        assert cycle["p90_days"] == pytest.approx(
            statistics.quantiles(days, n=10, method="inclusive")[8]
        )
    per_stage = {r["stage"]: r["deals"] for r in got["deals_per_stage"]}
    assert per_stage == {
        "open": len(_open_at(rows, AS_OF)),
        "won": sum(r["stage"] == "won" for r in closed),
        "lost": sum(r["stage"] == "lost" for r in closed),
    }
    # The executive totals read the same deals the same way.
    totals = dl.totals(frame, datetime(2025, 1, 1, tzinfo=UTC), AS_OF)
    assert totals["open_deals"] == per_stage["open"]


def test_rates_from_every_deal_weight_one_currency(history):
    rows, frame, _ = history
    half = frame.filter(pl.col("id") % 2 == 0)
    mine = [r for r in rows if r["id"] % 2 == 0]
    report = fc.forecast(half, AS_OF, backtest_months=0, rates_from=frame)
    assert [r["win_rate"] for r in report["win_rates"]] == pytest.approx(_rates(rows, AS_OF))
    rates = _rates(rows, AS_OF)
    expected = 0.0
    for r in _open_at(mine, AS_OF):
        age = (AS_OF - r["created_at"]).total_seconds() / 86_400
        expected += (
            r["amount"] * [x for lo, x in zip(fc.AGE_BANDS, rates, strict=True) if age >= lo][-1]
        )
    assert report["weighted_amount"] == pytest.approx(expected)
