"""Threshold calibration from sales outcomes (seed 003: "if sales says many aren't ready,
change the threshold").

Pure: hand-offs with their engagement score, the MQL rule that made them and what sales
did with them go in; acceptance and win rates by score band and by rule, and the lowest
MQL score threshold that reaches a target acceptance rate within sales capacity, come out.
Likewise for qualified hand-offs (sales' BANT at ``qualify``): win rates by qualification
score band and the lowest BANT hand-off threshold whose opportunities reach a target win rate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar


class _HasScore(Protocol):
    @property
    def score(self) -> float: ...


_Scored = TypeVar("_Scored", bound=_HasScore)

DEFAULT_BANDS: tuple[float, ...] = (100, 120, 150, 200)
Decision = Literal["accepted", "rejected"] | None
Outcome = Literal["won", "lost"] | None


@dataclass(frozen=True, slots=True)
class HandOff:
    """One MQL handed to sales: its score at hand-off, the rule that made it an MQL and the
    outcome so far (``None``: not decided / not closed yet)."""

    lead_id: int
    score: float
    rule: str
    decision: Decision = None
    outcome: Outcome = None
    score_made: bool = False
    """The MQL came from the score criterion (a threshold change would affect it)."""


@dataclass(frozen=True, slots=True)
class RateRow:
    group: str
    handoffs: int
    accepted: int
    rejected: int
    won: int
    lost: int

    @property
    def acceptance_rate(self) -> float | None:
        decided = self.accepted + self.rejected
        return self.accepted / decided if decided else None

    @property
    def win_rate(self) -> float | None:
        closed = self.won + self.lost
        return self.won / closed if closed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "handoffs": self.handoffs,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "acceptance_rate": self.acceptance_rate,
            "won": self.won,
            "lost": self.lost,
            "win_rate": self.win_rate,
        }


def _fmt(edge: float) -> str:
    return str(int(edge)) if float(edge).is_integer() else f"{edge:g}"


def band_labels(edges: Sequence[float] = DEFAULT_BANDS) -> list[str]:
    """``<100``, ``100-119``, ``120-149``, ``150-199``, ``200+`` for the default edges."""
    labels = [f"<{_fmt(edges[0])}"]
    for lo, hi in itertools.pairwise(edges):
        top = hi - 1 if float(lo).is_integer() and float(hi).is_integer() else hi
        labels.append(f"{_fmt(lo)}-{_fmt(top)}")
    labels.append(f"{_fmt(edges[-1])}+")
    return labels


def band_of(score: float, edges: Sequence[float] = DEFAULT_BANDS) -> str:
    labels = band_labels(edges)
    for i, edge in enumerate(edges):
        if score < edge:
            return labels[i]
    return labels[-1]


def _by_band(items: Iterable[_Scored], edges: Sequence[float]) -> dict[str, list[_Scored]]:
    """Items grouped by the band of their ``score``: every band, in order, even when empty."""
    groups: dict[str, list[_Scored]] = {label: [] for label in band_labels(edges)}
    for item in items:
        groups[band_of(item.score, edges)].append(item)
    return groups


def _row(group: str, items: Sequence[HandOff]) -> RateRow:
    return RateRow(
        group=group,
        handoffs=len(items),
        accepted=sum(1 for h in items if h.decision == "accepted"),
        rejected=sum(1 for h in items if h.decision == "rejected"),
        won=sum(1 for h in items if h.outcome == "won"),
        lost=sum(1 for h in items if h.outcome == "lost"),
    )


def rates_by_band(
    handoffs: Iterable[HandOff], edges: Sequence[float] = DEFAULT_BANDS
) -> list[RateRow]:
    """One row per score band (every band, in order, even when empty)."""
    return [_row(label, items) for label, items in _by_band(handoffs, edges).items()]


def rates_by_rule(handoffs: Iterable[HandOff]) -> list[RateRow]:
    groups: dict[str, list[HandOff]] = {}
    for h in handoffs:
        groups.setdefault(h.rule, []).append(h)
    return [_row(rule, groups[rule]) for rule in sorted(groups)]


@dataclass(frozen=True, slots=True)
class Recommendation:
    current: float | None
    threshold: float | None
    """The recommended MQL score threshold (``None``: no threshold reaches the target)."""
    acceptance_rate: float | None
    """Acceptance of the hand-offs the threshold keeps."""
    target: float
    mqls_per_day: float | None
    capacity_per_day: int
    within_capacity: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "threshold": self.threshold,
            "acceptance_rate": self.acceptance_rate,
            "target": self.target,
            "mqls_per_day": self.mqls_per_day,
            "capacity_per_day": self.capacity_per_day,
            "within_capacity": self.within_capacity,
            "reason": self.reason,
        }


def kept(handoffs: Iterable[HandOff], threshold: float) -> list[HandOff]:
    """The hand-offs an MQL score threshold keeps: score-made MQLs at or above it, and every
    MQL another rule (an event, a fastpass) made."""
    return [h for h in handoffs if not h.score_made or h.score >= threshold]


def _acceptance(items: Sequence[HandOff]) -> tuple[float | None, int]:
    accepted = sum(1 for h in items if h.decision == "accepted")
    decided = accepted + sum(1 for h in items if h.decision == "rejected")
    return (accepted / decided if decided else None), decided


def recommend_threshold(
    handoffs: Sequence[HandOff],
    mql_scores: Sequence[tuple[float, bool]],
    *,
    current: float | None,
    target: float = 0.70,
    capacity_per_day: int,
    working_days: int,
    min_decided: int = 1,
) -> Recommendation:
    """The lowest MQL score threshold whose kept hand-offs reach ``target`` acceptance (at
    least ``min_decided`` decided), raised if needed until the MQLs it would have made
    (``mql_scores``: each historical MQL's score and whether the score made it) fit the
    team's daily capacity over ``working_days``. Candidates are the whole numbers at the
    observed scores, never below the current threshold's floor of 0."""
    if not 0 < target <= 1:
        raise ValueError("target: must be in (0, 1]")
    days = max(working_days, 1)

    def per_day(threshold: float) -> float:
        return sum(1 for s, made in mql_scores if not made or s >= threshold) / days

    candidates = sorted(
        {float(math.floor(h.score)) for h in handoffs if h.score_made}
        | ({float(current)} if current is not None else set())
    )
    reached: float | None = None
    rate: float | None = None
    for t in candidates:
        rate_t, decided = _acceptance(kept(handoffs, t))
        if rate_t is not None and decided >= min_decided and rate_t >= target:
            reached, rate = t, rate_t
            break
    if reached is None:
        return Recommendation(
            current=current,
            threshold=None,
            acceptance_rate=None,
            target=target,
            mqls_per_day=None,
            capacity_per_day=capacity_per_day,
            within_capacity=False,
            reason=(
                f"no score threshold reaches {target:.0%} acceptance: the MQLs other rules "
                "make (events, fastpass) or too few decided hand-offs hold it down"
            ),
        )
    threshold = reached
    reason = f"lowest threshold whose hand-offs reach {target:.0%} acceptance"
    if per_day(threshold) > capacity_per_day:
        fitting = [
            float(math.floor(s))
            for s, made in sorted(mql_scores)
            if made and s >= threshold and per_day(float(math.floor(s))) <= capacity_per_day
        ]
        if fitting:
            threshold = fitting[0]
            rate = _acceptance(kept(handoffs, threshold))[0] or rate
            reason += f"; raised to {_fmt(threshold)} to fit {capacity_per_day} a day"
        else:
            reason += f"; no threshold fits {capacity_per_day} a day (other rules alone exceed it)"
    load = per_day(threshold)
    return Recommendation(
        current=current,
        threshold=threshold,
        acceptance_rate=rate,
        target=target,
        mqls_per_day=load,
        capacity_per_day=capacity_per_day,
        within_capacity=load <= capacity_per_day,
        reason=reason,
    )


# --------------------------------------------------------------------------- hand-off (BANT)

QUALIFICATION_BANDS: tuple[float, ...] = (50, 75, 90)
DEFAULT_WIN_TARGET = 0.30


@dataclass(frozen=True, slots=True)
class Qualified:
    """One qualified hand-off (sales' ``qualify`` with BANT): its qualification score (0-100)
    and what became of the opportunity it opened (``None``: still open or none found)."""

    lead_id: int
    score: float
    outcome: Outcome = None


@dataclass(frozen=True, slots=True)
class WinRow:
    group: str
    opportunities: int
    won: int
    lost: int

    @property
    def open(self) -> int:
        return self.opportunities - self.won - self.lost

    @property
    def win_rate(self) -> float | None:
        closed = self.won + self.lost
        return self.won / closed if closed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "opportunities": self.opportunities,
            "won": self.won,
            "lost": self.lost,
            "open": self.open,
            "win_rate": self.win_rate,
        }


def _win_row(group: str, items: Sequence[Qualified]) -> WinRow:
    return WinRow(
        group=group,
        opportunities=len(items),
        won=sum(1 for q in items if q.outcome == "won"),
        lost=sum(1 for q in items if q.outcome == "lost"),
    )


def win_rates_by_band(
    qualified: Iterable[Qualified], edges: Sequence[float] = QUALIFICATION_BANDS
) -> list[WinRow]:
    """One row per qualification score band (every band, in order, even when empty)."""
    return [_win_row(label, items) for label, items in _by_band(qualified, edges).items()]


@dataclass(frozen=True, slots=True)
class HandoffRecommendation:
    current: float | None
    threshold: float | None
    """The recommended BANT hand-off threshold (``None``: no threshold reaches the target)."""
    win_rate: float | None
    """Win rate of the closed opportunities the threshold keeps."""
    opportunities: int
    """Qualified hand-offs the threshold keeps (open ones included)."""
    closed: int
    target: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "threshold": self.threshold,
            "win_rate": self.win_rate,
            "opportunities": self.opportunities,
            "closed": self.closed,
            "target": self.target,
            "reason": self.reason,
        }


def recommend_handoff_threshold(
    qualified: Sequence[Qualified],
    *,
    current: float | None,
    target: float = DEFAULT_WIN_TARGET,
    min_closed: int = 1,
) -> HandoffRecommendation:
    """The lowest BANT hand-off threshold whose kept opportunities (qualification score at or
    above it) reach ``target`` win rate, with at least ``min_closed`` of them won or lost.
    Candidates are the whole numbers at the observed scores and the current threshold,
    within 0-100."""
    if not 0 < target <= 1:
        raise ValueError("win target: must be in (0, 1]")
    candidates = sorted(
        {min(max(float(math.floor(q.score)), 0.0), 100.0) for q in qualified}
        | ({float(current)} if current is not None else set())
    )
    for t in candidates:
        row = _win_row("kept", [q for q in qualified if q.score >= t])
        closed = row.won + row.lost
        if closed >= max(min_closed, 1) and row.win_rate is not None and row.win_rate >= target:
            return HandoffRecommendation(
                current=current,
                threshold=t,
                win_rate=row.win_rate,
                opportunities=row.opportunities,
                closed=closed,
                target=target,
                reason=f"lowest BANT threshold whose opportunities reach {target:.0%} win rate",
            )
    return HandoffRecommendation(
        current=current,
        threshold=None,
        win_rate=None,
        opportunities=0,
        closed=0,
        target=target,
        reason=(
            f"no BANT threshold reaches {target:.0%} win rate: too few closed opportunities "
            "or too few won at any qualification score"
        ),
    )
