"""Deal-level figures from plain rows: totals, deals per stage, the deal funnel, the sales
cycle by segment and the currency rule, each checked against a hand computation over a
generated set of deals (and a few hand-made edge cases)."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.core import deals as dl

T0 = datetime(2025, 1, 1, tzinfo=UTC)
START, END = datetime(2025, 7, 1, tzinfo=UTC), datetime(2025, 10, 1, tzinfo=UTC)


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {**dl.DEAL_SCHEMA, "industry": pl.String}
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def _generate(n: int = 400, seed: int = 3) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        created = T0 + timedelta(days=rnd.uniform(0, 330))
        stage = rnd.choice(["open", "won", "lost", "lost"])
        closed = created + timedelta(days=rnd.uniform(1, 150)) if stage != "open" else None
        rows.append(
            {
                "id": i + 1,
                "amount": rnd.choice([None, 500.0, 1200.5, 9000.0, 25_000.0]),
                "currency": "EUR",
                "stage": stage,
                "created_at": created,
                "closed_at": closed,
                "lost_reason": rnd.choice(["price", "competitor", None])
                if stage == "lost"
                else None,
                "industry": rnd.choice(["saas", "retail", "health", None]),
            }
        )
    return rows


def _stage_at(row: dict[str, Any], t: datetime) -> str:
    if row["stage"] in ("won", "lost") and row["closed_at"] is not None and row["closed_at"] < t:
        return row["stage"]
    return "open"


def _p90(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else values[0]
    )


def test_totals_equal_the_rows():
    rows = _generate()
    got = dl.totals(_frame(rows), START, END)
    closed = [r for r in rows if r["closed_at"] is not None and START <= r["closed_at"] < END]
    won = [r for r in closed if r["stage"] == "won"]
    lost = [r for r in closed if r["stage"] == "lost"]
    still = [r for r in rows if r["created_at"] < END and _stage_at(r, END) == "open"]
    assert got["won_deals"] == len(won) and got["lost_deals"] == len(lost)
    assert got["won_amount"] == pytest.approx(sum(r["amount"] or 0 for r in won))
    assert got["win_rate"] == pytest.approx(len(won) / (len(won) + len(lost)))
    assert got["open_deals"] == len(still)
    assert got["open_amount"] == pytest.approx(sum(r["amount"] or 0 for r in still))


def test_deals_per_stage_reads_each_deal_as_of_the_time():
    rows = _generate()
    at = datetime(2025, 6, 1, tzinfo=UTC)
    got = {r["stage"]: r for r in dl.deals_per_stage(_frame(rows), at)}
    for stage in ("open", "won", "lost"):
        mine = [r for r in rows if r["created_at"] < at and _stage_at(r, at) == stage]
        assert got[stage]["deals"] == len(mine)
        assert got[stage]["amount"] == pytest.approx(sum(r["amount"] or 0 for r in mine))


def test_deal_funnel_balances_and_steps_equal_the_rows():
    rows = _generate()
    report = dl.deal_funnel(_frame(rows), START, END)
    stages = {r["stage"]: r for r in report["stages"]}
    for name, row in stages.items():
        assert row["balance_end"] == row["balance_start"] + row["flow_in"] - row["flow_out"]
        at_start = [r for r in rows if r["created_at"] < START and _stage_at(r, START) == name]
        at_end = [r for r in rows if r["created_at"] < END and _stage_at(r, END) == name]
        assert (row["balance_start"], row["balance_end"]) == (len(at_start), len(at_end))
        assert row["amount_end"] == pytest.approx(sum(r["amount"] or 0 for r in at_end))
    opened = [r for r in rows if START <= r["created_at"] < END]
    closed = [r for r in rows if r["closed_at"] is not None and START <= r["closed_at"] < END]
    assert stages["open"]["flow_in"] == len(opened)
    assert stages["open"]["amount_in"] == pytest.approx(sum(r["amount"] or 0 for r in opened))
    assert stages["open"]["flow_out"] == len(closed)
    assert stages["won"]["flow_in"] == stages["open"]["out_won"]
    assert stages["won"]["flow_in"] == sum(r["stage"] == "won" for r in closed)
    cohort_won = [r for r in opened if _stage_at(r, END) == "won"]
    assert stages["open"]["cvr"] == pytest.approx(len(cohort_won) / len(opened))
    days = [(r["closed_at"] - r["created_at"]).total_seconds() / 86400 for r in closed]
    assert stages["open"]["median_days_open"] == pytest.approx(statistics.median(days))
    assert stages["open"]["p90_days_open"] == pytest.approx(_p90(days))
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["opened"]["deals"] == len(opened)
    assert steps["won"]["deals"] == len(cohort_won)
    assert steps["won"]["amount"] == pytest.approx(sum(r["amount"] or 0 for r in cohort_won))
    assert steps["won"]["deals"] + steps["lost"]["deals"] + steps["open"]["deals"] == len(opened)
    assert steps["won"]["conversion"] == pytest.approx(len(cohort_won) / len(opened))


def test_cycle_by_segment_equals_the_rows():
    rows = _generate()
    as_of = datetime(2025, 11, 1, tzinfo=UTC)
    got = {r["segment"]: r for r in dl.cycle_by_segment(_frame(rows), as_of, "industry")}
    known = [r for r in rows if r["created_at"] < as_of]
    assert sum(r["deals"] for r in got.values()) == len(known)
    for value in ("saas", "retail", "health", None):
        mine = [r for r in known if r["industry"] == value]
        row = got[value if value is not None else dl.NONE]
        won = [r for r in mine if _stage_at(r, as_of) == "won"]
        lost = [r for r in mine if _stage_at(r, as_of) == "lost"]
        assert (row["deals"], row["won"], row["lost"]) == (len(mine), len(won), len(lost))
        assert row["open"] == len(mine) - len(won) - len(lost)
        assert row["win_rate"] == pytest.approx(len(won) / (len(won) + len(lost)))
        assert row["won_amount"] == pytest.approx(sum(r["amount"] or 0 for r in won))
        cycle = [(r["closed_at"] - r["created_at"]).total_seconds() / 86400 for r in won]
        assert row["won_median_days"] == pytest.approx(statistics.median(cycle))
        assert row["won_p90_days"] == pytest.approx(_p90(cycle))
        closed = cycle + [(r["closed_at"] - r["created_at"]).total_seconds() / 86400 for r in lost]
        assert row["closed_median_days"] == pytest.approx(statistics.median(closed))
        assert row["closed_p90_days"] == pytest.approx(_p90(closed))
    # Most deals first.
    counts = [r["deals"] for r in dl.cycle_by_segment(_frame(rows), as_of, "industry")]
    assert counts == sorted(counts, reverse=True)


def test_a_segment_without_closes_has_no_rate_and_no_cycle():
    rows = [
        {"id": 1, "amount": 10.0, "currency": "USD", "stage": "open", "created_at": T0},
        {
            "id": 2,
            "amount": 20.0,
            "currency": "USD",
            "stage": "won",
            "created_at": T0,
            "closed_at": T0 + timedelta(days=40),  # after as_of: still open then
            "industry": "x",
        },
    ]
    got = dl.cycle_by_segment(_frame(rows), T0 + timedelta(days=10), "industry")
    assert {r["segment"]: (r["open"], r["won"], r["win_rate"]) for r in got} == {
        dl.NONE: (1, 0, None),
        "x": (1, 0, None),
    }
    assert all(r["won_median_days"] is None and r["won_amount"] == 0 for r in got)


def test_lost_reasons_count_the_period_losses():
    rows = _generate()
    got = {r["reason"]: r["deals"] for r in dl.lost_reasons(_frame(rows), START, END)}
    lost = [
        r
        for r in rows
        if r["stage"] == "lost" and r["closed_at"] is not None and START <= r["closed_at"] < END
    ]
    for reason in ("price", "competitor", None):
        assert got.get(reason or dl.NONE, 0) == sum(r["lost_reason"] == reason for r in lost)


def test_amounts_are_never_summed_across_currencies():
    rows = [
        {"id": 1, "amount": 100.0, "currency": "USD", "stage": "won", "created_at": T0,
         "closed_at": T0 + timedelta(days=5)},
        {"id": 2, "amount": 1000.0, "currency": "EUR", "stage": "won", "created_at": T0,
         "closed_at": T0 + timedelta(days=6)},
        {"id": 3, "amount": 7.0, "currency": "EUR", "stage": "lost", "created_at": T0,
         "closed_at": T0 + timedelta(days=7)},
    ]  # fmt: skip
    frame = _frame(rows)
    mixed = dl.currency_scope(frame)
    assert (mixed.money, mixed.currency, mixed.currencies) == (False, None, ("EUR", "USD"))
    assert mixed.amount(1100.0) is None
    funnel = dl.deal_funnel(frame, T0, T0 + timedelta(days=30), money=mixed.money)
    assert funnel["stages"][1]["flow_in"] == 2 and funnel["stages"][1]["amount_in"] is None
    per = {r["currency"]: r for r in dl.money_by_currency(frame, T0, T0 + timedelta(days=30))}
    assert per["USD"]["won_amount"] == 100.0 and per["EUR"]["won_amount"] == 1000.0
    assert per["EUR"]["win_rate"] == pytest.approx(0.5)
    eur = dl.currency_scope(frame, "eur")
    assert eur.money and eur.currency == "EUR" and eur.deals.height == 2
    with pytest.raises(ValueError, match="deals are in: EUR, USD"):
        dl.currency_scope(frame, "JPY")
    single = dl.currency_scope(frame.filter(pl.col("currency") == "USD"))
    assert single.money and single.currency == "USD"
    assert dl.currency_scope(pl.DataFrame(schema=dl.DEAL_SCHEMA)).money


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 200),
            st.sampled_from(["open", "won", "lost"]),
            st.integers(0, 120),
            st.floats(0, 1e6),
        ),
        max_size=40,
    ),
    st.integers(0, 250),
    st.integers(1, 120),
)
def test_the_balance_identity_holds_for_any_deals(raw, start_day, length):
    rows = [
        {
            "id": i,
            "amount": amount,
            "currency": "USD",
            "stage": stage,
            "created_at": T0 + timedelta(days=opened),
            "closed_at": T0 + timedelta(days=opened + life) if stage != "open" else None,
        }
        for i, (opened, stage, life, amount) in enumerate(raw)
    ]
    start = T0 + timedelta(days=start_day)
    end = start + timedelta(days=length)
    report = dl.deal_funnel(_frame(rows), start, end)
    for row in report["stages"]:
        assert row["balance_end"] == row["balance_start"] + row["flow_in"] - row["flow_out"]
    ends = sum(r["balance_end"] for r in report["stages"])
    assert ends == sum(r["created_at"] < end for r in rows)
    totals = dl.totals(_frame(rows), start, end)
    assert totals["won_deals"] == report["stages"][1]["flow_in"]
    assert totals["open_deals"] == report["stages"][0]["balance_end"]
