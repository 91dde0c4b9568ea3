"""Predictive scoring on the full UCI Bank Marketing export (41,188 calls).

    .venv/bin/python benchmarks/predictive.py [--csv PATH] [--time-ordered] [--lightgbm]

Prints the leakage report, the cross-validated ROC-AUC of each candidate without and with
``duration`` (the call length, known only after the call), the chosen model, its
calibrated out-of-fold figures and the training time, next to the published baseline.
``--time-ordered`` adds a run with expanding time-ordered folds (the file is in date
order, May 2008 - Nov 2010, but has no date column, so the row number stands in for it).
``--lightgbm`` compares LightGBM with scikit-learn's histogram GBT on the same folds, if
lightgbm is installed (it is not a dependency).

Pending: the demo-world part of issue 8 (time-based hold-out on leadflow's own events,
compared with the rule-based MQL decision) waits for the scoring engine; see
docs/predictive.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from leadflow.core.predictive import TrainedModel, encode, infer_schema, train
from leadflow.services.predictive import read_table

DEFAULT = (
    Path(__file__).resolve().parents[2] / "shared/data/bank-marketing/bank-additional-full.csv"
)
PUBLISHED = "0.79-0.80 (published baselines without duration; Moro et al. 2014 report ~0.79)"


def _run(frame: pl.DataFrame, label: str, **kwargs: object) -> tuple[TrainedModel, float]:
    started = time.perf_counter()
    model = train(frame, "y", **kwargs)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    print(f"\n== {label}: trained in {seconds:.1f} s")
    for cand in model.report.candidates:
        mark = "  <- chosen" if cand.model == model.report.chosen else ""
        print(
            f"   {cand.model:<18} CV ROC-AUC {cand.roc_auc_mean:.4f} ± {cand.roc_auc_std:.4f}{mark}"
        )
    e = model.report.evaluation
    print(
        f"   calibrated ({model.report.calibration}) out-of-fold: ROC-AUC {e.roc_auc:.4f}  "
        f"PR-AUC {e.pr_auc:.4f}  Brier {e.brier:.4f} (base rate {e.brier_base_rate:.4f})  "
        f"ECE {e.ece:.4f}  rows {e.rows}"
    )
    top = e.deciles[0]
    print(f"   top decile: conversion {top.conversion_rate:.1%}, lift {top.lift:.2f}")
    return model, seconds


def _lightgbm(frame: pl.DataFrame) -> None:
    try:
        import lightgbm  # type: ignore[import-not-found]
    except ImportError:
        print("\nlightgbm not installed: skipped")
        return
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from leadflow.core.predictive import build_candidate, parse_outcome

    y, _, _ = parse_outcome(frame["y"], "y")
    features = [c for c in frame.columns if c not in ("y", "duration")]
    schema = infer_schema(frame, features)
    X = encode(frame, schema)
    cats = [i for i, c in enumerate(schema.columns) if c.categorical]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    for name, make in (
        ("sklearn HistGradientBoosting", lambda: build_candidate("gradient_boosting", schema,
                                                                 rows=len(y))),
        ("lightgbm LGBMClassifier", lambda: lightgbm.LGBMClassifier(
            n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=20,
            reg_lambda=1.0, n_jobs=1, verbose=-1)),
    ):  # fmt: skip
        started = time.perf_counter()
        aucs = []
        for tr, te in folds:
            model = make()
            if name.startswith("lightgbm"):
                model.fit(X[tr], y[tr], categorical_feature=cats)
            else:
                model.fit(X[tr], y[tr])
            aucs.append(roc_auc_score(y[te], model.predict_proba(X[te])[:, 1]))
        print(
            f"   {name:<30} CV ROC-AUC {np.mean(aucs):.4f} ± {np.std(aucs):.4f}  "
            f"({time.perf_counter() - started:.1f} s for 5 folds)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT)
    parser.add_argument("--time-ordered", action="store_true")
    parser.add_argument("--lightgbm", action="store_true")
    args = parser.parse_args()
    frame = read_table(args.csv)
    print(f"{args.csv}: {frame.height} rows, {frame.width} columns")

    model, _ = _run(frame, "without duration (leakage guard default)")
    print("\nleakage report:")
    for f in model.report.leakage:
        action = "excluded" if f.excluded else "kept"
        print(
            f"   {f.column}: {action}; alone AUC {f.single_column_auc:.3f}; {'; '.join(f.reasons)}"
        )
    print(f"chosen: {model.report.chosen}; importance: {model.report.importance[:6]}")
    print(f"published baseline: {PUBLISHED}")

    _run(frame, "with duration (--keep duration; for comparison only, not realistic)",
         keep=["duration"])  # fmt: skip

    if args.time_ordered:
        ordered = frame.with_row_index("row_order").with_columns(pl.col("row_order").cast(pl.Utf8))
        _run(ordered, "without duration, expanding time-ordered folds (file order)",
             time_column="row_order")  # fmt: skip
    if args.lightgbm:
        print("\nLightGBM vs scikit-learn histogram GBT (same features, same 5 folds, 1 thread):")
        with threadpool_limits(limits=1):
            _lightgbm(frame)
    print(
        "\npending: demo-world evaluation (time-based hold-out vs rule-based MQL) waits for "
        "the scoring engine"
    )


if __name__ == "__main__":
    main()
