"""Predictive scoring: conversion models trained on outcomes, calibrated and explained.

Pure computation: a table of features and an outcome column in, a fitted model and an
evaluation report out. No file, database or clock access; the CLI reads the CSV and the
caller times the work. The input is any polars frame: a CSV export read as strings, or a
numeric feature table built from leadflow's own store (the same entry point, ``train``).

Steps, each recorded in the report with its reasons:

1. **Outcome.** The target column must hold exactly two outcomes (``yes``/``no``,
   ``1``/``0``, ``won``/``lost``, ...). Rows without an outcome are dropped and counted.
2. **Cleaning** (``infer_schema`` / ``encode``). Placeholder cells (blank, ``Select``,
   ``N/A``, ``null``, ``-``, ...) are missing values. ``unknown`` is *not* a placeholder: in
   exports such as UCI Bank Marketing it is a documented category of its own ("the bank
   does not know"), which carries information; in a numeric column it does not parse and
   so becomes missing like any other non-number. A column whose values are all yes/no
   (true/false, y/n) becomes 1/0; a column whose values are at least 90 % numbers becomes
   numeric (the rest missing, counted); everything else is categorical, its most frequent
   levels kept and the rare ones pooled as ``(other)``. Constant, empty and identifier-like
   columns (a distinct text per row) are dropped with the reason.
3. **Leakage guard** (``guard_leakage``). A column is suspected when (a) on its own it
   predicts the outcome with a cross-validated ROC-AUC of at least 0.95, (b) half or more
   of the conversions sit in levels where at least 98 % convert, or (c) its name says it is
   filled in after the outcome (call duration, close date, won/lost, outcome, ...).
   Suspected columns are excluded unless named in ``keep``.
4. **Candidates** (``CANDIDATES``): L2-regularised logistic regression and
   scikit-learn's histogram gradient-boosted trees, compared by cross-validated ROC-AUC
   (stratified K-fold; expanding time-ordered folds when a time order is given). The
   higher mean wins; a tie goes to the simpler logistic model.
5. **Calibration**: the winner is wrapped in ``CalibratedClassifierCV`` (isotonic from
   1,000 rows, sigmoid/Platt below). The reported figures are out-of-fold: each outer fold
   is predicted by a calibrated model that never saw it.
6. **Explanations** (``explain``): signed contributions in log-odds per original column.
   Logistic: coefficient x standardised value (one-hot columns centred), exact and
   additive around the average row. Trees: TreeSHAP is not in scikit-learn, so each
   column's contribution is the change in the model's log-odds when that column alone is
   replaced by its typical value (median or most frequent level). These deltas explain the
   real model but are not additive when columns interact.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, TimeSeriesSplit
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

FORMAT = "leadflow-predictive/1"
PLACEHOLDERS = frozenset(
    {
        "",
        "select",
        "-- select --",
        "please select",
        "n/a",
        "na",
        "#n/a",
        "none",
        "null",
        "nil",
        "nan",
        "-",
        "--",
        "?",
        "not specified",
        "not provided",
        "(blank)",
        "missing",
    }
)
YES = frozenset({"yes", "y", "true", "t"})
NO = frozenset({"no", "n", "false", "f"})
POSITIVE_OUTCOMES = frozenset(
    {"1", "1.0", "yes", "y", "true", "t", "won", "win", "converted", "success", "positive"}
)
NEGATIVE_OUTCOMES = frozenset(
    {"0", "0.0", "no", "n", "false", "f", "lost", "loss", "not converted", "failure", "negative"}
)
MISSING_LEVEL = "(missing)"
OTHER_LEVEL = "(other)"
MAX_LEVELS = 30
NUMERIC_SHARE = 0.9
LEAKAGE_AUC = 0.95
PURE_RATE = 0.98
PURE_SHARE = 0.5
MIN_PER_CLASS = 5
ISOTONIC_FROM_ROWS = 1000

# Names of columns that are filled in after the outcome is known, matched on the column name
# lowercased with every non-alphanumeric run turned into "_". A name that also says
# previous/prior/past (bank-marketing's "poutcome", "previous_outcome") is about an earlier
# episode and is not matched.
POST_OUTCOME_NAMES: tuple[tuple[str, str], ...] = (
    (r"(^|_)duration($|_)", "call/contact duration is known only after the contact"),
    (r"call_?(length|time|secs|seconds|minutes)", "call length is known only after the call"),
    (r"talk_?time", "talk time is known only after the call"),
    (
        r"(^|_)(closed?|close_?date|closed_?(at|on|date))($|_)",
        "close date/status is set at the outcome",
    ),
    (r"(^|_)(won|lost|loss_?reason|lost_?reason)($|_)", "won/lost is the outcome itself"),
    (r"(^|_)outcome($|_)", "outcome fields are filled in at the outcome"),
    (r"(^|_)result($|_)", "result fields are filled in at the outcome"),
    (r"(^|_)(converted|conversion)_?(at|on|date|time)($|_)", "conversion date follows the outcome"),
    (
        r"(^|_)(deal|opportunity|opp)_?(stage|status|amount|value)($|_)",
        "deal fields follow qualification",
    ),
)
EARLIER_EPISODE = re.compile(r"(^|_)(p|prev|previous|prior|past|last_campaign)($|_)")

ModelName = Literal["logistic", "gradient_boosting"]
CANDIDATES: tuple[ModelName, ...] = ("logistic", "gradient_boosting")
Progress = Callable[[str, int, int], None]


class PredictiveError(ValueError):
    """A problem with the input that the person running the command can fix."""


# --------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class Outcome:
    column: str
    positive: str
    negative: str
    rows_without_outcome: int


def parse_outcome(
    values: pl.Series, column: str, positive: str | None = None
) -> tuple[np.ndarray, np.ndarray, Outcome]:
    """(y as 0/1, mask of rows that have an outcome, description) or a clear error."""
    norm = _normalised(values)
    present = norm.is_not_null().to_numpy()
    distinct = sorted(norm.drop_nulls().unique().to_list())
    if not distinct:
        raise PredictiveError(f"target column {column!r} is empty (every value is blank)")
    if len(distinct) == 1:
        raise PredictiveError(
            f"target column {column!r} is constant ({distinct[0]!r} in every row): "
            "a model needs both outcomes"
        )
    if len(distinct) > 2:
        shown = ", ".join(repr(v) for v in distinct[:5])
        more = f" and {len(distinct) - 5} more" if len(distinct) > 5 else ""
        raise PredictiveError(
            f"target column {column!r} is not binary: {len(distinct)} values ({shown}{more})"
        )
    if positive is not None:
        pos = positive.strip().lower()
        if pos not in distinct:
            raise PredictiveError(
                f"--positive {positive!r} is not a value of target column {column!r} "
                f"(values: {distinct[0]!r}, {distinct[1]!r})"
            )
    else:
        known = [v for v in distinct if v in POSITIVE_OUTCOMES]
        negatives = [v for v in distinct if v in NEGATIVE_OUTCOMES]
        if len(known) == 1:
            pos = known[0]
        elif len(negatives) == 1:
            pos = next(v for v in distinct if v not in NEGATIVE_OUTCOMES)
        else:
            raise PredictiveError(
                f"target column {column!r} has values {distinct[0]!r} and {distinct[1]!r}: "
                "cannot tell which is the conversion; name it with --positive"
            )
    neg = next(v for v in distinct if v != pos)
    y = (norm == pos).fill_null(False).to_numpy().astype(np.int8)
    outcome = Outcome(column, pos, neg, int((~present).sum()))
    counts = (int(y[present].sum()), int(present.sum() - y[present].sum()))
    if min(counts) < MIN_PER_CLASS:
        which = pos if counts[0] < counts[1] else neg
        raise PredictiveError(
            f"target column {column!r} has only {min(counts)} rows with {which!r}: "
            f"at least {MIN_PER_CLASS} of each outcome are needed to cross-validate"
        )
    return y, present, outcome


# --------------------------------------------------------------------------- cleaning


@dataclass(frozen=True)
class ColumnSpec:
    """How one input column becomes one model column (``kind`` numeric/yes_no/categorical)."""

    name: str
    kind: Literal["numeric", "yes_no", "categorical"]
    levels: tuple[str, ...] = ()
    decimal_comma: bool = False
    notes: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"


@dataclass(frozen=True)
class DroppedColumn:
    column: str
    reason: str


@dataclass(frozen=True)
class Schema:
    columns: tuple[ColumnSpec, ...]
    dropped: tuple[DroppedColumn, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def without(self, names: Sequence[str], reason: str) -> Schema:
        gone = set(names)
        return Schema(
            tuple(c for c in self.columns if c.name not in gone),
            self.dropped + tuple(DroppedColumn(n, reason) for n in names),
        )


def _normalised(values: pl.Series) -> pl.Series:
    """Stripped, lowercased text; placeholders become null."""
    text = values.cast(pl.Utf8, strict=False).str.strip_chars().str.to_lowercase()
    return text.set(text.is_in(list(PLACEHOLDERS)).fill_null(True), None)  # type: ignore[arg-type]


def _as_number(text: pl.Series, decimal_comma: bool) -> pl.Series:
    if decimal_comma:
        text = text.str.replace(",", ".", literal=True)
    number = text.cast(pl.Float64, strict=False)
    return number.set(~number.is_finite().fill_null(False), None)  # type: ignore[arg-type]


def infer_schema(frame: pl.DataFrame, columns: Sequence[str]) -> Schema:
    """Decide per column: numeric, yes/no or categorical, or drop it with the reason."""
    specs: list[ColumnSpec] = []
    dropped: list[DroppedColumn] = []
    n = frame.height
    for name in columns:
        series = frame[name]
        if series.dtype.is_numeric() or series.dtype == pl.Boolean:
            number = series.cast(pl.Float64, strict=False)
            if number.drop_nulls().n_unique() <= 1:
                dropped.append(DroppedColumn(name, "constant or empty"))
                continue
            specs.append(ColumnSpec(name, "numeric"))
            continue
        norm = _normalised(series)
        present = norm.drop_nulls()
        blanks = n - present.len()
        if present.n_unique() <= 1:
            dropped.append(DroppedColumn(name, "constant or empty"))
            continue
        notes = [f"{blanks} blank/placeholder cells treated as missing"] if blanks else []
        distinct = set(present.unique().to_list())
        if distinct <= (YES | NO):
            specs.append(ColumnSpec(name, "yes_no", notes=(*notes, "yes/no read as 1/0")))
            continue
        number = _as_number(present, False)
        comma = False
        if number.is_null().sum() > present.len() * (1 - NUMERIC_SHARE):
            alt = _as_number(present, True)
            if alt.is_null().sum() < number.is_null().sum():
                number, comma = alt, True
        bad = int(number.is_null().sum())
        if bad <= present.len() * (1 - NUMERIC_SHARE):
            if bad:
                examples = present.filter(number.is_null()).unique().sort().head(3).to_list()
                notes.append(f"{bad} non-numeric cells treated as missing (e.g. {examples})")
            if comma:
                notes.append("decimal comma")
            specs.append(ColumnSpec(name, "numeric", decimal_comma=comma, notes=tuple(notes)))
            continue
        if present.n_unique() >= 0.9 * present.len() and present.len() >= 20:
            dropped.append(
                DroppedColumn(name, "identifier-like: a distinct text in nearly every row")
            )
            continue
        counts = present.value_counts(sort=True)
        min_count = max(3, math.ceil(0.001 * n))
        frequent = counts.filter(pl.col("count") >= min_count).head(MAX_LEVELS)
        levels = sorted(frequent[:, 0].to_list())
        pooled = present.len() - int(frequent["count"].sum())
        extra = []
        if blanks:
            extra.append(MISSING_LEVEL)
        if pooled:
            extra.append(OTHER_LEVEL)
            notes.append(f"{pooled} cells in rare levels pooled as {OTHER_LEVEL}")
        specs.append(ColumnSpec(name, "categorical", tuple(levels + extra), notes=tuple(notes)))
    return Schema(tuple(specs), tuple(dropped))


def encode(frame: pl.DataFrame, schema: Schema) -> np.ndarray:
    """Float matrix, one column per spec: numbers, 1/0, or level codes; NaN when missing."""
    missing = [c.name for c in schema.columns if c.name not in frame.columns]
    if missing:
        raise PredictiveError(f"column(s) {', '.join(map(repr, missing))} not in the data")
    out = np.full((frame.height, len(schema.columns)), np.nan)
    for j, spec in enumerate(schema.columns):
        series = frame[spec.name]
        if series.dtype.is_numeric() or series.dtype == pl.Boolean:
            out[:, j] = series.cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
            continue
        norm = _normalised(series)
        if spec.kind == "numeric":
            out[:, j] = _as_number(norm, spec.decimal_comma).fill_null(np.nan).to_numpy()
        elif spec.kind == "yes_no":
            values = np.array(norm.to_list(), dtype=object)
            out[:, j] = [1.0 if v in YES else 0.0 if v in NO else np.nan for v in values]
        else:
            lookup = {level: float(i) for i, level in enumerate(spec.levels)}
            fallback_other = lookup.get(OTHER_LEVEL, np.nan)
            fallback_missing = lookup.get(MISSING_LEVEL, fallback_other)
            out[:, j] = [
                fallback_missing if v is None else lookup.get(v, fallback_other)
                for v in norm.to_list()
            ]
    return out


def describe_value(spec: ColumnSpec, value: float) -> str:
    if math.isnan(value):
        return "(missing)"
    if spec.categorical:
        return spec.levels[int(value)]
    if spec.kind == "yes_no":
        return "yes" if value >= 0.5 else "no"
    return f"{value:g}"


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


# --------------------------------------------------------------------------- models


class Design(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """The model matrix from ``encode``'s output.

    ``linear``: numbers standardised (missing -> mean, plus a centred missing indicator),
    levels one-hot and centred, so coefficient x value is each column's contribution.
    ``tree``: passed through; levels stay codes for native categorical splits.
    """

    def __init__(self, mode: str = "linear", categorical: tuple[bool, ...] = ()) -> None:
        self.mode = mode
        self.categorical = categorical

    def fit(self, X: np.ndarray, y: Any = None) -> Design:
        cat = np.asarray(self.categorical, dtype=bool)
        self.groups_: list[int] = []
        self.center_: list[np.ndarray] = []
        self.scale_: list[np.ndarray] = []
        self.sizes_: list[int] = []
        for j in range(X.shape[1]):
            col = X[:, j]
            if cat[j]:
                size = int(np.nanmax(col)) + 1 if np.isfinite(col).any() else 1
                onehot = _onehot(col, size)
                self.sizes_.append(size)
                self.center_.append(onehot.mean(axis=0))
                self.scale_.append(np.ones(size))
            else:
                nan = np.isnan(col)
                mean = float(np.nanmean(col)) if (~nan).any() else 0.0
                std = float(np.nanstd(col)) if (~nan).any() else 1.0
                self.sizes_.append(2 if nan.any() else 1)
                self.center_.append(np.array([mean, nan.mean()])[: self.sizes_[-1]])
                self.scale_.append(np.array([std if std > 0 else 1.0, 1.0])[: self.sizes_[-1]])
            self.groups_.extend([j] * self.sizes_[-1])
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.mode == "tree":
            return X
        cat = np.asarray(self.categorical, dtype=bool)
        parts = []
        for j in range(X.shape[1]):
            col = X[:, j]
            if cat[j]:
                block = _onehot(col, self.sizes_[j])
            else:
                filled = np.where(np.isnan(col), self.center_[j][0], col)
                block = np.column_stack([filled, np.isnan(col)])[:, : self.sizes_[j]]
            parts.append((block - self.center_[j]) / self.scale_[j])
        return np.hstack(parts) if parts else np.zeros((len(X), 0))


def _onehot(codes: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((len(codes), size))
    ok = np.isfinite(codes) & (codes < size)
    out[np.nonzero(ok)[0], codes[ok].astype(np.int64)] = 1.0
    return out


def build_candidate(name: ModelName, schema: Schema, *, rows: int, seed: int = 0) -> Pipeline:
    categorical = tuple(c.categorical for c in schema.columns)
    if name == "logistic":
        return Pipeline(
            [
                ("design", Design("linear", categorical)),
                ("model", LogisticRegression(C=1.0, max_iter=2000)),
            ]
        )
    return Pipeline(
        [
            ("design", Design("tree", categorical)),
            (
                "model",
                HistGradientBoostingClassifier(
                    learning_rate=0.1,
                    max_iter=200,
                    max_leaf_nodes=15,
                    min_samples_leaf=20,
                    l2_regularization=1.0,
                    categorical_features=np.asarray(categorical, dtype=bool),
                    early_stopping=rows >= 1000,
                    validation_fraction=0.1,
                    n_iter_no_change=20,
                    random_state=seed,
                ),
            ),
        ]
    )


def _splits(
    y: np.ndarray, folds: int, seed: int, time_ordered: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    if time_ordered:
        return list(TimeSeriesSplit(folds).split(np.zeros(len(y))))
    return _folds(y, folds, seed)


def _calibrated(pipe: Pipeline, method: str, y: np.ndarray, seed: int, time_ordered: bool) -> Any:
    minority = int(min(y.sum(), len(y) - y.sum()))
    inner = max(2, min(3, minority))
    cv: Any = (
        TimeSeriesSplit(inner)
        if time_ordered
        else StratifiedKFold(inner, shuffle=True, random_state=seed)
    )
    return CalibratedClassifierCV(clone(pipe), method=method, cv=cv)


# --------------------------------------------------------------------------- metrics


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |predicted - observed| over ``bins`` equal-width probability bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(y))


@dataclass(frozen=True)
class Decile:
    decile: int
    rows: int
    conversions: int
    conversion_rate: float
    lift: float
    mean_probability: float
    cumulative_capture: float


def deciles(y: np.ndarray, p: np.ndarray) -> list[Decile]:
    """Rows ranked by probability (ties by row order), cut into ten near-equal groups."""
    order = np.argsort(-p, kind="stable")
    base = y.mean()
    out, captured = [], 0
    for i, part in enumerate(np.array_split(order, 10), start=1):
        if len(part) == 0:
            continue
        hits = int(y[part].sum())
        captured += hits
        rate = hits / len(part)
        out.append(
            Decile(
                i,
                len(part),
                hits,
                round(rate, 4),
                round(rate / base, 3) if base > 0 else 0.0,
                round(float(p[part].mean()), 4),
                round(captured / max(1, y.sum()), 4),
            )
        )
    return out


@dataclass(frozen=True)
class RuleComparison:
    """The rule's decision against the model's top-k at the same number of hand-offs k."""

    column: str
    handoffs: int
    rule_precision: float
    rule_recall: float
    model_precision: float
    model_recall: float


def compare_with_rule(
    y: np.ndarray, p: np.ndarray, rule: np.ndarray, column: str
) -> RuleComparison:
    k = int(rule.sum())
    positives = max(1, int(y.sum()))
    top = np.argsort(-p, kind="stable")[:k]
    hit_rule = int(y[rule.astype(bool)].sum())
    hit_model = int(y[top].sum())
    return RuleComparison(
        column,
        k,
        round(hit_rule / k, 4) if k else 0.0,
        round(hit_rule / positives, 4),
        round(hit_model / k, 4) if k else 0.0,
        round(hit_model / positives, 4),
    )


@dataclass(frozen=True)
class Evaluation:
    """Out-of-fold figures for the calibrated chosen model."""

    rows: int
    roc_auc: float
    pr_auc: float
    brier: float
    brier_base_rate: float
    ece: float
    deciles: tuple[Decile, ...]
    rule: RuleComparison | None = None


def evaluate(
    y: np.ndarray, p: np.ndarray, rule: np.ndarray | None = None, rule_column: str = ""
) -> Evaluation:
    base = float(y.mean())
    return Evaluation(
        rows=len(y),
        roc_auc=round(float(roc_auc_score(y, p)), 4),
        pr_auc=round(float(average_precision_score(y, p)), 4),
        brier=round(float(brier_score_loss(y, p)), 4),
        brier_base_rate=round(base * (1 - base), 4),
        ece=round(expected_calibration_error(y, p), 4),
        deciles=tuple(deciles(y, p)),
        rule=compare_with_rule(y, p, rule, rule_column) if rule is not None else None,
    )


# --------------------------------------------------------------------------- explanations


@dataclass(frozen=True)
class Contribution:
    column: str
    value: str
    log_odds: float

    def __str__(self) -> str:
        return f"{self.column}={self.value} ({self.log_odds:+.2f})"


def contributions(explainer: Pipeline, X: np.ndarray) -> np.ndarray:
    """Signed log-odds contribution per row and original column (see module doc)."""
    design: Design = explainer.named_steps["design"]
    model = explainer.named_steps["model"]
    if isinstance(model, LogisticRegression):
        Z = design.transform(X) * model.coef_[0]
        groups = np.asarray(design.groups_)
        out = np.zeros((len(X), X.shape[1]))
        for j in range(X.shape[1]):
            out[:, j] = Z[:, groups == j].sum(axis=1)
        return out
    base = explainer.decision_function(X)
    out = np.zeros((len(X), X.shape[1]))
    for j, typical in enumerate(explainer.typical_):  # type: ignore[attr-defined]
        swapped = X.copy()
        swapped[:, j] = typical
        out[:, j] = base - explainer.decision_function(swapped)
    return out


def explain(
    explainer: Pipeline, schema: Schema, X: np.ndarray, top: int = 3
) -> list[tuple[list[Contribution], list[Contribution]]]:
    """Per row: the columns that raised the probability most, and those that lowered it."""
    C = contributions(explainer, X)
    rows = []
    for i in range(len(X)):
        order = np.argsort(-C[i], kind="stable")
        up = [j for j in order[:top] if C[i, j] > 1e-9]
        down = [j for j in order[::-1][:top] if C[i, j] < -1e-9]
        rows.append(
            (
                [_contribution(schema, X, C, i, j) for j in up],
                [_contribution(schema, X, C, i, j) for j in down],
            )
        )
    return rows


def _contribution(schema: Schema, X: np.ndarray, C: np.ndarray, i: int, j: int) -> Contribution:
    spec = schema.columns[j]
    return Contribution(spec.name, describe_value(spec, X[i, j]), round(float(C[i, j]), 4))


def _typical(X: np.ndarray, schema: Schema) -> list[float]:
    out = []
    for j, spec in enumerate(schema.columns):
        col = X[:, j][~np.isnan(X[:, j])]
        if len(col) == 0:
            out.append(np.nan)
        elif spec.categorical:
            out.append(float(np.bincount(col.astype(np.int64)).argmax()))
        else:
            out.append(float(np.median(col)))
    return out


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class CandidateScore:
    model: str
    roc_auc_mean: float
    roc_auc_std: float
    fold_aucs: tuple[float, ...]


@dataclass
class Report:
    target: str
    positive: str
    rows: int
    conversions: int
    rows_without_outcome: int
    split: str
    folds: int
    columns_used: list[str]
    cleaning: dict[str, list[str]]
    dropped: list[DroppedColumn]
    leakage: list[LeakageFinding]
    candidates: list[CandidateScore]
    chosen: str
    calibration: str
    evaluation: Evaluation
    importance: list[tuple[str, float]]
    explanation_method: str
    version: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedModel:
    schema: Schema
    estimator: Any
    explainer: Pipeline
    report: Report

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(X)[:, 1]

    def score(
        self, frame: pl.DataFrame, top: int = 3
    ) -> tuple[np.ndarray, list[tuple[list[Contribution], list[Contribution]]]]:
        X = encode(frame, self.schema)
        return self.predict(X), explain(self.explainer, self.schema, X, top)

    def to_bytes(self) -> bytes:
        """Pickle bytes; the version is a hash of the payload and is checked on load."""
        self.report.version = ""
        payload = pickle.dumps(
            {
                "schema": self.schema,
                "estimator": self.estimator,
                "explainer": self.explainer,
                "report": self.report,
            },
            protocol=5,
        )
        version = "pm-" + hashlib.sha256(payload).hexdigest()[:12]
        self.report.version = version
        return pickle.dumps({"format": FORMAT, "version": version, "payload": payload}, protocol=5)

    @staticmethod
    def from_bytes(data: bytes) -> TrainedModel:
        """Only load files you trust: unpickling runs code from the file."""
        try:
            outer = pickle.loads(data)
        except Exception as exc:
            raise PredictiveError(f"not a leadflow model file ({type(exc).__name__})") from exc
        if not isinstance(outer, dict) or outer.get("format") != FORMAT:
            raise PredictiveError("not a leadflow model file (unknown format)")
        payload = outer["payload"]
        if "pm-" + hashlib.sha256(payload).hexdigest()[:12] != outer["version"]:
            raise PredictiveError("model file is corrupt: its content does not match its version")
        inner = pickle.loads(payload)
        inner["report"].version = outer["version"]
        return TrainedModel(
            inner["schema"], inner["estimator"], inner["explainer"], inner["report"]
        )


def report_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, default=_json_default, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value).__name__)


def _check_columns(frame: pl.DataFrame, option: str, names: Sequence[str]) -> None:
    for name in names:
        if name not in frame.columns:
            raise PredictiveError(
                f"{option} {name!r}: no such column (columns: {', '.join(frame.columns[:12])}"
                f"{', ...' if frame.width > 12 else ''})"
            )


def time_order(values: pl.Series, column: str) -> np.ndarray:
    """Row order by a date/time or numeric column; blanks and unparseable values go last."""
    if values.dtype.is_temporal() or values.dtype.is_numeric():
        key = values.cast(pl.Float64, strict=False) if values.dtype.is_numeric() else values
    else:
        text = _normalised(values)
        number = _as_number(text, False)
        if number.null_count() <= text.null_count():
            key = number
        else:
            key = text.str.to_datetime(strict=False)
            if key.null_count() > text.null_count():
                raise PredictiveError(
                    f"--time-column {column!r}: {key.null_count() - text.null_count()} values are "
                    "neither dates nor numbers"
                )
    if key.dtype.is_temporal():
        key = key.dt.epoch("ms")
    numbers = key.cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    return np.argsort(numbers, kind="stable")  # NaN sorts last


def train(
    frame: pl.DataFrame,
    target: str,
    *,
    id_column: str | None = None,
    exclude: Sequence[str] = (),
    keep: Sequence[str] = (),
    time_column: str | None = None,
    rule_column: str | None = None,
    positive: str | None = None,
    folds: int = 5,
    calibration: Literal["auto", "isotonic", "sigmoid"] = "auto",
    candidates: Sequence[ModelName] = CANDIDATES,
    seed: int = 0,
    progress: Progress | None = None,
    threads: int | None = 1,
) -> TrainedModel:
    """Clean, guard, choose, calibrate, evaluate and explain: the whole training run.

    ``threads`` caps the OpenMP/BLAS threads (None: the libraries' default). One thread is
    the default because on small shared machines OpenMP's spin-waiting made the gradient-
    boosted trees 5-15x slower with two threads than with one (measured; see the docs).
    """
    with threadpool_limits(limits=threads):
        return _train(
            frame,
            target,
            id_column=id_column,
            exclude=exclude,
            keep=keep,
            time_column=time_column,
            rule_column=rule_column,
            positive=positive,
            folds=folds,
            calibration=calibration,
            candidates=candidates,
            seed=seed,
            progress=progress,
        )


def _train(
    frame: pl.DataFrame,
    target: str,
    *,
    id_column: str | None,
    exclude: Sequence[str],
    keep: Sequence[str],
    time_column: str | None,
    rule_column: str | None,
    positive: str | None,
    folds: int,
    calibration: Literal["auto", "isotonic", "sigmoid"],
    candidates: Sequence[ModelName],
    seed: int,
    progress: Progress | None,
) -> TrainedModel:
    if frame.height == 0:
        raise PredictiveError("the data has no rows")
    if target not in frame.columns:
        raise PredictiveError(
            f"target column {target!r} not found (columns: {', '.join(frame.columns[:12])}"
            f"{', ...' if frame.width > 12 else ''})"
        )
    _check_columns(frame, "--id", [id_column] if id_column else [])
    _check_columns(frame, "--exclude", exclude)
    _check_columns(frame, "--keep", keep)
    _check_columns(frame, "--time-column", [time_column] if time_column else [])
    _check_columns(frame, "--rule-column", [rule_column] if rule_column else [])
    y_all, present, outcome = parse_outcome(frame[target], target, positive)
    notes: list[str] = []
    frame = frame.filter(pl.Series(present))
    y = y_all[present]
    if outcome.rows_without_outcome:
        notes.append(f"{outcome.rows_without_outcome} rows without an outcome were left out")
    time_ordered = time_column is not None
    if time_ordered:
        order = time_order(frame[time_column], time_column)  # type: ignore[index]
        frame, y = frame[order], y[order]
    rule = None
    if rule_column:
        rule_values = _normalised(frame[rule_column])
        rule = rule_values.is_in(list(YES | {"1", "1.0", "mql"})).fill_null(False).to_numpy()
    reserved = {target, id_column, time_column, rule_column, *exclude}
    features = [c for c in frame.columns if c not in reserved]
    schema = infer_schema(frame, features)
    for name in exclude:
        schema = Schema(schema.columns, (*schema.dropped, DroppedColumn(name, "--exclude")))
    if not schema.columns:
        raise PredictiveError("no usable feature columns left after cleaning")
    X = encode(frame, schema)
    minority = int(min(y.sum(), len(y) - y.sum()))
    k = max(2, min(folds, minority))
    if k < folds:
        notes.append(f"only {minority} rows of the rarer outcome: {k} folds instead of {folds}")

    steps = len(candidates) * k + k + 4
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(label, done, steps)

    leakage = guard_leakage(X, y, schema, target=target, keep=keep, folds=k, seed=seed)
    step("leakage guard")
    excluded = [f.column for f in leakage if f.excluded]
    schema_used = schema.without(excluded, "suspected leakage")
    if not schema_used.columns:
        raise PredictiveError("every feature column is suspected leakage; use --keep to keep some")
    keep_idx = [schema.names.index(n) for n in schema_used.names]
    X = X[:, keep_idx]

    splits = _splits(y, k, seed, time_ordered)
    scores: list[CandidateScore] = []
    for name in candidates:
        aucs = []
        for i, (tr, te) in enumerate(splits, start=1):
            pipe = build_candidate(name, schema_used, rows=len(tr), seed=seed).fit(X[tr], y[tr])
            aucs.append(float(roc_auc_score(y[te], pipe.predict_proba(X[te])[:, 1])))
            step(f"cross-validating {name} (fold {i}/{k})")
        scores.append(
            CandidateScore(
                name,
                round(float(np.mean(aucs)), 4),
                round(float(np.std(aucs)), 4),
                tuple(round(a, 4) for a in aucs),
            )
        )
    best = max(scores, key=lambda s: (s.roc_auc_mean, s.model == "logistic"))
    chosen: ModelName = best.model  # type: ignore[assignment]
    method = (
        calibration
        if calibration != "auto"
        else ("isotonic" if len(y) >= ISOTONIC_FROM_ROWS else "sigmoid")
    )

    tested = np.zeros(len(y), dtype=bool)
    oof = np.zeros(len(y))
    for i, (tr, te) in enumerate(splits, start=1):
        pipe = build_candidate(chosen, schema_used, rows=len(tr), seed=seed)
        model = _calibrated(pipe, method, y[tr], seed, time_ordered).fit(X[tr], y[tr])
        oof[te] = model.predict_proba(X[te])[:, 1]
        tested[te] = True
        step(f"evaluating calibrated {chosen} (fold {i}/{k})")
    evaluation = evaluate(
        y[tested], oof[tested], rule[tested] if rule is not None else None, rule_column or ""
    )
    if time_ordered:
        notes.append(f"time-ordered folds: the first {int((~tested).sum())} rows only train")

    final_pipe = build_candidate(chosen, schema_used, rows=len(y), seed=seed)
    estimator = _calibrated(final_pipe, method, y, seed, time_ordered).fit(X, y)
    step("fitting the final calibrated model")
    explainer = clone(final_pipe).fit(X, y)
    explainer.typical_ = _typical(X, schema_used)  # type: ignore[attr-defined]
    step("fitting the explainer")
    sample = np.random.default_rng(seed).permutation(len(y))[:2000]
    magnitude = np.abs(contributions(explainer, X[sample])).mean(axis=0)
    importance = sorted(
        ((n, round(float(m), 4)) for n, m in zip(schema_used.names, magnitude, strict=True)),
        key=lambda t: -t[1],
    )
    step("explaining")
    report = Report(
        target=target,
        positive=outcome.positive,
        rows=len(y),
        conversions=int(y.sum()),
        rows_without_outcome=outcome.rows_without_outcome,
        split="time-ordered" if time_ordered else "stratified",
        folds=k,
        columns_used=schema_used.names,
        cleaning={c.name: list(c.notes) for c in schema_used.columns if c.notes},
        dropped=list(schema_used.dropped),
        leakage=leakage,
        candidates=scores,
        chosen=chosen,
        calibration=method,
        evaluation=evaluation,
        importance=importance,
        explanation_method=(
            "coefficient x standardised value (log-odds)"
            if chosen == "logistic"
            else "log-odds change when the column alone is set to its typical value"
        ),
        notes=notes,
    )
    return TrainedModel(schema_used, estimator, explainer, report)


__all__ = [
    "CANDIDATES",
    "ColumnSpec",
    "Contribution",
    "Evaluation",
    "LeakageFinding",
    "PredictiveError",
    "Report",
    "Schema",
    "TrainedModel",
    "encode",
    "evaluate",
    "expected_calibration_error",
    "explain",
    "guard_leakage",
    "infer_schema",
    "parse_outcome",
    "post_outcome_reason",
    "report_json",
    "train",
]
