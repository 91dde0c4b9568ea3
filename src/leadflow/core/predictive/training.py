"""Training end to end (``train``): the report, the trained model and its (un)pickling."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from leadflow.core.predictive.cleaning import (
    DroppedColumn,
    Schema,
    _as_number,
    _normalised,
    encode,
    infer_schema,
    parse_outcome,
)
from leadflow.core.predictive.common import (
    CANDIDATES,
    FORMAT,
    ISOTONIC_FROM_ROWS,
    LEAKAGE_DROP,
    YES,
    ModelName,
    PredictiveError,
    Progress,
)
from leadflow.core.predictive.explanations import Contribution, _typical, contributions, explain
from leadflow.core.predictive.leakage import LeakageFinding, guard_leakage
from leadflow.core.predictive.metrics import Evaluation, evaluate
from leadflow.core.predictive.models import _calibrated, _splits, build_candidate

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
        return np.asarray(self.estimator.predict_proba(X)[:, 1])

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
    if time_column is not None:  # time_ordered
        order = time_order(frame[time_column], time_column)
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
    schema_used = schema
    for finding in leakage:
        if finding.excluded:
            reason = f"{LEAKAGE_DROP}: {'; '.join(finding.reasons)}"
            schema_used = schema_used.without([finding.column], reason)
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
    explainer.typical_ = _typical(X, schema_used)
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
