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
3. **Leakage guard** (``guard_leakage``). A column is suspected when it shows a
   post-outcome signature: a copy of the outcome (alone ROC-AUC >= 0.95, or half the
   conversions in levels where >= 98 % convert), a post-outcome name (call duration,
   close date, won/lost, ...), a sales-typed name (tags, quality, last activity, ...)
   together with outlying strength, a fill rate that differs between converters and the
   rest, near-deterministic levels of a many-level category, or a row id. Being
   predictive alone is not a signature. Suspected columns are excluded unless named in
   ``keep``; the reasons are in the report.
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

One module per step: ``common`` (thresholds, vocabularies, the error), ``cleaning`` (steps
1-2), ``leakage`` (3), ``models`` (4-5), ``metrics``, ``explanations`` (6) and ``training``
(``train``, the report and the model file). Import the names from this package; it also
re-exports every class a stored model pickles, so model files written before the split
(which name ``leadflow.core.predictive.<Class>``) still load.
"""

from __future__ import annotations

from leadflow.core.predictive.cleaning import (
    ColumnSpec,
    DroppedColumn,
    Outcome,
    Schema,
    describe_value,
    encode,
    infer_schema,
    parse_outcome,
)
from leadflow.core.predictive.common import (
    CANDIDATES,
    FORMAT,
    ISOTONIC_FROM_ROWS,
    LEAKAGE_AUC,
    LEAKAGE_DROP,
    MAX_LEVELS,
    MIN_PER_CLASS,
    MISSING_LEVEL,
    NUMERIC_SHARE,
    OTHER_LEVEL,
    PLACEHOLDERS,
    POST_OUTCOME_NAMES,
    PURE_RATE,
    PURE_SHARE,
    ModelName,
    PredictiveError,
    Progress,
)
from leadflow.core.predictive.explanations import Contribution, contributions, explain
from leadflow.core.predictive.leakage import (
    LeakageFinding,
    guard_leakage,
    post_outcome_reason,
    single_column_auc,
    soft_post_outcome_reason,
)
from leadflow.core.predictive.metrics import (
    Decile,
    Evaluation,
    RuleComparison,
    compare_with_rule,
    deciles,
    evaluate,
    expected_calibration_error,
)
from leadflow.core.predictive.models import Design, build_candidate
from leadflow.core.predictive.training import (
    CandidateScore,
    Report,
    TrainedModel,
    report_json,
    time_order,
    train,
)

__all__ = [
    "CANDIDATES",
    "FORMAT",
    "ISOTONIC_FROM_ROWS",
    "LEAKAGE_AUC",
    "LEAKAGE_DROP",
    "MAX_LEVELS",
    "MIN_PER_CLASS",
    "MISSING_LEVEL",
    "NUMERIC_SHARE",
    "OTHER_LEVEL",
    "PLACEHOLDERS",
    "POST_OUTCOME_NAMES",
    "PURE_RATE",
    "PURE_SHARE",
    "CandidateScore",
    "ColumnSpec",
    "Contribution",
    "Decile",
    "Design",
    "DroppedColumn",
    "Evaluation",
    "LeakageFinding",
    "ModelName",
    "Outcome",
    "PredictiveError",
    "Progress",
    "Report",
    "RuleComparison",
    "Schema",
    "TrainedModel",
    "build_candidate",
    "compare_with_rule",
    "contributions",
    "deciles",
    "describe_value",
    "encode",
    "evaluate",
    "expected_calibration_error",
    "explain",
    "guard_leakage",
    "infer_schema",
    "parse_outcome",
    "post_outcome_reason",
    "report_json",
    "single_column_auc",
    "soft_post_outcome_reason",
    "time_order",
    "train",
]
