"""Pipeline forecast: win rates by deal age measured from history, weighted pipeline by
expected close month, and the backtest against what actually closed (hand-computed)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from leadflow.core import forecast as fc

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _deals(rows: list[tuple]) -> pl.DataFrame:
    data = [
        {
            "id": i,
            "amount": amount,
            "stage": stage,
            "created_at": created,
            "closed_at": closed,
            "expected_close": expected,
        }
        for i, (amount, stage, created, closed, expected) in enumerate(rows, start=1)
    ]
    return pl.DataFrame(data, schema=fc.OPPORTUNITY_SCHEMA)


def _closed(n_won: int, n_lost: int, life_days: int) -> list[tuple]:
    rows = []
    for k in range(n_won + n_lost):
        created = T0 + timedelta(days=k)
        closed = created + timedelta(days=life_days)
        rows.append((100.0, "won" if k < n_won else "lost", created, closed, None))
    return rows


def test_win_rate_per_age_band_counts_only_deals_that_lived_that_long():
    # 6 short deals (10 days): 4 won; 6 long deals (100 days): 1 won.
    frame = _deals(_closed(4, 2, 10) + _closed(1, 5, 100))
    rates = {r["min_days"]: r for r in fc.win_rates(frame, datetime(2027, 1, 1, tzinfo=UTC))}
    assert rates[0]["closed"] == 12 and rates[0]["won"] == 5
    assert rates[0]["win_rate"] == pytest.approx(5 / 12)
    # Only the long deals were still open at 30, 60 and 90 days.
    for band in (30, 60, 90):
        assert (rates[band]["closed"], rates[band]["won"]) == (6, 1)
        assert rates[band]["win_rate"] == pytest.approx(1 / 6)
    # Nobody lived 180 days: the band borrows the previous band's rate and says so.
    assert rates[180]["closed"] == 0
    assert rates[180]["win_rate"] == pytest.approx(1 / 6)
    assert rates[180]["basis"].startswith("previous band")


def test_deals_closed_after_the_forecast_time_are_not_used():
    frame = _deals(_closed(6, 0, 10))
    as_of = T0 + timedelta(days=13)  # deals 0..2 closed (days 10, 11, 12); the rest later
    rates = fc.win_rates(frame, as_of)
    assert rates[0]["closed"] == 3


def test_weighted_pipeline_by_expected_close_month():
    history = _closed(3, 1, 10) + _closed(1, 4, 100)  # overall 4/9; 30+ days 1/5
    as_of = datetime(2027, 3, 15, tzinfo=UTC)
    open_deals = [
        (1000.0, "open", as_of - timedelta(days=5), None, date(2027, 3, 31)),
        (2000.0, "open", as_of - timedelta(days=45), None, date(2027, 4, 10)),
        (500.0, "open", as_of - timedelta(days=5), None, date(2027, 1, 20)),  # overdue
        (300.0, "open", as_of - timedelta(days=5), None, None),  # unscheduled
        (9999.0, "open", as_of + timedelta(days=1), None, date(2027, 3, 31)),  # not yet open
    ]
    report = fc.forecast(_deals(history + open_deals), as_of, backtest_months=0)
    months = {r["month"]: r for r in report["by_month"]}
    assert set(months) == {"2027-03", "2027-04", "overdue", "unscheduled"}
    assert months["2027-03"]["weighted"] == pytest.approx(1000 * 4 / 9)
    assert months["2027-04"]["weighted"] == pytest.approx(2000 * 1 / 5)
    assert months["overdue"]["amount"] == 500.0
    assert report["open_deals"] == 4
    assert report["open_amount"] == 3800.0
    assert report["weighted_amount"] == pytest.approx((1000 + 500 + 300) * 4 / 9 + 2000 / 5)


def test_backtest_compares_each_past_month_with_what_was_won_in_it():
    # Ten closed deals in 2026 (all 10-day, 5 won) give a 50% rate; two deals open on
    # 2027-02-01 expected in February: one was won in February, one is still open.
    deals = [
        *_closed(5, 5, 10),
        (
            400.0,
            "won",
            datetime(2027, 1, 20, tzinfo=UTC),
            datetime(2027, 2, 10, tzinfo=UTC),
            date(2027, 2, 15),
        ),
        (600.0, "open", datetime(2027, 1, 25, tzinfo=UTC), None, date(2027, 2, 20)),
    ]
    report = fc.forecast(_deals(deals), datetime(2027, 3, 5, tzinfo=UTC), backtest_months=2)
    months = {r["month"]: r for r in report["backtest"]["months"]}
    assert list(months) == ["2027-01", "2027-02"]
    feb = months["2027-02"]
    assert feb["forecast"] == pytest.approx((400 + 600) * 0.5)
    assert feb["actual"] == 400.0
    assert feb["error"] == pytest.approx(100.0)
    assert feb["abs_pct_error"] == pytest.approx(0.25)
    # January: nothing was expected or won; no percentage error exists.
    assert months["2027-01"]["forecast"] == 0.0 and months["2027-01"]["abs_pct_error"] is None
    assert report["backtest"]["mape"] == pytest.approx(0.25)


def test_empty_history_gives_an_empty_report():
    report = fc.forecast(_deals([]), T0, backtest_months=3)
    assert report["open_deals"] == 0 and report["by_month"] == []
    assert all(r["win_rate"] is None for r in report["win_rates"])
    assert [r["actual"] for r in report["backtest"]["months"]] == [0.0, 0.0, 0.0]
