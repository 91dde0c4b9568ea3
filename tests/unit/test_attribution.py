"""Multi-touch attribution: hand-computed cases for every model and the sum invariant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.core import attribution as attr
from leadflow.core.attribution import (
    account_paths,
    attribute,
    attribute_all,
    group_paths,
    removal_effects,
    shapley,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def journeys(
    paths: list[tuple[list[str], bool, float]],
    *,
    lead_creation: int | None = None,
    opportunity_creation: int | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One touch a day per path; flags mark the touch at the given position in every path."""
    rows, conv = [], []
    for pid, (touches, converted, value) in enumerate(paths):
        for i, channel in enumerate(touches):
            rows.append(
                {
                    "path_id": pid,
                    "at": T0 + timedelta(days=i),
                    "channel": channel,
                    "person_id": f"p{i % 2}",
                    "is_lead_creation": i == lead_creation,
                    "is_opportunity_creation": i == opportunity_creation,
                }
            )
        conv.append({"path_id": pid, "converted": converted, "value": value})
    return pl.DataFrame(rows), pl.DataFrame(conv)


def credits(result: attr.Attribution) -> dict[str, tuple[float, float]]:
    return {r["touch"]: (r["conversions"], r["value"]) for r in result.to_rows()}


def assert_credits(
    result: attr.Attribution,
    value: dict[str, float],
    conversions: dict[str, float] | None = None,
) -> None:
    got = credits(result)
    for touch, expected in value.items():
        assert got[touch][1] == pytest.approx(expected, abs=1e-9), touch
    for touch, expected in (conversions or {}).items():
        assert got[touch][0] == pytest.approx(expected, abs=1e-9), touch


# --------------------------------------------------------------------------- heuristics

THREE = [(["A", "B", "C"], True, 100.0), (["B"], True, 50.0), (["A", "C"], False, 999.0)]


def test_first_touch_credits_the_opening_touch():
    tp, cv = journeys(THREE)
    assert_credits(
        attribute(tp, cv, model="first_touch"),
        {"A": 100, "B": 50, "C": 0},
        {"A": 1, "B": 1, "C": 0},
    )


def test_last_touch_credits_the_closing_touch():
    tp, cv = journeys(THREE)
    assert_credits(
        attribute(tp, cv, model="last_touch"), {"A": 0, "B": 50, "C": 100}, {"A": 0, "B": 1, "C": 1}
    )


def test_linear_splits_equally_per_touch_including_repeats():
    tp, cv = journeys([(["A", "B", "A", "C"], True, 100.0)])
    assert_credits(
        attribute(tp, cv, model="linear"),
        {"A": 50, "B": 25, "C": 25},
        {"A": 0.5, "B": 0.25, "C": 0.25},
    )


def test_time_decay_halves_weight_per_half_life_before_conversion():
    tp, cv = journeys([(["A", "X", "B"], True, 90.0)])  # days 0, 1, 2
    tp = tp.filter(pl.col("channel") != "X")  # A on day 0, B on day 2
    cv = cv.with_columns(at=pl.lit(T0 + timedelta(days=2)))
    got = credits(attribute(tp, cv, model="time_decay", half_life_days=2.0))
    # ages 2 and 0 days -> weights 0.5 and 1 -> 1/3 and 2/3
    assert got["A"][1] == pytest.approx(30.0)
    assert got["B"][1] == pytest.approx(60.0)


def test_time_decay_measures_age_from_conversion_time_when_given():
    tp, cv = journeys([(["A", "B"], True, 100.0)])
    late = cv.with_columns(at=pl.lit(T0 + timedelta(days=11)))
    # ages 11 and 10 with half-life 1 -> weights 2^-11, 2^-10 -> 1/3, 2/3 (same ratio)
    got = credits(attribute(tp, late, model="time_decay", half_life_days=1.0))
    assert got["A"][1] == pytest.approx(100 / 3)
    # a touch after the conversion time ages 0 (clipped), never more than full weight
    early = cv.with_columns(at=pl.lit(T0))
    got = credits(attribute(tp, early, model="time_decay", half_life_days=1.0))
    assert got["A"][1] == pytest.approx(50.0) and got["B"][1] == pytest.approx(50.0)


def test_u_shaped_gives_40_20_40_and_renormalises_short_paths():
    tp, cv = journeys(
        [
            (["A", "B", "C", "D"], True, 100.0),  # 40 / 10 / 10 / 40
            (["E", "F"], True, 100.0),  # 50 / 50
            (["G"], True, 100.0),  # 100
        ]
    )
    expected = {"A": 40, "B": 10, "C": 10, "D": 40, "E": 50, "F": 50, "G": 100}
    assert_credits(attribute(tp, cv, model="u_shaped"), expected, {"A": 0.4, "G": 1.0})


def test_w_shaped_gives_30_to_first_lead_and_opportunity_creation_and_10_to_the_rest():
    tp, cv = journeys(
        [(["A", "B", "C", "D", "E"], True, 1000.0)], lead_creation=1, opportunity_creation=3
    )
    expected = {"A": 300, "B": 300, "C": 50, "D": 300, "E": 50}
    assert_credits(attribute(tp, cv, model="w_shaped"), expected, {"A": 0.3, "C": 0.05})


def test_w_shaped_adds_coinciding_milestones_and_renormalises_missing_ones():
    # lead creation is the first touch (30+30), no opportunity creation, two rest touches
    tp, cv = journeys([(["A", "B", "C"], True, 70.0)], lead_creation=0)
    # weights 0.6, 0.05, 0.05 over 0.7
    assert_credits(attribute(tp, cv, model="w_shaped"), {"A": 60, "B": 5, "C": 5}, {"A": 6 / 7})


def test_full_path_gives_22_5_to_four_milestones_including_the_closing_touch():
    tp, cv = journeys(
        [(["A", "B", "C", "D", "E", "F"], True, 1000.0)],
        lead_creation=1,
        opportunity_creation=3,
    )
    expected = {"A": 225, "B": 225, "C": 50, "D": 225, "E": 50, "F": 225}
    assert_credits(attribute(tp, cv, model="full_path"), expected, {"F": 0.225, "E": 0.05})


def test_w_shaped_without_flag_columns_names_them():
    tp, cv = journeys(THREE)
    with pytest.raises(ValueError, match="is_lead_creation"):
        attribute(tp.drop("is_lead_creation", "is_opportunity_creation"), cv, model="w_shaped")


def test_heuristic_credit_is_also_summed_per_person():
    tp, cv = journeys([(["A", "B", "C"], True, 90.0)])  # persons p0, p1, p0
    result = attribute(tp, cv, model="linear")
    per_person = dict(result.per_person.select("person_id", "value").iter_rows())
    assert per_person == pytest.approx({"p0": 60.0, "p1": 30.0})
    assert result.top_person() == "p0"


def test_every_credit_row_names_model_touch_key_and_value():
    tp, cv = journeys(THREE)
    for result in attribute_all(tp, cv):
        for row in result.to_rows():
            assert row["model"] == result.model
            assert row["touch_key"] == "channel"
            assert {"touch", "conversions", "value"} <= set(row)


def test_touch_key_can_be_any_column():
    tp, cv = journeys(THREE)
    result = attribute(tp, cv, model="first_touch", touch_key="person_id")
    assert credits(result)["p0"] == (2.0, 150.0)
    assert result.touch_key == "person_id"


# --------------------------------------------------------------------------- Markov

TEXTBOOK = [
    (["C1", "C2", "C3"], True, 100.0),
    (["C1"], False, 0.0),
    (["C2", "C3"], False, 0.0),
]


def test_markov_textbook_removal_effects_by_hand():
    # start->C1 2/3, start->C2 1/3; C1->C2 1/2, C1->null 1/2; C2->C3 1;
    # C3->conv 1/2, C3->null 1/2.  P = 2/3*1/2*1/2 + 1/3*1/2 = 1/3.
    # without C1: 1/3*1/2 = 1/6 -> RE 1/2; without C2 or C3: 0 -> RE 1.
    tp, cv = journeys(TEXTBOOK)
    re = removal_effects(group_paths(tp, cv), order=1)
    assert re.conversion_probability == pytest.approx(1 / 3)
    assert dict(zip(re.touches, re.removal_conversions, strict=True)) == pytest.approx(
        {"C1": 0.5, "C2": 1.0, "C3": 1.0}
    )
    # credits: RE / sum(RE) = 0.2, 0.4, 0.4 of one conversion worth 100
    result = attribute(tp, cv, model="markov")
    assert_credits(result, {"C1": 20, "C2": 40, "C3": 40}, {"C1": 0.2, "C2": 0.4})
    assert result.model == "markov_order_1"


def test_markov_higher_order_remembers_the_sequence():
    # A>B converts, B>A does not.
    # order 1: x_A = x_B/2, x_B = 1/2 + x_A/2 -> x_B = 2/3; P = 1/2;
    #   without A: 1/2*1/2 = 1/4 -> RE 1/2; without B: 0 -> RE 1 -> credit 1/3, 2/3
    # order 2: states (A),(A,B),(B),(B,A): P = 1/2 and removing either kills it -> 1/2, 1/2
    tp, cv = journeys([(["A", "B"], True, 30.0), (["B", "A"], False, 0.0)])
    assert_credits(
        attribute(tp, cv, model="markov", order=1), {"A": 10, "B": 20}, {"A": 1 / 3, "B": 2 / 3}
    )
    for order in (2, 3):
        result = attribute(tp, cv, model="markov", order=order)
        assert_credits(result, {"A": 15, "B": 15}, {"A": 0.5, "B": 0.5})
        assert result.model == f"markov_order_{order}"


def test_markov_value_removal_effect_weighs_conversions_by_value():
    # A converts for 10, B converts for 90, A>B never converts (null).
    tp, cv = journeys([(["A"], True, 10.0), (["B"], True, 90.0), (["A", "B"], False, 0.0)])
    re = removal_effects(group_paths(tp, cv))
    # start->A 2/3, start->B 1/3; A->conv 1/2 (value 10), A->B 1/2; B->conv 1/2 (90), B->null 1/2
    # V = 2/3*(1/2*10 + 1/2*1/2*90) + 1/3*1/2*90 = 2/3*27.5 + 15 = 33.33
    assert re.expected_value == pytest.approx(2 / 3 * 27.5 + 15)
    # without A: V = 15 -> RE 0.55; without B: 2/3*5 -> RE 0.9
    v = 2 / 3 * 27.5 + 15
    got = dict(zip(re.touches, re.removal_value, strict=True))
    assert got == pytest.approx({"A": 1 - 15 / v, "B": 1 - (2 / 3 * 5) / v})


def test_markov_sparse_solver_matches_dense_fundamental_matrix(monkeypatch):
    tp, cv = journeys(
        [
            (["A", "B", "C"], True, 10.0),
            (["B", "A"], True, 20.0),
            (["C", "C", "A"], False, 0.0),
            (["A"], False, 0.0),
            (["B", "C"], True, 5.0),
        ]
    )
    paths = group_paths(tp, cv)
    for order in (1, 2, 3):
        dense = removal_effects(paths, order)
        monkeypatch.setattr(attr, "DENSE_STATE_LIMIT", 0)
        sparse = removal_effects(paths, order)
        monkeypatch.undo()
        assert sparse.removal_conversions == pytest.approx(dense.removal_conversions, rel=1e-10)
        assert sparse.removal_value == pytest.approx(dense.removal_value, rel=1e-10)


def test_markov_per_touch_allocation_splits_each_path_by_removal_effect():
    tp, cv = journeys(TEXTBOOK)
    # only C1>C2>C3 converted: weights 0.5, 1, 1 -> 20, 40, 40 as well
    result = attribute(tp, cv, model="markov", allocation="per_touch")
    assert_credits(result, {"C1": 20, "C2": 40, "C3": 40}, {"C1": 0.2, "C2": 0.4})
    assert dict(result.per_person.select("person_id", "value").iter_rows()) == pytest.approx(
        {"p0": 60.0, "p1": 40.0}
    )


def test_grouped_paths_count_identical_journeys_once():
    tp, cv = journeys([(["A", "B"], True, 1.0), (["A", "B"], False, 0.0), (["B"], True, 2.0)])
    frame = group_paths(tp, cv).to_frame().sort("path")
    assert frame.rows() == [("A > B", 1.0, 1.0, 1.0), ("B", 1.0, 2.0, 0.0)]


# --------------------------------------------------------------------------- Shapley

SHAPLEY = [(["A"], True, 10.0), (["A", "B"], True, 20.0), (["B"], False, 0.0)]


def test_shapley_conversions_by_hand_and_by_coalitions():
    # v({A}) = 1, v({B}) = 0, v({A,B}) = 2 -> A = (1 + 2)/2 = 1.5, B = 0.5
    tp, cv = journeys(SHAPLEY)
    for method in ("auto", "coalitions"):
        result = shapley(group_paths(tp, cv), method=method)
        got = credits(result)
        assert got["A"] == pytest.approx((1.5, 20.0))
        assert got["B"] == pytest.approx((0.5, 10.0))
    assert shapley(group_paths(tp, cv)).parameters["method"] == "closed_form"


def test_shapley_conversion_rate_by_hand_scaled_to_total():
    # rates: {A}: 1/1, {B}: 0/1, {A,B}: 2/3 -> A = (1 + 2/3)/2 = 5/6, B = (0 - 1/3)/2 = -1/6
    # scaled so the two add up to the 2 conversions: A = 2.5, B = -0.5
    tp, cv = journeys(SHAPLEY)
    got = credits(shapley(group_paths(tp, cv), characteristic="conversion_rate"))
    assert got["A"][0] == pytest.approx(2.5)
    assert got["B"][0] == pytest.approx(-0.5)


def test_shapley_coalitions_equal_closed_form_on_many_players():
    paths = [
        (["A", "B", "C"], True, 3.0),
        (["D", "E"], True, 5.0),
        (["A", "F", "G", "H"], True, 7.0),
        (["I", "J", "K", "A"], False, 0.0),
        (["L", "B"], True, 11.0),
    ]
    tp, cv = journeys(paths)
    ps = group_paths(tp, cv)
    closed = shapley(ps).credits.sort("touch")
    enumerated = shapley(ps, method="coalitions").credits.sort("touch")
    assert enumerated["value"].to_list() == pytest.approx(closed["value"].to_list())


def test_shapley_sampling_approximates_exact_rate_game():
    tp, cv = journeys(
        [
            (["A", "B"], True, 4.0),
            (["B"], False, 0.0),
            (["A", "C"], True, 2.0),
            (["C"], False, 0.0),
            (["C", "B", "A"], True, 1.0),
        ]
    )
    ps = group_paths(tp, cv)
    exact = shapley(ps, characteristic="conversion_rate").credits.sort("touch")
    sampled = shapley(
        ps, characteristic="conversion_rate", max_exact_players=1, n_permutations=4000, seed=3
    )
    assert sampled.parameters["method"] == "sampled_permutations"
    got = sampled.credits.sort("touch")
    assert got["conversions"].to_list() == pytest.approx(exact["conversions"].to_list(), abs=0.05)


# --------------------------------------------------------------------------- account level


def test_account_path_credits_committee_touches_before_opportunity_and_names_top_person():
    touches = pl.DataFrame(
        {
            "account_id": [1, 1, 1, 1, 2, 2],
            "person_id": ["cfo", "it", "it", "cfo", "ops", "ops"],
            "at": [T0 + timedelta(days=d) for d in (0, 1, 2, 30, 0, 1)],
            "channel": ["webinar", "email", "whitepaper", "events", "email", "email"],
        }
    )
    opportunities = pl.DataFrame(
        {
            "opportunity_id": [100, 200],
            "account_id": [1, 2],
            "created_at": [T0 + timedelta(days=10), T0 + timedelta(days=5)],
            "amount": [90_000.0, 50_000.0],
            "won": [True, False],
        }
    )
    tp, cv = account_paths(touches, opportunities)
    assert tp.filter(pl.col("path_id") == 100).height == 3  # the day-30 touch came after
    result = attribute(tp, cv, model="linear")
    third = {"webinar": 1 / 3, "email": 1 / 3, "whitepaper": 1 / 3}
    assert_credits(result, {"webinar": 30_000.0, "email": 30_000.0, "whitepaper": 30_000.0}, third)
    assert "events" not in credits(result)
    assert result.top_person() == "it"
    assert result.total_value == 90_000.0


# --------------------------------------------------------------------------- invariant

channel = st.sampled_from(["A", "B", "C", "D"])
path = st.tuples(
    st.lists(channel, min_size=1, max_size=5),
    st.booleans(),
    st.floats(min_value=0.0, max_value=1000.0),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(path, min_size=1, max_size=12), st.integers(0, 4), st.integers(0, 4))
def test_every_model_credits_exactly_the_converted_value(paths, lc, oc):
    tp, cv = journeys(paths, lead_creation=lc, opportunity_creation=oc)
    total_value = sum(v for _, c, v in paths if c)
    total_conv = sum(1 for _, c, _ in paths if c)
    for result in attribute_all(tp, cv):
        frame = result.credits
        assert frame["value"].sum() == pytest.approx(total_value, abs=1e-6), result.model
        assert frame["conversions"].sum() == pytest.approx(total_conv, abs=1e-9), result.model
        if result.per_person is not None:
            assert result.per_person["value"].sum() == pytest.approx(total_value, abs=1e-6)


# --------------------------------------------------------------------------- at scale (issue 14)


def _random_journeys(rng: np.random.Generator, n_paths: int, n_channels: int):
    rows = []
    for _ in range(n_paths):
        seq = [f"c{int(c)}" for c in rng.integers(0, n_channels, int(rng.integers(1, 6)))]
        did = bool(rng.random() < 0.1 + 0.1 * len(set(seq)))
        rows.append((seq, did, float(rng.integers(1, 100)) if did else 0.0))
    return journeys(rows)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_channels=st.integers(2, 7), order=st.integers(1, 3))
def test_markov_sparse_iteration_equals_the_dense_inverse(seed, n_channels, order):
    tp, cv = _random_journeys(np.random.default_rng(seed), 60, n_channels)
    paths = group_paths(tp, cv)
    dense = removal_effects(paths, order, solver="dense")
    it = removal_effects(paths, order, solver="iterative")
    assert it.conversion_probability == pytest.approx(dense.conversion_probability, abs=1e-11)
    assert it.removal_conversions == pytest.approx(dense.removal_conversions, abs=1e-10)
    assert it.removal_value == pytest.approx(dense.removal_value, abs=1e-10)


def test_markov_order_3_at_many_channels_runs_sparse_and_agrees_with_lu():
    # 40 channels, order 3: thousands of states (above the dense limit is forced here)
    tp, cv = _random_journeys(np.random.default_rng(3), 400, 40)
    paths = group_paths(tp, cv)
    it = removal_effects(paths, 3, solver="iterative")
    lu = removal_effects(paths, 3, solver="lu")
    assert it.n_states > 500
    assert it.removal_conversions == pytest.approx(lu.removal_conversions, abs=1e-10)
    assert it.removal_value == pytest.approx(lu.removal_value, abs=1e-10)


def test_markov_unknown_solver_is_refused():
    tp, cv = journeys(TEXTBOOK)
    with pytest.raises(ValueError, match="solver"):
        removal_effects(group_paths(tp, cv), 1, solver="magic")


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n_channels=st.integers(3, 7))
def test_sampled_shapley_agrees_with_exact_within_its_stated_error(seed, n_channels):
    """The permutation estimator's mean is unbiased; its stated standard error (from the
    samples) must cover the exact value: |estimate - exact| <= 5 SE (+ float slack)."""
    tp, cv = _random_journeys(np.random.default_rng(seed), 80, n_channels)
    paths = group_paths(tp, cv)
    exact = shapley(paths, characteristic="conversion_rate", method="coalitions")
    est = shapley(
        paths, characteristic="conversion_rate", method="sampled", n_permutations=400, seed=seed
    )
    assert est.parameters["method"] == "sampled_permutations"
    ex = dict(exact.credits.select("touch", "conversions").iter_rows())
    got = dict(est.credits.select("touch", "conversions").iter_rows())
    se = dict(est.details.select("touch", "std_error_conversions").iter_rows())
    assert est.parameters["max_std_error_conversions"] == pytest.approx(max(se.values()))
    for touch, value in ex.items():
        assert abs(got[touch] - value) <= 5 * se[touch] + 1e-9, (touch, value, got[touch])
    # exact methods state no sampling error
    assert exact.parameters["max_std_error_conversions"] == 0.0


def test_sampled_shapley_is_used_above_the_exact_size_and_states_its_error():
    tp, cv = _random_journeys(np.random.default_rng(5), 300, 20)
    paths = group_paths(tp, cv)
    res = shapley(paths, characteristic="conversion_rate", n_permutations=200)
    assert res.parameters["players"] == 20 > 15
    assert res.parameters["method"] == "sampled_permutations"
    assert res.parameters["max_std_error_conversions"] > 0
    assert res.credits["conversions"].sum() == pytest.approx(res.total_conversions)
    # the conversions game has an exact closed form at any size: no error to state
    closed = shapley(paths)
    assert closed.parameters["method"] == "closed_form"
    assert closed.parameters["max_std_error_conversions"] == 0.0


def test_attribute_models_equals_one_call_per_model():
    tp, cv = _random_journeys(np.random.default_rng(11), 120, 6)
    tp = tp.with_columns(is_lead_creation=False, is_opportunity_creation=False)
    runs = [("linear", 1), ("markov", 1), ("markov", 2), ("markov", 3), ("shapley", 1)]
    together = attr.attribute_models(tp, cv, runs, allocation="per_touch")
    for (model, order), got in zip(runs, together, strict=True):
        alone = attribute(tp, cv, model=model, order=order, allocation="per_touch")
        assert got.model == alone.model
        assert got.credits.equals(alone.credits)
    markov_3 = together[3]
    assert markov_3.parameters["solver"] == "iterative"
    assert "sparse sweeps" in markov_3.definition
    assert together[1].parameters["solver"] == "dense"
