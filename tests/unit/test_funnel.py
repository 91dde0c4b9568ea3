"""Flow and balance over the stage-change log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.core.funnel import (
    NEW,
    StageModel,
    cohorts,
    find_bottleneck,
    flow_and_balance,
    velocity,
)

JAN = datetime(2024, 1, 1, tzinfo=UTC)
FEB = datetime(2024, 2, 1, tzinfo=UTC)
MAR = datetime(2024, 3, 1, tzinfo=UTC)


def log(rows: list[tuple[int, str | None, str, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "lead_id": pl.Int64,
            "from_stage": pl.String,
            "to_stage": pl.String,
            "at": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )


def moves(lead: int, start: datetime, *stages: str, step: timedelta = timedelta(days=1)):
    """A lead walking through stages, one move per step."""
    rows, prev = [], None
    for i, stage in enumerate(stages):
        rows.append((lead, prev, stage, start + i * step))
        prev = stage
    return rows


def article_example() -> pl.DataFrame:
    rows = []
    for lead in range(10_000):
        entered = JAN + timedelta(minutes=4 * lead)  # all within January
        rows.append((lead, None, "acquired", entered))
        if lead < 7_000:
            rows.append((lead, "acquired", "nurturing", entered + timedelta(hours=6)))
        elif lead < 8_000:
            rows.append((lead, "acquired", "dead_end", entered + timedelta(hours=6)))
    return log(rows)


def test_article_worked_example_10000_acquired_7000_nurturing_1000_dead_end_2000_balance():
    report = flow_and_balance(article_example(), start=JAN, end=FEB)
    acquired = report.stage("acquired")
    assert acquired["flow_in"] == 10_000
    assert acquired["out_next"] == 7_000
    assert acquired["out_dead_end"] == 1_000
    assert acquired["flow_out"] == 8_000
    assert acquired["balance_start"] == 0
    assert acquired["balance_end"] == 2_000
    assert acquired["cvr"] == pytest.approx(0.70)
    assert acquired["median_days_in_stage"] == pytest.approx(0.25)
    assert report.stage("nurturing")["balance_end"] == 7_000
    assert report.stage("dead_end")["balance_end"] == 1_000
    assert report.sankey() == [
        (NEW, "acquired", 10_000),
        ("acquired", "nurturing", 7_000),
        ("acquired", "dead_end", 1_000),
    ]


def test_balance_moves_by_flow_and_later_exits_do_not_count_in_the_period():
    rows = moves(1, JAN + timedelta(days=20), "acquired", "nurturing", step=timedelta(days=15))
    report = flow_and_balance(log(rows), start=JAN, end=FEB)
    acquired = report.stage("acquired")
    # entered Jan 21, left Feb 5: in the balance at the end of January, not yet converted
    assert (acquired["flow_in"], acquired["flow_out"], acquired["balance_end"]) == (1, 0, 1)
    assert acquired["cvr"] == 0.0
    # observed until March, the same January cohort converted
    later = flow_and_balance(log(rows), start=JAN, end=FEB, as_of=MAR)
    assert later.stage("acquired")["cvr"] == 1.0
    feb = flow_and_balance(log(rows), start=FEB, end=MAR).stage("acquired")
    assert (feb["balance_start"], feb["out_next"], feb["balance_end"]) == (1, 1, 0)
    assert feb["median_days_in_stage"] == pytest.approx(15.0)
    assert feb["cvr"] is None  # nobody entered acquired in February


def test_recycle_flows_back_to_nurturing_and_its_cvr_is_visible():
    rows = []
    for lead in range(4):
        rows += moves(
            lead, JAN, "acquired", "nurturing", "mql", "appointment", "recycle_a", "nurturing"
        )[: 6 if lead < 3 else 5]
    report = flow_and_balance(log(rows), start=JAN, end=FEB)
    recycle = report.stage("recycle_a")
    assert recycle["next_stage"] == "nurturing"
    assert recycle["flow_in"] == 4
    assert recycle["out_next"] == 3
    assert recycle["cvr"] == pytest.approx(0.75)
    assert report.stage("appointment")["out_recycle"] == 4
    assert ("recycle_a", "nurturing", 3) in report.sankey()


def test_time_in_stage_median_and_p90_for_exits_in_the_period():
    rows = []
    for lead, days in enumerate([1, 2, 3, 4, 10]):
        rows += moves(lead, JAN, "acquired", "nurturing", step=timedelta(days=days))
    nurtured = flow_and_balance(log(rows), start=JAN, end=FEB).stage("acquired")
    assert nurtured["median_days_in_stage"] == pytest.approx(3.0)
    assert nurtured["p90_days_in_stage"] == pytest.approx(4 + 0.6 * 6)  # linear between 4 and 10


def test_fastpass_and_moves_back_count_as_other_exits():
    rows = [
        (1, None, "acquired", JAN),
        (1, "acquired", "appointment", JAN + timedelta(days=1)),
        (2, None, "mql", JAN),
        (2, "mql", "nurturing", JAN + timedelta(days=2)),
    ]
    report = flow_and_balance(log(rows), start=JAN, end=FEB)
    assert report.stage("acquired")["out_other"] == 1
    assert report.stage("mql")["out_other"] == 1
    assert report.stage("acquired")["cvr_of_exits"] == 0.0


def test_sliced_by_an_attribute_column():
    rows = (
        moves(1, JAN, "acquired", "nurturing")
        + moves(2, JAN, "acquired")
        + moves(3, JAN, "acquired", "dead_end")
    )
    attributes = pl.DataFrame({"lead_id": [1, 2, 3], "channel": ["email", "events", "email"]})
    report = flow_and_balance(log(rows), start=JAN, end=FEB, attributes=attributes, by="channel")
    email = report.stage("acquired", "email")
    events = report.stage("acquired", "events")
    assert (email["flow_in"], email["out_next"], email["out_dead_end"]) == (2, 1, 1)
    assert (events["flow_in"], events["balance_end"]) == (1, 1)
    assert report.sankey("email") == [
        (NEW, "acquired", 2),
        ("acquired", "dead_end", 1),
        ("acquired", "nurturing", 1),
    ]
    assert {r["channel"] for r in report.to_rows()} == {"email", "events"}


def test_slice_by_acquisition_month_is_derived_from_the_log_when_absent():
    rows = moves(1, JAN, "anonymous", "acquired") + moves(2, FEB, "acquired")
    report = flow_and_balance(log(rows), start=JAN, end=MAR, by="acquisition_month")
    assert report.stage("acquired", JAN.date())["flow_in"] == 1
    assert report.stage("acquired", FEB.date())["flow_in"] == 1


def test_rows_are_json_ready_and_carry_the_period():
    report = flow_and_balance(article_example(), start=JAN, end=FEB)
    rows = report.to_rows()
    json.dumps(rows)
    assert rows[0]["period_start"] == JAN.isoformat()
    assert "cvr" in report.definitions and "balance_end" in report.definitions


def test_from_stage_that_contradicts_the_log_is_rejected_with_the_lead():
    rows = [(7, None, "acquired", JAN), (7, "mql", "nurturing", JAN + timedelta(days=1))]
    with pytest.raises(ValueError, match="lead_id=7"):
        flow_and_balance(log(rows), start=JAN, end=FEB)


def test_unknown_stage_names_the_stage():
    with pytest.raises(ValueError, match="limbo"):
        flow_and_balance(log([(1, None, "limbo", JAN)]), start=JAN, end=FEB)


def test_stage_keys_are_data():
    model = StageModel(
        main_path=("lead", "mql", "sql", "won"),
        next_stage={"lead": "mql", "mql": "sql", "sql": "won", "lost": "lead"},
        recycle_stages=("lost",),
        won_stage="won",
        pipeline_stages=("lead", "mql", "sql"),
    )
    rows = moves(1, JAN, "lead", "mql", "sql", "lost", "lead")
    report = flow_and_balance(log(rows), start=JAN, end=FEB, model=model)
    assert report.stage("sql")["out_recycle"] == 1
    assert report.stage("lost")["cvr"] == 1.0
    with pytest.raises(ValueError, match="unknown stage"):
        StageModel(main_path=("a",), next_stage={"a": "b"})


def _period(lead0: int, start: datetime, n: int, to_mql: int, stay: int) -> list:
    """n leads enter nurturing; to_mql move on within the period, stay remain, rest recycle."""
    rows = []
    for i in range(n):
        lead = lead0 + i
        t = start + timedelta(hours=i)
        rows.append((lead, None, "nurturing", t))
        if i < to_mql:
            for day, (a, b) in enumerate(
                [("nurturing", "mql"), ("mql", "appointment"), ("appointment", "opportunity")]
            ):
                rows.append((lead, a, b, t + timedelta(days=2 + day)))
            rows.append((lead, "opportunity", "won", t + timedelta(days=5)))
        elif i >= to_mql + stay:
            rows.append((lead, "nurturing", "dead_end", t + timedelta(days=2)))
    return rows


def test_bottleneck_names_the_stage_whose_cvr_dropped_most_with_the_reason():
    rows = _period(0, JAN, 100, to_mql=60, stay=0) + _period(1000, FEB, 100, to_mql=30, stay=0)
    found = find_bottleneck(log(rows), start=FEB, end=FEB + timedelta(days=31))
    assert found.stage == "nurturing"
    assert found.kind == "cvr_drop"
    assert "60.0% to 30.0%" in found.reason and "mql" in found.reason
    assert found.impact_leads == pytest.approx(30.0)


def test_bottleneck_names_the_stage_whose_balance_grows_fastest():
    rows = _period(0, JAN, 100, to_mql=50, stay=0) + _period(1000, FEB, 100, to_mql=50, stay=45)
    rows += [(5000 + i, None, "appointment", FEB + timedelta(hours=i)) for i in range(10)]
    found = find_bottleneck(log(rows), start=FEB, end=FEB + timedelta(days=31))
    assert found.stage == "nurturing"
    assert found.kind == "balance_growth"
    assert "balance grew by 45" in found.reason
    assert found.candidates.height == 7


def test_no_bottleneck_when_nothing_piles_up_or_converts_worse():
    rows = _period(0, JAN, 50, to_mql=50, stay=0) + _period(1000, FEB, 50, to_mql=50, stay=0)
    found = find_bottleneck(log(rows), start=FEB, end=FEB + timedelta(days=31))
    assert (found.stage, found.kind) == (None, "none")


def test_velocity_is_median_days_from_acquisition_to_won():
    rows = []
    for lead, days in enumerate([10, 20, 40]):
        rows += moves(
            lead,
            JAN,
            "anonymous",
            "acquired",
            "mql",
            "opportunity",
            "won",
            step=timedelta(days=days / 3),
        )
    # acquired at day days/3, won at day 4*days/3 -> acquisition to won = days
    table = velocity(log(rows), start=JAN, end=datetime(2024, 6, 1, tzinfo=UTC))
    row = table.to_rows()[0]
    assert row["won"] == 3
    assert row["median_days"] == pytest.approx(20.0)
    assert "acquisition" in table.definitions


def test_cohorts_by_acquisition_month_count_leads_reaching_each_stage():
    rows = moves(1, JAN, "acquired", "nurturing", "mql") + moves(2, JAN, "acquired")
    rows += moves(3, FEB, "acquired", "nurturing")
    table = cohorts(log(rows), as_of=MAR)
    got = {
        (r["acquisition_month"], r["stage"]): (r["leads"], r["reached"]) for r in table.to_rows()
    }
    assert got[("2024-01-01", "nurturing")] == (2, 1)
    assert got[("2024-01-01", "mql")] == (2, 1)
    assert got[("2024-02-01", "nurturing")] == (1, 1)
    assert got[("2024-02-01", "mql")] == (1, 0)


STAGES = StageModel.default().stages


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(STAGES), st.integers(min_value=0, max_value=90)),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=15,
    )
)
def test_balance_end_is_balance_start_plus_flow_in_minus_flow_out(leads):
    rows = []
    for lead, steps in enumerate(leads):
        t, prev = JAN - timedelta(days=30), None
        for stage, gap in steps:
            t += timedelta(days=gap, hours=1)
            rows.append((lead, prev, stage, t))
            prev = stage
    report = flow_and_balance(log(rows), start=JAN, end=FEB)
    frame = report.stages
    assert (
        frame["balance_end"] == frame["balance_start"] + frame["flow_in"] - frame["flow_out"]
    ).all()
    first_moves = [JAN - timedelta(days=30) + timedelta(days=s[0][1], hours=1) for s in leads]
    assert frame["balance_end"].sum() == sum(1 for t in first_moves if t < FEB)
    links = sum(v for _, _, v in report.sankey())
    assert links == frame["flow_in"].sum()
