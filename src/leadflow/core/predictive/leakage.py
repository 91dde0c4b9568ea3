"""Step 3, the leakage guard: columns that behave like fields filled in after the outcome.

Being predictive is not enough to be suspected (time on the website predicts conversion and
happens before it). A column is flagged when it shows a post-outcome *signature*, and each
reason names the signature:

- **copy of the outcome**: alone it predicts the outcome with ROC-AUC >= ``LEAKAGE_AUC``, or
  half of the conversions sit in values where >= ``PURE_RATE`` convert;
- **name**: a name that says it is known only after the outcome (``POST_OUTCOME_NAMES``);
- **name + strength**: a name often typed by sales after contact (``SOFT_POST_OUTCOME_NAMES``:
  tags, status, quality, stage, reason, notes, last activity, score, index, profile) *and*
  a single-column AUC >= ``STRONG_AUC`` or ``OUTLIER_MARGIN`` above the median of the other
  columns;
- **missingness**: filled for converted rows far more (or less) often than for the others
  (fill rates ``MISSING_GAP`` apart): the field is typed in after contact;
- **determinism**: a category with ``DETERMINISTIC_LEVELS``+ levels whose rows sit mostly in
  levels that (almost) all convert or (almost) none do, both kinds present;
- **row id**: a distinct integer in every row that increases (or decreases) with the row
  order, or whose name says id/number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from leadflow.core.predictive.cleaning import ColumnSpec, Schema
from leadflow.core.predictive.common import (
    DETERMINISTIC_LEVELS,
    DETERMINISTIC_SHARE,
    EARLIER_EPISODE,
    LEAKAGE_AUC,
    MISSING_GAP,
    MISSING_LEVEL,
    NEAR_PURE,
    OTHER_LEVEL,
    OUTLIER_MARGIN,
    POST_OUTCOME_NAMES,
    PURE_RATE,
    PURE_SHARE,
    ROW_ID_NAMES,
    SOFT_POST_OUTCOME_NAMES,
    STRONG_AUC,
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
        # "converted_to_lead" is a step before the outcome "converted", not the outcome
        if len(tkey) >= 4 and re.search(rf"{re.escape(tkey)}(?!_to_)", key):
            return f"name contains the target's name ({target!r})"
    if EARLIER_EPISODE.search(key):
        return None
    for pattern, reason in POST_OUTCOME_NAMES:
        if re.search(pattern, key):
            return f"name suggests it is filled in after the outcome: {reason}"
    return None


def soft_post_outcome_reason(name: str) -> str | None:
    """Why the name may be typed in after contact (needs strength too), or None."""
    key = _name_key(name)
    if EARLIER_EPISODE.search(key):
        return None
    for pattern, reason in SOFT_POST_OUTCOME_NAMES:
        if re.search(pattern, key):
            return reason
    return None


def _missing(values: np.ndarray, spec: ColumnSpec) -> np.ndarray:
    missing: np.ndarray = np.isnan(values)
    if spec.categorical and MISSING_LEVEL in spec.levels:
        missing |= values == spec.levels.index(MISSING_LEVEL)
    return missing


def missingness_reason(values: np.ndarray, y: np.ndarray, spec: ColumnSpec) -> str | None:
    """Filled for converted rows far more (or less) often than for the others."""
    missing = _missing(values, spec)
    share = missing.mean()
    if share < 0.05 or share > 0.95 or y.sum() == 0 or y.sum() == len(y):
        return None
    filled_pos = float((~missing[y == 1]).mean())
    filled_neg = float((~missing[y == 0]).mean())
    if abs(filled_pos - filled_neg) < MISSING_GAP:
        return None
    return (
        f"missingness: filled for {filled_pos:.0%} of converted rows but {filled_neg:.0%} of "
        "the others (typed in after contact)"
    )


def determinism_reason(values: np.ndarray, y: np.ndarray, spec: ColumnSpec) -> str | None:
    """Many levels, most rows in levels that (almost) all convert or (almost) none do."""
    if not spec.categorical:
        return None
    missing = _missing(values, spec)
    codes = values[~missing].astype(np.int64)
    yy = y[~missing]
    known = [i for i, level in enumerate(spec.levels) if level not in (MISSING_LEVEL, OTHER_LEVEL)]
    rows = np.bincount(codes, minlength=len(spec.levels))
    hits = np.bincount(codes, weights=yy, minlength=len(spec.levels))
    sized = [i for i in known if rows[i] >= 10]
    if len(sized) < DETERMINISTIC_LEVELS:
        return None
    rate = {i: hits[i] / rows[i] for i in sized}
    high = [i for i in sized if rate[i] >= 1 - NEAR_PURE]
    low = [i for i in sized if rate[i] <= NEAR_PURE]
    covered = float(rows[high + low].sum() / max(1, len(codes)))
    if not high or not low or covered < DETERMINISTIC_SHARE:
        return None
    return (
        f"determinism: {len(high) + len(low)} of its {len(sized)} levels (with {covered:.0%} of "
        f"the filled rows) convert >= {1 - NEAR_PURE:.0%} or <= {NEAR_PURE:.0%}"
    )


def row_id_reason(values: np.ndarray, name: str, spec: ColumnSpec) -> str | None:
    """A distinct integer in (nearly) every row, ordered with the rows or named like an id."""
    if spec.kind != "numeric":
        return None
    finite = values[~np.isnan(values)]
    if len(finite) < max(20, 0.95 * len(values)) or not np.all(finite == np.round(finite)):
        return None
    if len(np.unique(finite)) < len(finite):
        return None
    steps = np.sign(np.diff(finite))
    monotonic = max((steps > 0).mean(), (steps < 0).mean()) >= 0.95
    named = bool(ROW_ID_NAMES.search(_name_key(name)))
    if not (monotonic or named):
        return None
    why = " and ".join(
        w for w, on in (("it follows the row order", monotonic), ("its name says id", named)) if on
    )
    return f"row id: a distinct integer in every row, {why}"


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
    aucs = [
        single_column_auc(X[:, j], y, splits, spec.categorical)
        for j, spec in enumerate(schema.columns)
    ]
    findings: list[LeakageFinding] = []
    for j, spec in enumerate(schema.columns):
        auc = aucs[j]
        others = aucs[:j] + aucs[j + 1 :]
        median = float(np.median(others)) if others else 0.5
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
        soft = soft_post_outcome_reason(spec.name)
        if soft and not named and (auc >= STRONG_AUC or auc >= median + OUTLIER_MARGIN):
            reasons.append(
                f"name + strength: {soft}, and alone it reaches ROC-AUC {auc:.3f} "
                f"(median of the other columns {median:.3f})"
            )
        for extra in (
            missingness_reason(X[:, j], y, spec),
            determinism_reason(X[:, j], y, spec),
            row_id_reason(X[:, j], spec.name, spec),
        ):
            if extra:
                reasons.append(extra)
        if reasons:
            findings.append(
                LeakageFinding(spec.name, tuple(reasons), round(auc, 4), spec.name not in keep)
            )
    return findings
