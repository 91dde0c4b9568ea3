"""Step 3, the leakage guard: columns that predict the outcome too well, or whose name says
they are filled in after it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from leadflow.core.predictive.cleaning import Schema
from leadflow.core.predictive.common import (
    EARLIER_EPISODE,
    LEAKAGE_AUC,
    POST_OUTCOME_NAMES,
    PURE_RATE,
    PURE_SHARE,
)

# --------------------------------------------------------------------------- leakage guard


@dataclass(frozen=True)
class LeakageFinding:
    column: str
    reasons: tuple[str, ...]
    single_column_auc: float
    excluded: bool


def _folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _bins(values: np.ndarray, categorical: bool) -> np.ndarray:
    """Small integer bins for a column: level codes, or up to 20 quantile bins; last = missing."""
    nan = np.isnan(values)
    codes = np.zeros(len(values), dtype=np.int64)
    finite = values[~nan]
    if categorical or len(np.unique(finite)) <= 20:
        uniq, inv = np.unique(finite, return_inverse=True)
        codes[~nan] = inv
        top = len(uniq)
    else:
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, 21)[1:-1]))
        codes[~nan] = np.searchsorted(edges, finite, side="right")
        top = len(edges) + 1
    codes[nan] = top
    return codes


def single_column_auc(
    values: np.ndarray,
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    categorical: bool,
) -> float:
    """Out-of-fold ROC-AUC of the column alone (per-bin conversion rate learnt in-fold)."""
    bins = _bins(values, categorical)
    size = int(bins.max()) + 1
    score = np.empty(len(y))
    for train, test in folds:
        prior = y[train].mean()
        hits = np.bincount(bins[train], weights=y[train], minlength=size)
        rows = np.bincount(bins[train], minlength=size)
        score[test] = ((hits + prior) / (rows + 1.0))[bins[test]]
    auc = float(roc_auc_score(y, score))
    return max(auc, 1.0 - auc)


def _pure_share(values: np.ndarray, y: np.ndarray, categorical: bool) -> float:
    """Share of conversions sitting in levels/bins (>= 10 rows) where >= 98 % convert."""
    bins = _bins(values, categorical)
    hits = np.bincount(bins, weights=y)
    rows = np.bincount(bins)
    pure = (rows >= 10) & (hits >= PURE_RATE * rows)
    return float(hits[pure].sum() / max(1.0, y.sum()))


def _name_key(name: str) -> str:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


def post_outcome_reason(name: str, target: str | None = None) -> str | None:
    key = _name_key(name)
    if target:
        tkey = _name_key(target)
        if len(tkey) >= 4 and tkey in key:
            return f"name contains the target's name ({target!r})"
    if EARLIER_EPISODE.search(key):
        return None
    for pattern, reason in POST_OUTCOME_NAMES:
        if re.search(pattern, key):
            return f"name suggests it is filled in after the outcome: {reason}"
    return None


def guard_leakage(
    X: np.ndarray,
    y: np.ndarray,
    schema: Schema,
    *,
    target: str,
    keep: Sequence[str] = (),
    folds: int = 5,
    seed: int = 0,
) -> list[LeakageFinding]:
    """Suspected leakage per column, with the reasons; ``keep`` overrides the exclusion."""
    splits = _folds(y, folds, seed)
    findings: list[LeakageFinding] = []
    for j, spec in enumerate(schema.columns):
        auc = single_column_auc(X[:, j], y, splits, spec.categorical)
        reasons: list[str] = []
        if auc >= LEAKAGE_AUC:
            reasons.append(f"alone predicts the outcome (cross-validated ROC-AUC {auc:.3f})")
        share = _pure_share(X[:, j], y, spec.categorical)
        if share >= PURE_SHARE:
            reasons.append(
                f"{share:.0%} of conversions sit in values where at least {PURE_RATE:.0%} convert"
            )
        named = post_outcome_reason(spec.name, target)
        if named:
            reasons.append(named)
        if reasons:
            findings.append(
                LeakageFinding(spec.name, tuple(reasons), round(auc, 4), spec.name not in keep)
            )
    return findings
