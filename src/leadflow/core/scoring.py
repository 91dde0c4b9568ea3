"""Lead scores: engagement (behaviour), fit (ICP) and qualification (BANT), with reasons.

Engagement
----------
The score is a function of the *set* of a lead's events (deduplicated by ``message_id``, the
first copy wins) and of the time ``as_of`` it is evaluated at; arrival order never matters.

- Events are taken in event-time order: by ``(occurred_at, message_id)``. Only events with
  ``occurred_at <= as_of`` count.
- Every rule whose ``match`` holds for an event scores it (several rules may score one
  event: a ``/product/x`` page is a page view *and* a product page).
- Caps count *occurrences*: a rule scores at most ``max_per_day`` events per UTC calendar
  day and ``max_total`` events ever. The earliest events in event-time order are the ones
  that count, so whether an event counts depends only on the events before it: adding a
  later event never changes an earlier one, and the score of a prefix is the score of
  the whole set at the prefix's end.
- Decay: each occurrence is worth ``points * 0.5 ** (age_days / half_life_days)`` at
  ``as_of``; the half-life is the rule's own or ``engagement.half_life_days``; a rule with
  ``decay: false`` (or a model without a half-life) never decays. Negative points
  (unsubscribe, careers page) decay the same way unless the rule says otherwise.
- The total is summed in event-time order and rounded to 9 decimals, so the incremental
  fold and a batch recompute produce bit-identical numbers.

Fit is 0-100 from industry, company size band, title seniority, country and the
target-account flag (points add up, clamped), then a grade (A-D by default).
Qualification is BANT: each criterion's level (0-1) times its weight (weights add up to
100), compared with the hand-off threshold (75 by default).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from leadflow.core.config import (
    BANT_CRITERIA,
    AttributeFitRule,
    EngagementRule,
    EventMatch,
    LeadModel,
)
from leadflow.core.model import (
    Bant,
    EngagementScore,
    Event,
    FitContribution,
    FitScore,
    LeadProfile,
    QualificationContribution,
    QualificationScore,
    RuleContribution,
)

SECONDS_PER_DAY = 86_400.0
_TOKEN = re.compile(r"[^\W_]+")


# --------------------------------------------------------------------------- matching


def event_key(event: Event) -> tuple[datetime, int, str]:
    """Event-time order: the order every fold and recompute processes events in."""
    return (event.occurred_at, 0, event.message_id)


def _in(value: Any, allowed: Sequence[Any] | None) -> bool:
    return allowed is None or value in allowed


def _property_matches(value: Any, allowed: Sequence[Any]) -> bool:
    if isinstance(value, str):
        return value in allowed or value.lower() in allowed
    return any(value == a and type(value) is type(a) for a in allowed)


def path_matches(path: str | None, patterns: Sequence[str]) -> bool:
    """Glob match (``/product/*``) on a normalised URL path, case-insensitive."""
    if path is None:
        return False
    return any(fnmatchcase(path, p.lower().rstrip("/") or "/") for p in patterns)


def event_matches(match: EventMatch, event: Event) -> bool:
    if not _in(event.type, match.type) or not _in(event.name, match.name):
        return False
    if match.path is not None and not path_matches(event.path, match.path):
        return False
    for attr in ("channel", "utm_source", "utm_medium", "utm_campaign"):
        if not _in(getattr(event, attr), getattr(match, attr)):
            return False
    for key, allowed in match.properties.items():
        if key not in event.properties or not _property_matches(event.properties[key], allowed):
            return False
    return True


@lru_cache(maxsize=65536)
def has_term(text: str | None, term: str) -> bool:
    """Does ``text`` contain ``term``? Latin terms match whole words (``cto`` is not found in
    ``director``); terms in other scripts (Korean) match as substrings."""
    if not text:
        return False
    lowered, wanted = text.lower(), term.lower().strip()
    if not wanted.isascii():
        return wanted in lowered
    tokens, needle = _TOKEN.findall(lowered), _TOKEN.findall(wanted)
    n = len(needle)
    return n > 0 and any(tokens[i : i + n] == needle for i in range(len(tokens) - n + 1))


# --------------------------------------------------------------------------- engagement


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One event counted by one rule (after caps, before decay)."""

    rule_id: str
    message_id: str
    at: datetime
    points: float
    half_life_days: float | None


def _half_life(rule: EngagementRule, model: LeadModel) -> float | None:
    if not rule.decay:
        return None
    return rule.half_life_days or model.spec.engagement.half_life_days


def decayed(points: float, half_life_days: float | None, at: datetime, as_of: datetime) -> float:
    if half_life_days is None or as_of <= at:
        return points
    age_days = (as_of - at).total_seconds() / SECONDS_PER_DAY
    factor: float = 0.5 ** (age_days / half_life_days)
    return points * factor


def total_at(occurrences: Iterable[Occurrence], as_of: datetime) -> float:
    """The engagement total at ``as_of`` of occurrences listed in event-time order."""
    total = 0.0
    for occ in occurrences:
        if occ.at <= as_of:
            total += decayed(occ.points, occ.half_life_days, occ.at, as_of)
    return round(total, 9)


def positive_ceiling(occurrences: Iterable[Occurrence]) -> float:
    """An upper bound of the total at any time (sum of positive points, undecayed)."""
    return sum(o.points for o in occurrences if o.points > 0)


class EngagementCounter:
    """Applies caps while events are fed in event-time order. Mutable; used by the fold."""

    def __init__(self, model: LeadModel, occurrences: Iterable[Occurrence] = ()) -> None:
        self.model = model
        self.occurrences: list[Occurrence] = []
        self._per_day: Counter[tuple[str, date]] = Counter()
        self._total: Counter[str] = Counter()
        for occ in occurrences:
            self._count(occ)

    def _count(self, occ: Occurrence) -> None:
        self.occurrences.append(occ)
        self._per_day[(occ.rule_id, occ.at.date())] += 1
        self._total[occ.rule_id] += 1

    def add(self, event: Event) -> tuple[list[Occurrence], list[str]]:
        """Score one event; return the new occurrences and the ids of rules capped."""
        counted: list[Occurrence] = []
        capped: list[str] = []
        for rule in self.model.spec.engagement.rules:
            if not event_matches(rule.match, event):
                continue
            day = event.occurred_at.date()
            if (
                rule.max_per_day is not None and self._per_day[(rule.id, day)] >= rule.max_per_day
            ) or (rule.max_total is not None and self._total[rule.id] >= rule.max_total):
                capped.append(rule.id)
                continue
            occ = Occurrence(
                rule.id,
                event.message_id,
                event.occurred_at,
                rule.points,
                _half_life(rule, self.model),
            )
            self._count(occ)
            counted.append(occ)
        return counted, capped


def dedupe(events: Iterable[Event]) -> list[Event]:
    """Drop repeated message ids (the first copy wins) and sort into event-time order."""
    seen: dict[str, Event] = {}
    for event in events:
        seen.setdefault(event.message_id, event)
    return sorted(seen.values(), key=event_key)


def score_engagement(events: Iterable[Event], as_of: datetime, model: LeadModel) -> EngagementScore:
    """The engagement score of a lead's events at ``as_of``, with every rule that fired."""
    counter = EngagementCounter(model)
    capped: Counter[str] = Counter()
    for event in dedupe(events):
        if event.occurred_at > as_of:
            break
        _, capped_ids = counter.add(event)
        capped.update(capped_ids)
    by_rule: dict[str, list[Occurrence]] = {}
    for occ in counter.occurrences:
        by_rule.setdefault(occ.rule_id, []).append(occ)
    contributions = []
    for rule in model.spec.engagement.rules:
        occs = by_rule.get(rule.id, [])
        if not occs and not capped[rule.id]:
            continue
        contributions.append(
            RuleContribution(
                rule_id=rule.id,
                points_before_decay=round(sum(o.points for o in occs), 9),
                points_after_decay=total_at(occs, as_of),
                message_ids=tuple(o.message_id for o in occs),
                occurrences=len(occs),
                capped=capped[rule.id],
            )
        )
    return EngagementScore(
        total=total_at(counter.occurrences, as_of),
        as_of=as_of,
        contributions=tuple(contributions),
        model_version=model.version,
    )


# --------------------------------------------------------------------------- fit


@lru_cache(maxsize=4096)
def _normal_key(value: str) -> str:
    # "IT & Software" -> "it_software", "Financial Services" -> "financial_services".
    return re.sub(r"[^0-9a-z가-힣]+", "_", value.strip().lower()).strip("_")


def attribute_matches(rule: AttributeFitRule, value: Any) -> bool:
    """Whether an attribute's value meets a ``fit.attributes`` rule."""
    if value is None:
        return False
    if rule.values is not None:
        wanted = {str(v).casefold() for v in rule.values}
        if str(value).casefold() not in wanted:
            return False
    if rule.min is not None or rule.max is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if rule.min is not None and value < rule.min:
            return False
        if rule.max is not None and value > rule.max:
            return False
    return True


def score_fit(profile: LeadProfile, model: LeadModel) -> FitScore:
    """ICP fit from lead and account attributes: 0-100 and a grade."""
    spec = model.spec.fit
    parts: list[FitContribution] = []
    if spec.industry:
        table = {_normal_key(k): v for k, v in spec.industry.items()}
        key = _normal_key(profile.industry) if profile.industry else None
        parts.append(
            FitContribution(criterion="industry", value=key, points=table.get(key or "", 0.0))
        )
    if spec.company_size:
        band = None
        if profile.employee_count is not None:
            band = next(
                (
                    b
                    for b in spec.company_size
                    if b.min <= profile.employee_count
                    and (b.max is None or profile.employee_count <= b.max)
                ),
                None,
            )
        parts.append(
            FitContribution(
                criterion="company_size",
                value=band.label if band else None,
                points=band.points if band else 0.0,
            )
        )
    if spec.title_seniority:
        level = next(
            (
                r
                for r in spec.title_seniority
                if any(has_term(profile.title, p) for p in r.patterns)
            ),
            None,
        )
        parts.append(
            FitContribution(
                criterion="title_seniority",
                value=level.label if level else None,
                points=level.points if level else 0.0,
            )
        )
    if spec.country:
        table = {k.upper(): v for k, v in spec.country.items()}
        code = profile.country.strip().upper() if profile.country else None
        parts.append(
            FitContribution(criterion="country", value=code, points=table.get(code or "", 0.0))
        )
    if spec.target_account:
        parts.append(
            FitContribution(
                criterion="target_account",
                value="yes" if profile.is_target_account else "no",
                points=spec.target_account if profile.is_target_account else 0.0,
            )
        )
    for rule in spec.attributes:
        value = profile.attributes.get(rule.name)
        hit = attribute_matches(rule, value)
        parts.append(
            FitContribution(
                criterion=f"attributes.{rule.name}",
                value=None if value is None else str(value),
                points=rule.points if hit else 0.0,
            )
        )
    score = round(min(100.0, max(0.0, sum(p.points for p in parts))), 9)
    grades = list(spec.grades.items())
    grade = next((name for name, low in grades if score >= low), grades[-1][0])
    return FitScore(
        score=score, grade=grade, contributions=tuple(parts), model_version=model.version
    )


# --------------------------------------------------------------------------- qualification


def bant_value(level: str | float | None, levels: Mapping[str, float], criterion: str) -> float:
    """A BANT answer as 0-1: a level name from the model, a number from 0 to 1, or None."""
    if level is None:
        return 0.0
    if isinstance(level, bool):
        return 1.0 if level else 0.0
    if isinstance(level, str):
        key = level.strip().lower()
        if key not in levels:
            raise ValueError(
                f"bant.{criterion}: unknown level '{level}' (known: {', '.join(levels)})"
            )
        return levels[key]
    if not 0 <= level <= 1:
        raise ValueError(f"bant.{criterion}: expected a number from 0 to 1")
    return float(level)


def score_qualification(bant: Bant, model: LeadModel) -> QualificationScore:
    """BANT with the model's weights: 0-100, ready for hand-off at the threshold."""
    spec = model.spec.qualification
    levels = {k.lower(): v for k, v in spec.levels.items()}
    parts = []
    for criterion in BANT_CRITERIA:
        level = getattr(bant, criterion)
        value = bant_value(level, levels, criterion)
        weight = getattr(spec.weights, criterion)
        parts.append(
            QualificationContribution(
                criterion=criterion, level=level, value=value, weight=weight, points=weight * value
            )
        )
    score = round(sum(p.points for p in parts), 9)
    return QualificationScore(
        score=score,
        threshold=spec.handoff_threshold,
        ready_for_handoff=score >= spec.handoff_threshold,
        contributions=tuple(parts),
        model_version=model.version,
    )
