"""Step 6, explanations: signed contributions in log-odds per original column."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from leadflow.core.predictive.cleaning import Schema, describe_value
from leadflow.core.predictive.models import Design

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
    for j, typical in enumerate(explainer.typical_):
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
