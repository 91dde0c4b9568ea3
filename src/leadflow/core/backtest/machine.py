"""The stage machine on bits: criteria masks per event, one step per (stage, mask), the
stage history found in rounds."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from leadflow.core import conditions, lifecycle
from leadflow.core.backtest.prepare import _match, _Prepared
from leadflow.core.backtest.tables import SCORE_MARGIN
from leadflow.core.config import Condition, DeadEndRule, LeadModel
from leadflow.core.model import LeadProfile
from leadflow.core.scoring import has_term


@dataclass(frozen=True)
class _Criterion:
    target: str
    rule: str
    from_: frozenset[str]
    condition: Condition
    fastpass: bool


def _criteria(model: LeadModel) -> list[_Criterion]:
    found = [
        _Criterion(fp.to, f"fastpass.{fp.id}", frozenset(fp.from_), fp.when, True)
        for fp in model.spec.fastpass
    ]
    for name, spec in model.spec.stages.items():
        for i, cond in enumerate(spec.enter_when):
            found.append(
                _Criterion(
                    name, f"stages.{name}.enter_when[{i}]", model.criteria_from[name], cond, False
                )
            )
    return found


def _model_fallback_reason(model: LeadModel) -> str | None:
    """Why every lead must take the per-lead path under this model, or None."""
    criteria = _criteria(model)
    stages = model.spec.stages
    targets = {c.target for c in criteria}
    if model.spec.dead_end.rules:
        targets.add(model.dead_end_stage)
    if any(stages[t].recycle is not None for t in targets):
        return "model moves leads into a recycle stage automatically"
    unvectorised = conditions.fallback_reason([c.condition for c in criteria])
    if unvectorised is not None:
        return unvectorised
    if len(criteria) + len(model.spec.dead_end.rules) > 63:
        return "model has more than 63 criteria"
    return None


def _step(model: LeadModel, criteria: list[_Criterion], stage: str, mask: int,
          n_dead: int) -> list[tuple[str, str]]:  # fmt: skip
    """One event's transitions from ``stage`` given which criteria hold (``lifecycle``'s
    ``evaluate``/``next_move``, on bits): the moves made, in order."""
    moves: list[tuple[str, str]] = []
    dead = model.dead_end_stage
    dead_rules = model.spec.dead_end.rules
    for _ in range(len(model.stages) + 1):
        if stage == dead:
            break
        if stage in model.dead_end_from:
            hit = next((r for k, r in enumerate(dead_rules) if mask >> k & 1), None)
            if hit is not None:
                moves.append((dead, f"dead_end.{hit.id}"))
                break
        floor = model.rank(stage)
        best: tuple[int, str, str] | None = None
        for k, crit in enumerate(criteria):
            if not mask >> (n_dead + k) & 1 or stage not in crit.from_:
                continue
            rank = model.rank(crit.target)
            if crit.target == stage or (floor >= 0 and rank <= floor):
                continue
            key = rank if rank >= 0 else len(model.stage_order)
            if best is None or key < best[0]:
                best = (key, crit.target, crit.rule)
        if best is None:
            break
        moves.append((best[1], best[2]))
        stage = best[1]
    return moves


@dataclass(frozen=True)
class _Rows:
    """The prepared table as :class:`leadflow.core.conditions.EventColumns` for one model
    (whose ``score:`` thresholds were evaluated into ``score_ok``)."""

    prep: _Prepared
    score_ok: Mapping[float, np.ndarray]

    def row_count(self) -> int:
        return len(self.prep.rows)

    def lookup(self, column: str, key: Hashable, test: Callable[[Any], bool]) -> np.ndarray:
        return self.prep.lookup(column, key, test)

    def effective(self, trait: str) -> tuple[np.ndarray, list[Any]]:
        return self.prep.effective(trait)

    def score_holds(self, threshold: float) -> np.ndarray:
        return self.score_ok[threshold]


def _condition(
    cond: Condition, prep: _Prepared, score_ok: Mapping[float, np.ndarray]
) -> np.ndarray:
    """Rows where a criterion holds (``lifecycle``'s ``holds``, on the effective profile):
    both read :mod:`leadflow.core.conditions`."""
    return conditions.rows_holding(cond, _Rows(prep, score_ok))


def _email_dead(rule: DeadEndRule, email: str) -> bool:
    """The e-mail tests of a dead-end rule (``lifecycle.dead_end_rule_matches``)."""
    if not email:
        return False
    domain = LeadProfile(id=0, email=email).email_domain
    if rule.email_domains and domain is not None:
        for listed in rule.email_domains:
            listed = listed.lower().lstrip("@")
            if domain == listed or domain.endswith("." + listed):
                return True
    return bool(rule.invalid_email and not lifecycle._EMAIL.match(email))


_PLAIN = r"^[\x21-\x7e]+$"
_EMAIL_RUST = r"^[^@\s]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"


def _emails_dead(rule: DeadEndRule, values: list[Any]) -> np.ndarray:
    """:func:`_email_dead` for many addresses: printable-ASCII ones (where Rust's and
    Python's regex, ``strip`` and ``lower`` agree) as columns, the rest one by one."""
    emails = pl.Series("e", values, dtype=pl.String)
    plain = emails.str.contains(_PLAIN).fill_null(False).to_numpy()
    out = np.zeros(len(values), dtype=bool)
    frame = pl.DataFrame({"e": emails})
    domain = pl.col("e").str.extract(r"@([^@]*)$", 1).str.to_lowercase()
    test = pl.lit(False)
    for listed in rule.email_domains or ():
        listed = listed.lower().lstrip("@")
        test = test | (domain == listed) | domain.str.ends_with("." + listed)
    if rule.invalid_email:
        test = test | ~pl.col("e").str.contains(_EMAIL_RUST)
    out[plain] = frame.select(test.fill_null(False)).to_series().to_numpy()[plain]
    for i in np.flatnonzero(~plain).tolist():
        out[i] = _email_dead(rule, values[i])
    return out


def _dead_end(rule: DeadEndRule, prep: _Prepared) -> np.ndarray:
    """Rows where a dead-end rule holds (any one of its tests)."""
    out = np.zeros(len(prep.rows), dtype=bool)
    if rule.title_contains:
        words = rule.title_contains
        key: tuple[str, ...] = ("title", repr(words))
        if key not in prep.memo:
            title, values = prep.effective("title")
            dead = [bool(v) and any(has_term(v, w) for w in words) for v in values]
            prep.memo[key] = np.array([*dead, False])[title]
        out |= prep.memo[key]
    if rule.email_domains or rule.invalid_email:
        key = ("email", repr(rule.email_domains), str(rule.invalid_email))
        if key not in prep.memo:
            email, values = prep.effective("email")
            prep.memo[key] = np.append(_emails_dead(rule, values), False)[email]
        out |= prep.memo[key]
    if rule.event is not None:
        out |= _match(rule.event, prep)
    return out


@dataclass(frozen=True)
class _Changes:
    """Stage changes found by the rounds: lead code, event row, walk entry per change."""

    lead_codes: np.ndarray
    rows: np.ndarray
    entries: np.ndarray
    walk_from: list[str]
    walk_to: list[str]
    walk_rule: list[str]

    def frame(self, prep: _Prepared, keep: np.ndarray) -> pl.DataFrame:
        order = np.lexsort((self.entries, self.rows, self.lead_codes))
        order = order[keep[self.lead_codes[order]]]
        rows = prep.rows[self.rows[order]]
        at = prep.frame["occurred_at"].gather(rows).dt.convert_time_zone("UTC")
        entries = pl.Series(self.entries[order])
        return pl.DataFrame(
            {
                "lead_id": prep.lead_ids[self.lead_codes[order]],
                "from_stage": pl.Series(self.walk_from, dtype=pl.String).gather(entries),
                "to_stage": pl.Series(self.walk_to, dtype=pl.String).gather(entries),
                "at": at.cast(pl.Datetime("us", "UTC")),
                "rule": pl.Series(self.walk_rule, dtype=pl.String).gather(entries),
                "cause": prep.frame["message_id"].gather(rows),
            },
            schema=CHANGE_COLUMNS,
        )


CHANGE_COLUMNS: dict[str, pl.DataType] = {
    "lead_id": pl.Int64(),
    "from_stage": pl.String(),
    "to_stage": pl.String(),
    "at": pl.Datetime("us", "UTC"),
    "rule": pl.String(),
    "cause": pl.String(),
}


def _distinct(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(masks, return_inverse=True)`` (non-negative masks), by counting when
    the masks are small."""
    top = int(masks.max()) if len(masks) else 0
    if top >= 1 << 22:
        return np.unique(masks, return_inverse=True)
    present = np.bincount(masks, minlength=top + 1) > 0
    uniq = np.flatnonzero(present)
    number = np.cumsum(present) - 1
    return uniq.astype(masks.dtype), number[masks]


def _vectorised_machine(
    model: LeadModel, prep: _Prepared, score: np.ndarray, ceiling: np.ndarray
) -> tuple[np.ndarray, _Changes, np.ndarray]:
    """Stage per lead (codes into ``model.stages``), the stage changes, and per lead
    whether the core must decide (a score too close to a threshold, still moving)."""
    criteria = _criteria(model)
    dead_rules = model.spec.dead_end.rules
    n_dead = len(dead_rules)
    n_leads = len(prep.first)
    thresholds = sorted({c.condition.score for c in criteria if c.condition.score is not None})
    score_ok: dict[float, np.ndarray] = {}
    close = np.zeros(n_leads, dtype=bool)
    rounded = np.round(score, 9)
    for thr in thresholds:
        score_ok[thr] = (ceiling >= thr) & (rounded >= thr)
        near = (ceiling >= thr) & (np.abs(score - thr) <= SCORE_MARGIN)
        if near.any():
            close[np.unique(prep.code[near])] = True
    bits = [_dead_end(rule, prep) for rule in dead_rules]
    bits += [_condition(c.condition, prep, score_ok) for c in criteria]
    masks = np.zeros(len(prep.rows), dtype=np.int64)
    for k, bit in enumerate(bits):
        masks |= bit.astype(np.int64) << k
    uniq, mask_id = _distinct(masks)
    stages = list(model.stages)
    stage_no = {s: i for i, s in enumerate(stages)}
    # One step for every (stage, distinct mask): the walk, flattened; pair = s * U + u.
    n_uniq = len(uniq)
    walk_len = np.zeros(len(stages) * n_uniq, dtype=np.int64)
    final_table = np.zeros(len(stages) * n_uniq, dtype=np.int64)
    walk_from: list[str] = []
    walk_to: list[str] = []
    walk_rule: list[str] = []
    for s, stage in enumerate(stages):
        for u, m in enumerate(uniq.tolist()):
            walk = _step(model, criteria, stage, int(m), n_dead)
            pair = s * n_uniq + u
            walk_len[pair] = len(walk)
            final_table[pair] = stage_no[walk[-1][0]] if walk else s
            here = stage
            for to, rule in walk:
                walk_from.append(here)
                walk_to.append(to)
                walk_rule.append(rule)
                here = to
    walk_start = np.concatenate(([0], np.cumsum(walk_len)[:-1]))
    moves_table = walk_len > 0
    stage_of = np.full(n_leads, stage_no[model.initial_stage], dtype=np.int64)
    last_row = np.full(n_leads, -1, dtype=np.int64)
    n = len(prep.code)
    lead_end = np.append(prep.first[1:], n)
    next_move: dict[int, np.ndarray] = {}

    def next_moving_row(stage: int) -> np.ndarray:
        """Per row: the first row at or after it whose step moves a lead in ``stage``
        (``n`` if none); computed for the stages leads are actually in."""
        if stage not in next_move:
            moving = moves_table[stage * n_uniq + mask_id]
            at = np.where(moving, np.arange(n), n)
            next_move[stage] = np.minimum.accumulate(at[::-1])[::-1]
        return next_move[stage]

    active = np.arange(n_leads)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(2 * len(stages) + 2):
        if len(active) == 0:
            break
        start = np.maximum(last_row[active] + 1, prep.first[active])
        cand = np.full(len(active), n, dtype=np.int64)
        current = stage_of[active]
        for stage in np.unique(current).tolist():
            pick = current == stage
            inside = start[pick] < lead_end[active[pick]]
            at = np.full(int(pick.sum()), n, dtype=np.int64)
            at[inside] = next_moving_row(stage)[start[pick][inside]]
            cand[pick] = at
        hit = cand < lead_end[active]
        leads_hit, at_rows = active[hit], cand[hit]
        if len(leads_hit) == 0:
            active = leads_hit
            break
        pairs = stage_of[leads_hit] * n_uniq + mask_id[at_rows]
        lens = walk_len[pairs]
        total = int(lens.sum())
        offsets = np.repeat(np.cumsum(lens) - lens, lens)
        entry = np.repeat(walk_start[pairs], lens) + (np.arange(total) - offsets)
        found.append((np.repeat(leads_hit, lens), np.repeat(at_rows, lens), entry))
        stage_of[leads_hit] = final_table[pairs]
        last_row[leads_hit] = at_rows
        active = leads_hit
    if len(active):
        close[active] = True  # still moving: let the core decide
    if found:
        lead_codes = np.concatenate([f[0] for f in found])
        rows = np.concatenate([f[1] for f in found])
        entries = np.concatenate([f[2] for f in found])
    else:
        lead_codes = rows = entries = np.zeros(0, dtype=np.int64)
    changes = _Changes(lead_codes, rows, entries, walk_from, walk_to, walk_rule)
    return stage_of, changes, close
