"""Training sets from the store, on plain data: outcomes and labelling times, point-in-time
behaviour features (no look-ahead), seniority, time hold-out, PSI drift, and the
``predicted_at_least`` stage condition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources

import numpy as np
import polars as pl
import pytest
import yaml

from leadflow.core import lifecycle as lc
from leadflow.core.config import ModelConfigError, build_model
from leadflow.core.model import Event, LeadProfile
from leadflow.core.predictive_features import (
    FeatureSpec,
    behaviour_features,
    choose_event_names,
    drift,
    label_outcomes,
    psi,
    reference_of,
    time_holdout,
    title_seniority,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def _changes(rows: list[tuple[int, str, datetime, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"lead_id": pl.Int64, "to_stage": pl.Utf8, "at": TS, "rule": pl.Utf8},
        orient="row",
    )


def _labels(now: datetime = day(400)) -> pl.DataFrame:
    leads = pl.DataFrame(
        {"lead_id": [1, 2, 3, 4, 5, 6, 7], "acquired_at": [day(0)] * 6 + [day(380)]},
        schema={"lead_id": pl.Int64, "acquired_at": TS},
    )
    changes = _changes(
        [
            (1, "mql", day(10), "stages.mql"),
            (1, "appointment", day(12), "actions.accept"),
            (1, "opportunity", day(20), "actions.qualify"),  # positive at day 20
            (2, "dead_end", day(5), "actions.disqualify"),  # negative at day 5
            (2, "opportunity", day(50), "actions.qualify"),  # after the outcome: ignored
            (3, "mql", day(30), "stages.mql"),
            (3, "recycle_b", day(40), "actions.lose"),  # negative at day 40
            (4, "nurturing", day(3), "stages.nurturing"),  # no progress: negative at day 90
            (5, "won", day(100), "actions.win"),  # after the horizon: negative at day 90
            (6, "mql", day(95), "stages.mql"),
            (7, "nurturing", day(385), "stages.nurturing"),  # open: not labelled yet
        ]
    )
    return label_outcomes(
        leads,
        changes,
        target_stages=["opportunity", "won", "customer"],
        negative_stages=["dead_end"],
        handoff_stages=["mql", "appointment", "opportunity"],
        horizon_days=90,
        now=now,
    )


def test_outcomes_and_labelling_times_follow_the_first_known_outcome():
    labels = {r["lead_id"]: r for r in _labels().iter_rows(named=True)}
    assert set(labels) == {1, 2, 3, 4, 5, 6}
    assert (labels[1]["converted"], labels[1]["label_at"]) == (1, day(20))
    assert (labels[2]["converted"], labels[2]["label_at"]) == (0, day(5))
    assert (labels[3]["converted"], labels[3]["label_at"]) == (0, day(40))
    assert (labels[4]["converted"], labels[4]["label_at"]) == (0, day(90))
    assert (labels[5]["converted"], labels[5]["label_at"]) == (0, day(90))
    # The rule's hand-off counts only when it happened before the labelling time.
    assert labels[1]["rule_mql"] == "yes"
    assert labels[3]["rule_mql"] == "yes"
    assert labels[6]["rule_mql"] == "no"  # MQL at day 95, after its day-90 label
    assert labels[2]["rule_mql"] == "no"


def test_outcomes_not_yet_known_are_left_out():
    early = _labels(now=day(30))
    assert early["lead_id"].to_list() == [2, 1]  # sorted by labelling time
    with pytest.raises(ValueError, match="horizon_days"):
        label_outcomes(
            pl.DataFrame(schema={"lead_id": pl.Int64, "acquired_at": TS}),
            _changes([]),
            target_stages=["opportunity"],
            negative_stages=[],
            handoff_stages=[],
            horizon_days=0,
            now=T0,
        )


EVENT_SCHEMA = {
    "lead_id": pl.Int64,
    "type": pl.Utf8,
    "name": pl.Utf8,
    "occurred_at": TS,
    "path": pl.Utf8,
    "content": pl.Utf8,
}


def _events(rows: list[tuple[int, str, str | None, datetime, str | None, str | None]]):
    return pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row")


BASE = [
    (1, "page", None, day(-100), "/pricing", None),
    (1, "page", None, day(-20), "/product", None),
    (1, "page", None, day(-3), "/product", None),
    (1, "track", "email_open", day(-2), None, None),
    (1, "track", "email_click", day(-1), None, None),
    (1, "track", "content_download", day(-40), None, "wp-1"),
    (1, "track", "webinar_attended", day(-10), None, None),
    (1, "track", "form_submit", day(-10), None, None),
]
AS_OF = pl.DataFrame(
    {"lead_id": [1, 2], "as_of": [T0, T0]}, schema={"lead_id": pl.Int64, "as_of": TS}
)
SPEC = FeatureSpec()


def test_behaviour_aggregates_per_window():
    row = behaviour_features(_events(BASE), AS_OF, SPEC).row(0, named=True)
    assert row["events_7d"] == 3 and row["events_30d"] == 6 and row["events_90d"] == 7
    assert row["events_total"] == 8
    assert row["pages_7d"] == 1 and row["pages_30d"] == 2
    assert row["email_open_7d"] == 1 and row["email_click_7d"] == 1
    assert row["content_download_30d"] == 0 and row["content_download_90d"] == 1
    assert row["recency_days"] == pytest.approx(1.0)
    assert row["distinct_pages"] == 2 and row["distinct_content"] == 1
    assert row["attended_total"] == 1 and row["form_submits_total"] == 1
    other = behaviour_features(_events(BASE), AS_OF, SPEC).row(1, named=True)
    assert other["events_total"] == 0 and other["recency_days"] is None


def test_no_look_ahead_an_event_at_or_after_the_labelling_time_changes_nothing():
    before = behaviour_features(_events(BASE), AS_OF, SPEC)
    later = [
        (1, "track", "email_click", T0, None, None),  # at the labelling time itself
        (1, "track", "webinar_attended", day(0.5), None, None),
        (1, "page", None, day(3), "/pricing/enterprise", None),
        (1, "track", "content_download", day(7), None, "case-9"),
        (2, "track", "contact_request", day(1), None, None),
    ]
    after = behaviour_features(_events(BASE + later), AS_OF, SPEC)
    assert after.equals(before)
    # ...while the same event a second earlier does change the features.
    earlier = behaviour_features(
        _events([*BASE, (2, "track", "contact_request", day(-1 / 86400), None, None)]),
        AS_OF,
        SPEC,
    )
    assert not earlier.equals(before)
    assert earlier.row(1, named=True)["contact_request_7d"] == 1


def test_event_names_are_the_known_ones_plus_the_most_frequent():
    events = _events(
        [(1, "track", "demo_booked", T0, None, None)] * 3
        + [(1, "track", "rare_thing", T0, None, None)]
    )
    spec = choose_event_names(events, limit=12)
    assert spec.event_names[-1] == "demo_booked"
    assert "rare_thing" not in spec.event_names
    hostile = _events(
        [(1, "track", "Demo-Booked", T0, None, None)] * 2
        + [(1, "track", "demo booked", T0, None, None)]
        + [(1, "track", "'; DROP TABLE leads; --<script>", T0, None, None)]
    )
    spec = choose_event_names(hostile, limit=40)
    extra = spec.event_names[len(FeatureSpec().event_names) :]
    assert extra == ("Demo-Booked", "'; DROP TABLE leads; --<script>")
    row = behaviour_features(hostile, AS_OF, spec).row(0, named=True)
    assert row["demo_booked_7d"] == 0  # at as_of itself: not before it
    assert all(c.replace("_", "").isalnum() for c in row)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


def test_title_seniority_uses_the_first_matching_rule():
    rules = [("vp", ["vp", "vice president"]), ("c_level", ["ceo", "president"])]
    titles = pl.Series(["Vice President Sales", "CEO", "Engineer", None])
    assert title_seniority(titles, rules).to_list() == ["vp", "c_level", None, None]


def test_time_holdout_keeps_the_latest_rows_and_ties_together():
    frame = pl.DataFrame({"lead_id": list(range(10)), "t": [1, 2, 3, 4, 5, 6, 7, 8, 8, 9]})
    earlier, latest = time_holdout(frame, "t", 0.2)
    assert latest["t"].to_list() == [8, 8, 9]
    assert earlier["t"].max() < latest["t"].min()
    with pytest.raises(ValueError, match="holdout"):
        time_holdout(frame, "t", 1.5)


def test_psi_is_zero_for_the_same_distribution_and_flags_a_shift():
    rng = np.random.default_rng(0)
    train = pl.DataFrame(
        {"x": rng.normal(0, 1, 5000), "c": rng.choice(["a", "b", "c"], 5000, p=[0.6, 0.3, 0.1])}
    )
    reference = reference_of(train, ["x", "c"])
    same = drift(reference, train)
    assert all(r.psi < 1e-9 and not r.flagged for r in same)
    shifted = pl.DataFrame(
        {"x": rng.normal(1.0, 1, 5000), "c": rng.choice(["a", "b", "d"], 5000, p=[0.2, 0.3, 0.5])}
    )
    rows = {r.column: r for r in drift(reference, shifted)}
    assert rows["x"].flagged and rows["x"].psi > 0.2
    assert rows["c"].flagged
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0


def _model_with_predicted_mql():
    text = resources.files("leadflow").joinpath("default.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["stages"]["mql"]["enter_when"] = [
        {"event": {"type": "track", "name": "demo_booked"}, "profile": {"predicted_at_least": 0.6}}
    ]
    return data


def _stage_after_demo(predicted: float | None) -> str:
    model = build_model(_model_with_predicted_mql())
    events = [
        Event(
            message_id="m1",
            type="identify",
            occurred_at=T0,
            properties={"email": "kim@acme.co.kr", "consent": "granted"},
        ),
        Event(message_id="m2", type="track", name="demo_booked", occurred_at=day(1)),
    ]
    state = lc.replay(LeadProfile(id=1, predicted=predicted), events, model)
    return state.stage


def test_predicted_at_least_in_a_stage_rule():
    assert _stage_after_demo(0.7) == "mql"
    assert _stage_after_demo(0.6) == "mql"
    assert _stage_after_demo(0.59) == "acquired"
    assert _stage_after_demo(None) == "acquired"  # no prediction: does not match


def test_predicted_at_least_must_be_a_probability():
    data = _model_with_predicted_mql()
    data["stages"]["mql"]["enter_when"][0]["profile"]["predicted_at_least"] = 1.5
    with pytest.raises(ModelConfigError, match="predicted_at_least"):
        build_model(data)
