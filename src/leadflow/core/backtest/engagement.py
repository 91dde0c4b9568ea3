"""Engagement scores as columns: counted occurrences, the score at ``as_of`` and at each
event's own time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from leadflow.core.backtest.prepare import _match, _Prepared, _segmented_cumsum
from leadflow.core.backtest.tables import _EPOCH, MAX_HALF_LIVES, US_PER_DAY
from leadflow.core.config import LeadModel


def _half_life(model: LeadModel, rule_index: int) -> float | None:
    rule = model.spec.engagement.rules[rule_index]
    if not rule.decay:
        return None
    return rule.half_life_days or model.spec.engagement.half_life_days


@dataclass(frozen=True)
class _Occurrences:
    """Counted occurrences (after caps), as parallel arrays: the event row, the points,
    the half-life in days (NaN: no decay)."""

    rows: np.ndarray
    points: np.ndarray
    half_life: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def _occurrences(model: LeadModel, prep: _Prepared) -> _Occurrences:
    rules = model.spec.engagement.rules
    empty = np.zeros(0, dtype=np.int64)
    if not rules:
        return _Occurrences(empty, np.zeros(0), np.zeros(0))
    code, day = prep.code, prep.day
    rows_parts, points_parts, hl_parts = [], [], []
    for i, rule in enumerate(rules):
        rows = np.flatnonzero(_match(rule.match, prep))
        if len(rows) == 0:
            continue
        keep = np.ones(len(rows), dtype=bool)
        c = code[rows]
        if rule.max_per_day is not None:
            d = day[rows]
            start = np.ones(len(rows), dtype=bool)
            start[1:] = (c[1:] != c[:-1]) | (d[1:] != d[:-1])
            keep = _rank_in_run(start) < rule.max_per_day
        if rule.max_total is not None:
            start = np.ones(len(rows), dtype=bool)
            start[1:] = c[1:] != c[:-1]
            counted = np.cumsum(keep)
            before = np.maximum.accumulate(np.where(start, counted - keep, 0))
            keep = keep & (counted - before <= rule.max_total)
        rows = rows[keep]
        hl = _half_life(model, i)
        rows_parts.append(rows)
        points_parts.append(np.full(len(rows), float(rule.points)))
        hl_parts.append(np.full(len(rows), np.nan if hl is None else float(hl)))
    if not rows_parts:
        return _Occurrences(empty, np.zeros(0), np.zeros(0))
    return _Occurrences(
        np.concatenate(rows_parts), np.concatenate(points_parts), np.concatenate(hl_parts)
    )


def _rank_in_run(start: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... restarting wherever ``start`` is true (the first element must be)."""
    index = np.arange(len(start))
    return index - np.maximum.accumulate(np.where(start, index, 0))


def _score_at_as_of(occ: _Occurrences, prep: _Prepared, n_leads: int) -> np.ndarray:
    if len(occ) == 0:
        return np.zeros(n_leads)
    as_of_us = int((prep.as_of - _EPOCH) / timedelta(microseconds=1))
    t = prep.t_us[occ.rows]
    age_days = ((as_of_us - t) / 1_000_000) / 86_400.0
    with np.errstate(invalid="ignore"):
        decayed = occ.points * np.power(0.5, age_days / occ.half_life)
    value = np.where(np.isnan(occ.half_life) | (t >= as_of_us), occ.points, decayed)
    return np.bincount(prep.code[occ.rows], weights=value, minlength=n_leads)


def _running_scores(
    occ: _Occurrences, prep: _Prepared
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: the engagement score at its own time over the events so far, the
    running positive-points ceiling, and per lead whether the rebasing would overflow."""
    n = len(prep.rows)
    n_leads = len(prep.first)
    score = np.zeros(n)
    overflow = np.zeros(n_leads, dtype=bool)
    if len(occ) == 0:
        return score, np.zeros(n), overflow
    positive = np.where(occ.points > 0, occ.points, 0.0)
    t0 = prep.t_us[prep.first][prep.code]  # each row's lead's first event time
    nan = np.isnan(occ.half_life)
    seg = prep.segments()
    ceiling = _segmented_cumsum(np.bincount(occ.rows, weights=positive, minlength=n), seg)
    if nan.any():
        v = np.bincount(occ.rows[nan], weights=occ.points[nan], minlength=n)
        score += _segmented_cumsum(v, seg)
    for half_life in np.unique(occ.half_life[~nan]).tolist():
        pick = occ.half_life == half_life
        s = (prep.t_us - t0) / (half_life * US_PER_DAY)
        big = s > MAX_HALF_LIVES
        if big.any():
            overflow[np.unique(prep.code[big])] = True
            s = np.minimum(s, MAX_HALF_LIVES)
        g_rows = occ.rows[pick]
        v = np.bincount(g_rows, weights=occ.points[pick] * np.exp2(s[g_rows]), minlength=n)
        score += _segmented_cumsum(v, seg) * np.exp2(-s)
    return score, ceiling, overflow
