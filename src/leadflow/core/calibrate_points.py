"""Calibrate a lead model's points from the company's own outcomes (``leadflow model calibrate``).

Pure: one :class:`LeadRecord` per lead goes in -- did it reach the outcome stage, how often
each engagement rule fired (caps applied) before the outcome (before the as-of time for a
lead that did not reach it), and which value of each fit rule it has -- and a
:class:`Proposal` comes out:

- a regularised logistic regression (scikit-learn, L2, standardised features) of the outcome
  on the engagement rules' occurrence counts and on one indicator per fit rule value; each
  coefficient is the feature's log-odds lift with every other feature held fixed;
- engagement points = coefficient per occurrence x ``k_e``, where ``k_e`` keeps the points
  all leads earned from the fitted rules the same in total (sum of current points x
  occurrences over rules with positive points / sum of coefficient x occurrences over rules
  with a positive coefficient), so the engagement score keeps its scale;
- fit points = coefficient x ``k_f``, where ``k_f`` maps the strongest coefficient onto the
  largest current points of the fitted fit values (the fit score is clamped to 0-100);
- rules and fit values that fewer than ``min_support`` leads have (or that no value of the
  outcome tells apart) are left out of the fit and keep their points;
- the highest MQL threshold that gives at least as many MQLs on this history as the current
  model does (scores here are undecayed sums of points x occurrences before the outcome;
  leads with equal scores can add more);
- the ROC-AUC of that engagement score against the outcome, current vs proposed;
- :func:`at_capacity`: precision and recall of the leads sales can work (the highest
  scores), for either set of points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from leadflow.core.config import LeadModel
from leadflow.core.model import LeadProfile
from leadflow.core.model_edit import Path, mql_threshold_path, rule_points_path
from leadflow.core.scoring import _normal_key, score_fit

FIT_CRITERIA = ("industry", "company_size", "title_seniority", "country")
"""The fit rules whose points are calibrated (``target_account`` is a single yes/no)."""
MIN_SUPPORT = 10


class CalibrationError(ValueError):
    """The history cannot support a proposal (no converters, no non-converters...)."""


@dataclass(frozen=True, slots=True)
class LeadRecord:
    converted: bool
    counts: Mapping[str, int]
    """Engagement rule id -> occurrences (caps applied) before the outcome / as-of time."""
    fit: Mapping[str, str | None]
    """Fit criterion -> the value the lead has (as :func:`fit_values` reports it)."""


@dataclass(frozen=True, slots=True)
class PointsRow:
    kind: Literal["engagement", "fit"]
    key: str
    """The rule id, or ``criterion=value`` for a fit value."""
    path: Path
    current: float
    proposed: float
    support: int
    """Leads that have the rule / value."""
    converters: int
    """Of those, leads that reached the outcome."""
    lift: float | None
    """Conversion rate of leads with it / conversion rate of leads without it."""
    coefficient: float | None
    """Log-odds per occurrence (engagement) or for having the value (fit); None: not fitted."""
    reason: str


@dataclass(frozen=True, slots=True)
class Proposal:
    rows: tuple[PointsRow, ...]
    leads: int
    converters: int
    threshold_current: float
    threshold_proposed: float
    mql_current: int
    mql_proposed: int
    auc_current: float
    auc_proposed: float

    def changes(self, model: LeadModel) -> dict[Path, float]:
        """Key path -> new value, for :func:`leadflow.core.model_edit.edit`."""
        out: dict[Path, float] = {r.path: r.proposed for r in self.rows if r.proposed != r.current}
        if self.threshold_proposed != self.threshold_current:
            out[mql_threshold_path(model)] = self.threshold_proposed
        return out


def fit_values(profile: LeadProfile, model: LeadModel) -> dict[str, str | None]:
    """Fit criterion -> the value of ``profile`` that the model's fit rules read."""
    return {
        c.criterion: c.value
        for c in score_fit(profile, model).contributions
        if c.criterion in FIT_CRITERIA
    }


def _fit_slots(model: LeadModel) -> dict[tuple[str, str], tuple[Path, float]]:
    """(criterion, value as score_fit reports it) -> (key path of its points, points)."""
    spec = model.spec.fit
    slots: dict[tuple[str, str], tuple[Path, float]] = {}
    for key, points in spec.industry.items():
        slots[("industry", _normal_key(key))] = (("fit", "industry", key), points)
    for i, band in enumerate(spec.company_size):
        slots[("company_size", band.label)] = (("fit", "company_size", i, "points"), band.points)
    for i, level in enumerate(spec.title_seniority):
        slots[("title_seniority", level.label)] = (
            ("fit", "title_seniority", i, "points"),
            level.points,
        )
    for key, points in spec.country.items():
        slots[("country", key.strip().upper())] = (("fit", "country", key), points)
    return slots


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else math.nan


def _threshold_for(scores: np.ndarray, count: int, current: float) -> float:
    """The highest whole threshold that at least ``count`` scores reach (equal scores can
    add more); ``current`` when it already gives exactly ``count`` or nobody is an MQL."""
    if count <= 0 or len(scores) == 0 or int((scores >= current).sum()) == count:
        return current
    nth = float(np.sort(scores)[::-1][min(count, len(scores)) - 1])
    return float(max(1, math.floor(nth)))


def _scale(current: Sequence[float], coefs: Sequence[float]) -> float:
    top = max((abs(c) for c in coefs), default=0.0)
    reach = max((abs(p) for p in current), default=0.0)
    return reach / top if top > 0 and reach > 0 else 0.0


def propose(
    model: LeadModel,
    records: Sequence[LeadRecord],
    *,
    min_support: int = MIN_SUPPORT,
    regularisation: float = 1.0,
) -> Proposal:
    """Points and MQL threshold proposed from ``records`` (see the module docstring)."""
    y = np.array([r.converted for r in records], dtype=np.int64)
    n, converters = len(records), int(y.sum())
    if converters == 0 or converters == n:
        raise CalibrationError(
            f"{n} leads, {converters} reached the outcome: both converters and "
            "non-converters are needed"
        )
    threshold = model.mql_threshold
    if threshold is None:
        raise CalibrationError("the hand-off stage has no score condition to calibrate")
    rules = model.spec.engagement.rules
    counts = np.array(
        [[r.counts.get(rule.id, 0) for rule in rules] for r in records], dtype=np.float64
    ).reshape(n, len(rules))
    slots = _fit_slots(model)
    fit_keys = sorted(slots)
    has = np.array(
        [[r.fit.get(c) == v for c, v in fit_keys] for r in records], dtype=np.float64
    ).reshape(n, len(fit_keys))

    def stats(column: np.ndarray) -> tuple[int, int, float | None]:
        on = column > 0
        support, conv = int(on.sum()), int(y[on].sum())
        rest = n - support
        if support == 0 or rest == 0:
            return support, conv, None
        rate_on, rate_off = conv / support, (converters - conv) / rest
        return support, conv, (rate_on / rate_off if rate_off > 0 else math.inf)

    def usable(column: np.ndarray, *, both_sides: bool) -> bool:
        on = column > 0
        if int(on.sum()) < min_support:
            return False
        if both_sides:  # a yes/no value: enough leads without it, too
            return int((~on).sum()) >= min_support
        return bool(column.std() > 0)  # a count: it must vary

    eng_cols = [i for i in range(len(rules)) if usable(counts[:, i], both_sides=False)]
    fit_cols = [j for j in range(len(fit_keys)) if usable(has[:, j], both_sides=True)]
    x = np.hstack([counts[:, eng_cols], has[:, fit_cols]])
    coefs = np.zeros(x.shape[1])
    if x.shape[1]:
        std = x.std(axis=0)
        std[std == 0] = 1.0
        mean = x.mean(axis=0)
        clf = LogisticRegression(C=regularisation, max_iter=2000)
        clf.fit((x - mean) / std, y)
        coefs = clf.coef_[0] / std
    eng_coef = dict(zip(eng_cols, coefs[: len(eng_cols)], strict=True))
    fit_coef = dict(zip(fit_cols, coefs[len(eng_cols) :], strict=True))
    # Engagement: the points all leads earned from the fitted rules stay the same in total.
    occurrences = counts.sum(axis=0)
    earned = sum(rules[i].points * occurrences[i] for i in eng_cols if rules[i].points > 0)
    credited = sum(float(c) * occurrences[i] for i, c in eng_coef.items() if c > 0)
    k_e = float(earned / credited) if credited > 0 and earned > 0 else 0.0
    k_f = _scale([slots[fit_keys[j]][1] for j in fit_cols], list(fit_coef.values()))

    rows: list[PointsRow] = []
    for i, rule in enumerate(rules):
        support, conv, lift = stats(counts[:, i])
        coef = eng_coef.get(i)
        if coef is None:
            proposed = rule.points
            why = f"kept: fewer than {min_support} leads have it, or its count never varies"
        elif k_e == 0:
            proposed, why = rule.points, "kept: no fitted rule earns points to scale by"
        else:
            proposed = float(round(k_e * float(coef)))
            why = f"log-odds {float(coef):+.3f} per occurrence"
        rows.append(
            PointsRow(
                kind="engagement",
                key=rule.id,
                path=rule_points_path(model, rule.id),
                current=rule.points,
                proposed=proposed,
                support=support,
                converters=conv,
                lift=lift,
                coefficient=None if coef is None else float(coef),
                reason=why,
            )
        )
    for j, (criterion, value) in enumerate(fit_keys):
        path, points = slots[(criterion, value)]
        support, conv, lift = stats(has[:, j])
        coef = fit_coef.get(j)
        if coef is None:
            proposed, why = points, f"kept: fewer than {min_support} leads with or without it"
        elif k_f == 0:
            proposed, why = points, "kept: no fitted fit value has points to scale by"
        else:
            proposed = float(round(k_f * float(coef)))
            why = f"log-odds {float(coef):+.3f}"
        rows.append(
            PointsRow(
                kind="fit",
                key=f"{criterion}={value}",
                path=path,
                current=points,
                proposed=proposed,
                support=support,
                converters=conv,
                lift=lift,
                coefficient=None if coef is None else float(coef),
                reason=why,
            )
        )
    current_points = np.array([rule.points for rule in rules], dtype=np.float64)
    new_points = np.array([r.proposed for r in rows[: len(rules)]], dtype=np.float64)
    before = counts @ current_points
    after = counts @ new_points
    mql_current = int((before >= threshold).sum())
    new_threshold = _threshold_for(after, mql_current, threshold)
    return Proposal(
        rows=tuple(rows),
        leads=n,
        converters=converters,
        threshold_current=threshold,
        threshold_proposed=new_threshold,
        mql_current=mql_current,
        mql_proposed=int((after >= new_threshold).sum()),
        auc_current=_auc(y, before),
        auc_proposed=_auc(y, after),
    )


def at_capacity(
    converted: Sequence[bool], scores: Sequence[float], capacity: int
) -> tuple[float | None, float | None]:
    """Precision and recall when sales works the ``capacity`` highest-scored leads: the share
    of them that converted, and the share of all converters among them. Leads tied at the
    cut share the places left pro rata (the expected figure when sales picks among equals at
    random), so the result does not depend on the order of the leads. ``None`` when there
    is no place or no converter to measure."""
    y = np.asarray(converted, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    k = min(int(capacity), len(y))
    total = float(y.sum())
    if k <= 0 or total == 0:
        return None, None
    cut = float(np.sort(s)[::-1][k - 1])
    above, tied = s > cut, s == cut
    hits = float(y[above].sum()) + (k - int(above.sum())) * float(y[tied].sum()) / int(tied.sum())
    return hits / k, hits / total


__all__ = [
    "FIT_CRITERIA",
    "MIN_SUPPORT",
    "CalibrationError",
    "LeadRecord",
    "PointsRow",
    "Proposal",
    "at_capacity",
    "fit_values",
    "propose",
]
