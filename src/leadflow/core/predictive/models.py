"""Step 4, the candidates: the design matrix, the logistic and gradient-boosted pipelines,
the cross-validation splits and the calibration wrapper."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, TimeSeriesSplit
from sklearn.pipeline import Pipeline

from leadflow.core.predictive.cleaning import Schema
from leadflow.core.predictive.common import ModelName
from leadflow.core.predictive.leakage import _folds

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
