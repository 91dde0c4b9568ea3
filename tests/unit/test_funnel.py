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


# ------------------------------------------------- fast path == the original implementation
# ``_reference_flow`` is the row-by-row Polars implementation that shipped before the
# integer-coded single-sort rewrite (issue 6), kept here verbatim as the oracle.


def _reference_kind(model: StageModel) -> pl.Expr:
    nxt = pl.col("prev_stage").replace_strict(
        dict(model.next_stage), default=None, return_dtype=pl.String
    )
    return (
        pl.when(pl.col("to_stage") == nxt)
        .then(pl.lit("out_next"))
        .when(pl.col("to_stage").is_in(list(model.recycle_stages)))
        .then(pl.lit("out_recycle"))
        .when(pl.col("to_stage").is_in(list(model.dead_end_stages)))
        .then(pl.lit("out_dead_end"))
        .otherwise(pl.lit("out_other"))
    )


def _reference_flow(history, model, start, end, as_of, attributes=None, by=None):
    from leadflow.core.funnel import _attach_slice, _prepare

    log = _attach_slice(_prepare(history, model, True), model, attributes, by)
    keys = [by] if by else []
    in_period = (pl.col("at") >= start) & (pl.col("at") < end)
    moves = log.filter(in_period)
    flow_in = moves.group_by(*keys, "to_stage").agg(flow_in=pl.len()).rename({"to_stage": "stage"})
    exits = moves.filter(pl.col("prev_stage").is_not_null()).with_columns(
        kind=_reference_kind(model)
    )
    out = (
        exits.group_by(*keys, "prev_stage", "kind")
        .agg(n=pl.len())
        .pivot(on="kind", index=[*keys, "prev_stage"], values="n")
        .rename({"prev_stage": "stage"})
    )
    days = (pl.col("at") - pl.col("prev_at")).dt.total_microseconds() / 86_400_000_000
    durations = (
        exits.group_by(*keys, "prev_stage")
        .agg(
            median_days_in_stage=days.median(),
            p90_days_in_stage=days.quantile(0.9, interpolation="linear"),
        )
        .rename({"prev_stage": "stage"})
    )

    def balance(t, name):
        current = (pl.col("at") < t) & (pl.col("next_at").is_null() | (pl.col("next_at") >= t))
        return (log.filter(current).group_by(*keys, "to_stage").agg(pl.len().alias(name))).rename(
            {"to_stage": "stage"}
        )

    nxt = pl.col("to_stage").replace_strict(
        dict(model.next_stage), default=None, return_dtype=pl.String
    )
    cohort = (
        moves.with_columns(moved_on=(pl.col("next_to") == nxt) & (pl.col("next_at") < as_of))
        .group_by(*keys, "to_stage")
        .agg(cohort_entered=pl.len(), cohort_to_next=pl.col("moved_on").fill_null(False).sum())
        .rename({"to_stage": "stage"})
    )
    stage_list = pl.DataFrame(
        {
            "stage_order": list(range(len(model.stages))),
            "stage": list(model.stages),
            "next_stage": [model.next_stage.get(s) for s in model.stages],
        },
        schema={"stage_order": pl.Int64, "stage": pl.String, "next_stage": pl.String},
    )
    if keys:
        values = log.select(pl.col(by).unique()).sort(by, nulls_last=True)
        grid = values.join(stage_list, how="cross")
    else:
        grid = stage_list
    table = grid
    for part in (
        balance(start, "balance_start"),
        flow_in,
        out,
        balance(end, "balance_end"),
        cohort,
        durations,
    ):
        table = table.join(part, on=[*keys, "stage"], how="left", nulls_equal=True)
    counts = ["out_next", "out_recycle", "out_dead_end", "out_other"]
    for name in counts:
        if name not in table.columns:
            table = table.with_columns(pl.lit(0).alias(name))
    int_cols = ["balance_start", "flow_in", *counts, "balance_end"]
    int_cols += ["cohort_entered", "cohort_to_next"]
    table = table.with_columns(pl.col(int_cols).fill_null(0).cast(pl.Int64)).with_columns(
        flow_out=pl.sum_horizontal(counts),
    )
    table = table.with_columns(
        cvr=pl.when((pl.col("cohort_entered") > 0) & pl.col("next_stage").is_not_null()).then(
            pl.col("cohort_to_next") / pl.col("cohort_entered")
        ),
        cvr_of_exits=pl.when((pl.col("flow_out") > 0) & pl.col("next_stage").is_not_null()).then(
            pl.col("out_next") / pl.col("flow_out")
        ),
    )
    table = table.sort(*keys, "stage_order", nulls_last=True).select(
        *keys,
        "stage",
        "next_stage",
        "balance_start",
        "flow_in",
        "flow_out",
        *counts,
        "balance_end",
        "cohort_entered",
        "cohort_to_next",
        "cvr",
        "cvr_of_exits",
        "median_days_in_stage",
        "p90_days_in_stage",
    )
    links = (
        moves.with_columns(source=pl.col("prev_stage").fill_null(NEW))
        .group_by(*keys, "source", pl.col("to_stage").alias("target"))
        .agg(value=pl.len())
    )
    return table, links


def _random_world(seed: int):
    """Random walks (ties in time, fastpass, moves back, recycle) and messy attributes."""
    import random

    rng = random.Random(seed)
    model = StageModel.default()
    stages = list(model.stages)
    walks = []
    for lead in rng.sample(range(1000), rng.randint(0, 40)):
        # whole days are frequent, so moves fall exactly on period and as_of boundaries
        t = JAN - timedelta(days=rng.randint(0, 60), hours=rng.choice([0, 0, 7]))
        prev, walk = None, []
        for _ in range(rng.randint(1, 7)):
            stage = rng.choice([s for s in stages if s != prev] if rng.random() < 0.4 else stages)
            if rng.random() < 0.5 and prev in model.next_stage:
                stage = model.next_stage[prev]
            t += timedelta(days=rng.choice([0, 0, 1, 3, 10, 40]), minutes=rng.choice([0, 0, 1]))
            walk.append((lead, prev if rng.random() < 0.7 else None, stage, t))
            prev = stage
        walks.append(walk)
    rows = []  # leads interleaved, each lead's own rows in order (ties keep input order)
    while walks:
        walk = rng.choice(walks)
        rows.append(walk.pop(0))
        if not walk:
            walks.remove(walk)
    leads = sorted({r[0] for r in rows})
    extra = rng.sample(range(1000, 1010), 3)  # attributes of leads with no stage change
    attr_ids = [lead for lead in leads if rng.random() < 0.8] + extra
    rng.shuffle(attr_ids)
    if attr_ids and rng.random() < 0.5:
        attr_ids.append(attr_ids[0])  # a duplicate row: the first one wins
    if rng.random() < 0.2:
        attr_ids.append(None)
    channels = ["email", "events", None, "social"]
    attributes = pl.DataFrame(
        {"lead_id": attr_ids, "channel": [rng.choice(channels) for _ in attr_ids]},
        schema={"lead_id": pl.Int64, "channel": pl.String},
    )
    if rng.random() < 0.3:  # the usual shape: one row per lead, ordered by lead
        attributes = attributes.unique("lead_id", keep="first", maintain_order=True)
        attributes = attributes.drop_nulls("lead_id").sort("lead_id")
    elif rng.random() < 0.1:
        attributes = attributes.with_columns(pl.col("lead_id").cast(pl.Int32))
    history = log(rows)
    if rng.random() < 0.3:  # already in log order, as SQL returns it
        history = history.sort("lead_id", "at", maintain_order=True)
    elif rng.random() < 0.3:  # ordered by lead but not by time
        history = history.drop("from_stage").sort(
            "lead_id", "at", descending=[False, True], maintain_order=True
        )
    if rng.random() < 0.2:  # naive timestamps are UTC
        history = history.with_columns(pl.col("at").dt.replace_time_zone(None))
    if rng.random() < 0.2:
        history = history.drop("from_stage", strict=False)
    return model, history, attributes, rng


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_fast_flow_equals_the_original_implementation(seed):
    from polars.testing import assert_frame_equal

    model, history, attributes, rng = _random_world(seed)
    times = history["at"].dt.replace_time_zone("UTC").to_list()  # boundaries on a move, often
    start = JAN + timedelta(days=rng.randint(-20, 20))
    start = rng.choice(times) if times and rng.random() < 0.5 else start
    end = start + timedelta(days=rng.choice([1, 15, 31, 90]))
    end = rng.choice([t for t in times if t > start] or [end]) if rng.random() < 0.5 else end
    as_of = rng.choice([None, end + timedelta(days=rng.randint(0, 40))])
    as_of = rng.choice([t for t in times if t >= end] or [as_of]) if rng.random() < 0.3 else as_of
    for by, attrs in ((None, None), ("channel", attributes), ("acquisition_month", None)):
        report = flow_and_balance(
            history, start=start, end=end, model=model, attributes=attrs, by=by, as_of=as_of
        )
        table, links = _reference_flow(
            history, model, start, end, as_of or end, attributes=attrs, by=by
        )
        assert_frame_equal(report.stages, table, check_exact=True)
        cols = links.columns
        assert_frame_equal(
            report.links.sort(cols, nulls_last=True), links.sort(cols, nulls_last=True)
        )
        keys = [by] if by else []
        assert report.links.equals(
            report.links.sort(*keys, "value", descending=True, nulls_last=True, maintain_order=True)
        )
