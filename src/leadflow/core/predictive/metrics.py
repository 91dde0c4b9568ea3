"""Evaluation figures: ROC-AUC, PR-AUC, Brier, calibration error, deciles and the
comparison with the rule-based score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

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
