"""The leakage guard on CRM lead exports: post-outcome signatures, not mere predictiveness."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from tests.lead_export import PLANTED, TARGET, lead_export

from leadflow.core.predictive import (
    LeakageFinding,
    encode,
    guard_leakage,
    infer_schema,
    parse_outcome,
    post_outcome_reason,
    soft_post_outcome_reason,
)


def _guard(frame: pl.DataFrame, target: str = "y") -> dict[str, LeakageFinding]:
    text = frame.with_columns(pl.all().cast(pl.Utf8))
    y, _, _ = parse_outcome(text[target], target)
    schema = infer_schema(text, [c for c in text.columns if c != target])
    return {f.column: f for f in guard_leakage(encode(text, schema), y, schema, target=target)}


def _has(finding: LeakageFinding, signature: str) -> bool:
    return any(r.startswith(signature) for r in finding.reasons)


@pytest.fixture(scope="module")
def base() -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(21)
    n = 3000
    honest = rng.normal(0, 1, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.4 + 1.6 * honest)))).astype(int)
    return rng, honest, y


def test_a_strong_honest_column_is_not_flagged_for_being_predictive(base):
    rng, honest, y = base
    n = len(y)
    frame = pl.DataFrame(
        {
            # strongest column by far, but no post-outcome signature: kept
            "Total Time Spent on Website": np.round(np.exp(5 + honest)).astype(int),
            "TotalVisits": rng.poisson(3, n),
            "Converted to Lead": np.where(honest + rng.normal(0, 1, n) > 0.5, "Yes", "No"),
            "Country": rng.choice(["India", "Singapore", ""], n),
            "y": y,
        }
    )
    assert _guard(frame) == {}


def test_missingness_pattern_is_flagged_whatever_the_name(base):
    rng, _, y = base
    n = len(y)
    contacted = rng.random(n) < np.where(y == 1, 0.95, 0.3)
    frame = pl.DataFrame(
        {
            "field_17": np.where(contacted, rng.choice(["a", "b", "c"], n), ""),
            "weak": np.where(rng.random(n) < np.where(y == 1, 0.7, 0.5), "x", ""),
            "y": y,
        }
    )
    found = _guard(frame)
    assert set(found) == {"field_17"}
    pos, neg = contacted[y == 1].mean(), contacted[y == 0].mean()
    assert _has(
        found["field_17"], f"missingness: filled for {pos:.0%} of converted rows but {neg:.0%}"
    )


def test_high_cardinality_near_deterministic_levels_are_flagged(base):
    rng, _, y = base
    n = len(y)
    won = rng.choice(["w1", "w2", "w3"], n)
    lost = rng.choice(["l1", "l2", "l3", "l4", "l5"], n)
    field = np.where(rng.random(n) < 0.25, "mixed", np.where(y == 1, won, lost))
    frame = pl.DataFrame({"field_9": field, "y": y})
    found = _guard(frame)
    assert _has(found["field_9"], "determinism: 8 of its 9 levels")
    # a many-level category with ordinary rates is not
    frame = pl.DataFrame({"city": rng.choice([f"c{i}" for i in range(12)], n), "y": y})
    assert _guard(frame) == {}


def test_row_ids_by_order_or_by_name(base):
    rng, _, y = base
    n = len(y)
    frame = pl.DataFrame(
        {
            "seq": np.arange(n) * 3 + 1000,  # follows the row order, neutral name
            "Lead Number": rng.permutation(np.arange(579533, 579533 + 2 * n))[:n],
            "visits": rng.poisson(3, n),  # not unique: not an id
            "y": y,
        }
    )
    found = _guard(frame)
    assert set(found) == {"seq", "Lead Number"}
    assert found["seq"].reasons == (
        "row id: a distinct integer in every row, it follows the row order",
    )
    assert found["Lead Number"].reasons == (
        "row id: a distinct integer in every row, its name says id",
    )


def test_a_suspicious_name_needs_strength(base):
    rng, _, y = base
    n = len(y)
    frame = pl.DataFrame(
        {
            "a": rng.normal(0, 1, n),
            "b": rng.poisson(2, n),
            "Asymmetrique Activity Index": rng.choice(["01.High", "02.Medium", ""], n),
            "Lead Score": np.round(50 + 20 * np.where(y == 1, 2.0, 0.0) + rng.normal(0, 15, n)),
            "y": y,
        }
    )
    found = _guard(frame)
    assert set(found) == {"Lead Score"}
    assert _has(found["Lead Score"], "name + strength: scores/indices")


@pytest.mark.parametrize(
    ("name", "soft"),
    [
        ("Tags", True),
        ("Lead Quality", True),
        ("Lead Profile", True),
        ("Last Notable Activity", True),
        ("Last Activity", True),
        ("Asymmetrique Activity Index", True),
        ("Lead Stage", True),
        ("Sales Notes", True),
        ("TotalVisits", False),
        ("Total Time Spent on Website", False),
        ("Lead Source", False),
        ("What is your current occupation", False),
    ],
)
def test_soft_post_outcome_names(name, soft):
    assert (soft_post_outcome_reason(name) is not None) is soft


def test_a_step_before_the_outcome_is_not_the_target():
    assert post_outcome_reason("Converted to Lead", target="Converted") is None
    assert post_outcome_reason("Converted Date", target="Converted") is not None


def test_the_lead_export_planted_columns_each_with_their_signature():
    found = _guard(lead_export(), TARGET)
    assert set(found) == set(PLANTED)
    assert _has(found["Lead Number"], "row id")
    assert _has(found["Tags"], "determinism")
    assert _has(found["Lead Quality"], "missingness")
    assert _has(found["Lead Profile"], "missingness")
    assert _has(found["Last Notable Activity"], "name + strength: the last activity")
    assert all(f.excluded for f in found.values())
