"""Predictive scoring core: cleaning, leakage guard, calibration, explanations, artefact."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from leadflow.core.predictive import (
    PredictiveError,
    TrainedModel,
    compare_with_rule,
    contributions,
    deciles,
    encode,
    expected_calibration_error,
    guard_leakage,
    infer_schema,
    parse_outcome,
    post_outcome_reason,
    train,
)


def _synthetic(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Rows whose conversion probability is known exactly (non-linear in one column)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.uniform(-2, 2, size=n)
    segment = rng.choice(["smb", "mid", "enterprise"], size=n)
    logit = -1.0 + 1.2 * a + 0.8 * np.abs(b) - 0.6 * b + (segment == "enterprise") * 0.9
    truth = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < truth).astype(int)
    frame = pl.DataFrame({"a": a, "b": b, "segment": segment, "won": y})
    return frame, truth


def test_calibrated_probabilities_match_known_probabilities():
    frame, _ = _synthetic(4000, seed=1)
    model = train(frame, "won")
    evaluation = model.report.evaluation
    assert evaluation.ece < 0.03
    assert evaluation.roc_auc > 0.75
    fresh, truth = _synthetic(3000, seed=2)
    probability = model.predict(encode(fresh, model.schema))
    assert np.mean(np.abs(probability - truth)) < 0.05
    # calibration in the large: the mean prediction is the observed rate within noise
    assert abs(probability.mean() - truth.mean()) < 0.02


def test_expected_calibration_error_of_known_predictions():
    y = np.array([1, 0] * 500)
    assert expected_calibration_error(y, np.full(1000, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(1000, 0.8)) == pytest.approx(0.3)
    # two bins, each off by 0.1 in opposite directions
    p = np.r_[np.full(500, 0.15), np.full(500, 0.85)]
    y2 = np.r_[np.zeros(450), np.ones(50), np.ones(450), np.zeros(50)]
    assert expected_calibration_error(y2, p) == pytest.approx(0.05)


def test_leakage_guard_flags_a_copy_of_the_target_and_post_outcome_names():
    rng = np.random.default_rng(3)
    n = 600
    y = (rng.random(n) < 0.3).astype(int)
    frame = pl.DataFrame(
        {
            "flag": np.where(y == 1, "Y", "N"),
            "call_duration": rng.integers(0, 900, n).astype(str),
            "poutcome": rng.choice(["success", "failure", "nonexistent"], n),
            "visits": rng.poisson(3, n).astype(str),
        }
    )
    schema = infer_schema(frame, frame.columns)
    findings = {f.column: f for f in guard_leakage(encode(frame, schema), y, schema, target="y")}
    assert set(findings) == {"flag", "call_duration"}
    assert findings["flag"].single_column_auc == pytest.approx(1.0)
    assert any("alone predicts" in r for r in findings["flag"].reasons)
    assert any("after the outcome" in r for r in findings["call_duration"].reasons)
    assert all(f.excluded for f in findings.values())


def test_keep_overrides_the_leakage_exclusion():
    rng = np.random.default_rng(4)
    n = 400
    y = (rng.random(n) < 0.4).astype(int)
    frame = pl.DataFrame(
        {
            "visits": (rng.poisson(3, n) + 2 * y).astype(str),
            "duration": (rng.integers(0, 300, n) + 400 * y).astype(str),
            "converted": np.where(y == 1, "yes", "no"),
        }
    )
    dropped = train(frame, "converted", candidates=("logistic",))
    assert "duration" not in dropped.report.columns_used
    kept = train(frame, "converted", keep=["duration"], candidates=("logistic",))
    assert "duration" in kept.report.columns_used
    assert [f.excluded for f in kept.report.leakage if f.column == "duration"] == [False]


@pytest.mark.parametrize(
    ("name", "flagged"),
    [
        ("duration", True),
        ("Call Length", True),
        ("CloseDate", True),
        ("Closed Won", True),
        ("Outcome Date", True),
        ("converted_at", True),
        ("poutcome", False),
        ("previous_outcome", False),
        ("TotalVisits", False),
        ("Lead Source", False),
        ("won_deals_last_year_prior", False),
    ],
)
def test_post_outcome_names(name, flagged):
    assert (post_outcome_reason(name) is not None) is flagged


def test_name_containing_the_target_is_flagged():
    assert "target" in (post_outcome_reason("Converted Date", target="Converted") or "")


def _messy_frame() -> pl.DataFrame:
    rng = np.random.default_rng(5)
    n = 300
    visits = rng.poisson(4, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(visits - 4) * 0.8))).astype(int)
    visits_text = visits.astype(str).astype(object)
    visits_text[::17] = ""
    visits_text[::23] = "N/A"
    visits_text[5] = "lots"
    return pl.DataFrame(
        {
            "id": [f"L{i:05d}" for i in range(n)],
            "source": rng.choice(["Google", "google ", "Select", "", "Referral", "unknown"], n),
            "do_not_email": rng.choice(["Yes", "No", "no", ""], n),
            "visits": visits_text.tolist(),
            "score": [f"{v:.1f}" if i % 4 else "-" for i, v in enumerate(rng.normal(10, 2, n))],
            "outcome_y": np.where(y == 1, "Yes", "No"),
        }
    )


def test_messy_columns_are_cleaned_with_reasons():
    frame = _messy_frame()
    schema = infer_schema(frame, [c for c in frame.columns if c != "outcome_y"])
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {
        "source": "categorical",
        "do_not_email": "yes_no",
        "visits": "numeric",
        "score": "numeric",
    }
    assert [d.column for d in schema.dropped] == ["id"]
    source = next(c for c in schema.columns if c.name == "source")
    # "Select" and blanks are missing; "unknown" stays a category; case and spaces fold
    assert set(source.levels) == {"google", "referral", "unknown", "(missing)"}
    visits = next(c for c in schema.columns if c.name == "visits")
    assert any("lots" in note for note in visits.notes)
    X = encode(frame, schema)
    assert np.isnan(X[0, 2])  # row 0 is blank
    assert set(np.unique(X[:, 1][~np.isnan(X[:, 1])])) == {0.0, 1.0}


def test_messy_frame_trains_and_explains():
    model = train(_messy_frame(), "outcome_y")
    assert model.report.positive == "yes"
    assert model.report.evaluation.roc_auc > 0.6
    probability, reasons = model.score(_messy_frame().head(5))
    assert ((probability > 0) & (probability < 1)).all()
    assert all(c.log_odds > 0 for up, _ in reasons for c in up)
    assert all(c.log_odds < 0 for _, down in reasons for c in down)


def test_logistic_contributions_add_up_to_the_log_odds():
    frame, _ = _synthetic(800, seed=6)
    model = train(frame, "won", candidates=("logistic",))
    X = encode(frame, model.schema)
    explainer = model.explainer
    intercept = explainer.named_steps["model"].intercept_[0]
    total = contributions(explainer, X).sum(axis=1) + intercept
    assert np.allclose(total, explainer.decision_function(X))


def test_tree_contributions_follow_a_monotone_effect():
    frame, _ = _synthetic(1500, seed=7)
    model = train(frame, "won", candidates=("gradient_boosting",))
    X = encode(frame, model.schema)
    a = model.schema.names.index("a")
    C = contributions(model.explainer, X)
    low, high = np.quantile(X[:, a], [0.25, 0.75])
    assert C[X[:, a] >= high, a].mean() > 0.3
    assert C[X[:, a] <= low, a].mean() < -0.3


def test_missing_target_column_is_refused_with_its_name():
    with pytest.raises(PredictiveError, match="target column 'converted' not found"):
        train(_messy_frame(), "converted")


def test_constant_target_is_refused():
    frame = _messy_frame().with_columns(pl.lit("No").alias("outcome_y"))
    with pytest.raises(PredictiveError, match="constant"):
        train(frame, "outcome_y")


def test_non_binary_target_is_refused():
    values = pl.Series(["a", "b", "c", "a"] * 10)
    with pytest.raises(PredictiveError, match="not binary: 3 values"):
        parse_outcome(values, "stage")


def test_ambiguous_outcome_needs_positive():
    values = pl.Series(["hot", "cold"] * 10)
    with pytest.raises(PredictiveError, match="--positive"):
        parse_outcome(values, "temp")
    y, present, outcome = parse_outcome(values, "temp", positive="Hot")
    assert outcome.positive == "hot"
    assert y.tolist()[:2] == [1, 0]
    assert present.all()


def test_too_few_conversions_are_refused():
    values = pl.Series(["yes"] * 3 + ["no"] * 50 + [""] * 4)
    with pytest.raises(PredictiveError, match="only 3 rows with 'yes'"):
        parse_outcome(values, "y")


def test_rows_without_outcome_are_left_out_and_counted():
    frame = _messy_frame()
    blanked = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 7)
        .then(pl.lit("Select"))
        .otherwise(pl.col("outcome_y"))
        .alias("outcome_y")
    )
    model = train(blanked, "outcome_y", candidates=("logistic",))
    assert model.report.rows == frame.height - 7
    assert model.report.rows_without_outcome == 7


def test_unknown_exclude_and_keep_columns_are_named():
    with pytest.raises(PredictiveError, match="--exclude 'nope'"):
        train(_messy_frame(), "outcome_y", exclude=["nope"])
    with pytest.raises(PredictiveError, match="--keep 'gone'"):
        train(_messy_frame(), "outcome_y", keep=["gone"])


def test_deciles_and_rule_comparison_on_known_rankings():
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0] * 10)
    p = np.linspace(1, 0, 100)
    table = deciles(y, p)
    assert [d.rows for d in table] == [10] * 10
    assert table[0].conversions == 3 + 0  # rows 0..9 hold three conversions
    assert table[-1].cumulative_capture == pytest.approx(1.0)
    assert table[0].lift == pytest.approx(1.0)
    rule = np.zeros(100, dtype=bool)
    rule[::10] = True  # ten hand-offs, each a conversion
    result = compare_with_rule(y, p, rule, "mql")
    assert (result.handoffs, result.rule_precision, result.rule_recall) == (10, 1.0, 0.3333)
    assert (result.model_precision, result.model_recall) == (0.3, 0.1)


def test_model_bytes_round_trip_and_detect_tampering():
    frame, _ = _synthetic(600, seed=8)
    model = train(frame, "won", candidates=("logistic",))
    data = model.to_bytes()
    again = TrainedModel.from_bytes(data)
    assert again.report.version == model.report.version
    assert again.report.version.startswith("pm-")
    X = encode(frame, model.schema)
    assert np.allclose(again.predict(X), model.predict(X))
    with pytest.raises(PredictiveError, match="not a leadflow model"):
        TrainedModel.from_bytes(b"hello")
    tampered = data.replace(b"logistic", b"LOGISTIC", 1)
    with pytest.raises(PredictiveError):
        TrainedModel.from_bytes(tampered)


def test_time_ordered_folds_never_train_on_the_future():
    frame, _ = _synthetic(1200, seed=9)
    dates = [f"2024-{1 + i * 12 // 1200:02d}-{1 + i % 28:02d}" for i in range(1200)]
    shuffled = frame.with_columns(pl.Series("created", dates)).sample(fraction=1.0, seed=3)
    model = train(shuffled, "won", time_column="created", candidates=("logistic",))
    assert model.report.split == "time-ordered"
    assert "created" not in model.report.columns_used
    # expanding folds: the earliest block only trains, so fewer rows are evaluated
    assert model.report.evaluation.rows < 1200
