"""Stage conditions: one table that says what every key of a condition means.

A :class:`~leadflow.core.config.Condition` (a stage's ``enter_when``, a fastpass's
``when``) holds when every key it gives holds. Two evaluators read it: the stage machine
(:mod:`leadflow.core.lifecycle`, one lead at one event) and the vectorised backtest
(:mod:`leadflow.core.backtest`, every event of a table at once). Both go through the tables
here, so a key means the same thing to both:

- :data:`EVENT_FIELDS`: every key of :class:`~leadflow.core.config.EventMatch`, as tests on
  one value of the event (a column of the backtest's event table). The stage machine applies
  a test to the event's value, the backtest to each distinct value of the column: the same
  function decides.
- :data:`PROFILE_FIELDS`: every key of :class:`~leadflow.core.config.ProfileMatch`: how it
  is tested on a lead's profile, and how on the backtest's effective-profile columns, or
  (``vector`` is None) why the backtest hands leads to the per-lead core instead.
- :data:`CONDITION_FIELDS`: every key of :class:`~leadflow.core.config.Condition`.

Importing this module fails when a field of one of those models has no entry, so a new
condition key cannot be read as "always true" by one evaluator: add its entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from leadflow.core.config import Condition, EventMatch, LeadModel, ProfileMatch
from leadflow.core.model import Event, LeadProfile
from leadflow.core.scoring import _property_matches, path_matches, score_fit

Mask = np.ndarray[Any, np.dtype[np.bool_]]
ValueTest = Callable[[Any], bool]


# --------------------------------------------------------------------------- what each side knows


class LeadFacts(Protocol):
    """What the stage machine knows about a lead when an event arrives."""

    @property
    def model(self) -> LeadModel: ...

    @property
    def profile(self) -> LeadProfile: ...

    @property
    def ceiling(self) -> float:
        """Sum of the positive points counted so far (the score cannot exceed it)."""
        ...

    def score_at(self, at: datetime) -> float:
        """The engagement score at ``at``."""
        ...


class EventRows(Protocol):
    """What the vectorised backtest knows of events: every event of a table (rows in
    event-time order)."""

    def row_count(self) -> int: ...

    def lookup(self, column: str, key: Hashable, test: ValueTest) -> Mask:
        """``test`` of each row's value of ``column``; equal ``key`` means equal test."""
        ...


class EventColumns(EventRows, Protocol):
    """What the vectorised backtest knows for one model: the events, the effective profile
    after each, the engagement score at each."""

    def effective(self, trait: str) -> tuple[np.ndarray[Any, Any], list[Any]]:
        """Per row, the index of the profile trait's value after the event in the returned
        distinct values (``len(values)`` for null)."""
        ...

    def score_holds(self, threshold: float) -> Mask:
        """Rows where the engagement score at the event's time is at least ``threshold``
        (and the positive-points ceiling allows it)."""
        ...


# --------------------------------------------------------------------------- event keys


@dataclass(frozen=True)
class ColumnTest:
    """One test on one value of an event: ``column`` is the event attribute (or, when
    ``property``, the key in ``event.properties``) and the backtest's column."""

    column: str
    key: Hashable
    test: ValueTest
    property: bool = False

    def value(self, event: Event) -> Any:
        if self.property:
            return event.properties.get(self.column)
        return getattr(event, self.column)


@dataclass(frozen=True)
class EventField:
    name: str
    tests: Callable[[Any], Sequence[ColumnTest]]
    """The tests a given (non-null) value of the key makes."""


def _member(column: str) -> EventField:
    def tests(allowed: Sequence[Any]) -> Sequence[ColumnTest]:
        return (ColumnTest(column, ("in", repr(allowed)), lambda v: v in allowed),)

    return EventField(column, tests)


def _path(globs: Sequence[str]) -> Sequence[ColumnTest]:
    return (ColumnTest("path", ("glob", repr(globs)), lambda v: path_matches(v, globs)),)


def _properties(wanted: Mapping[str, Sequence[Any]]) -> Sequence[ColumnTest]:
    def test(allowed: Sequence[Any]) -> ValueTest:
        return lambda v: v is not None and _property_matches(v, allowed)

    return tuple(
        ColumnTest(key, ("property", repr(allowed)), test(allowed), property=True)
        for key, allowed in wanted.items()
    )


EVENT_FIELDS: Mapping[str, EventField] = {
    f.name: f
    for f in (
        _member("type"),
        _member("name"),
        EventField("path", _path),
        EventField("properties", _properties),
        _member("channel"),
        _member("utm_source"),
        _member("utm_medium"),
        _member("utm_campaign"),
    )
}

_compiled: dict[int, tuple[EventMatch, tuple[ColumnTest, ...]]] = {}


def column_tests(match: EventMatch) -> tuple[ColumnTest, ...]:
    """Every test ``match`` makes, in :data:`EVENT_FIELDS` order (kept per match)."""
    kept = _compiled.get(id(match))
    if kept is not None and kept[0] is match:
        return kept[1]
    tests: list[ColumnTest] = []
    for name, spec in EVENT_FIELDS.items():
        wanted = getattr(match, name)
        if wanted is not None:
            tests += spec.tests(wanted)
    if len(_compiled) >= 4096:
        _compiled.clear()
    _compiled[id(match)] = (match, tuple(tests))
    return tuple(tests)


def event_matches(match: EventMatch, event: Event) -> bool:
    """Does ``event`` satisfy every key of ``match``? (The stage machine's reading.)"""
    return all(t.test(t.value(event)) for t in column_tests(match))


def event_rows(match: EventMatch, rows: EventRows) -> Mask:
    """Rows whose event satisfies ``match`` (the backtest's reading)."""
    out = np.ones(rows.row_count(), dtype=bool)
    for t in column_tests(match):
        out &= rows.lookup(t.column, t.key, t.test)
    return out


# --------------------------------------------------------------------------- profile keys


@dataclass(frozen=True)
class ProfileField:
    name: str
    scalar: Callable[[Any, LeadProfile, LeadModel], bool]
    """Does the profile satisfy the key's (non-null) value?"""
    vector: Callable[[Any, EventColumns], Mask] | None
    """The same per backtest row, on the effective profile; None: not vectorised."""
    fallback: str | None = None
    """Why the backtest replays every lead through the core when a model uses the key."""


def _trait_rows(rows: EventColumns, trait: str, test: ValueTest) -> Mask:
    codes, values = rows.effective(trait)
    table = np.array([bool(test(v)) for v in values] + [False], dtype=bool)
    result: Mask = table[codes]
    return result


def _has_contact_rows(want: bool, rows: EventColumns) -> Mask:
    has = _trait_rows(rows, "email", bool) | _trait_rows(rows, "phone", bool)
    result: Mask = has == want
    return result


def _target_rows(want: bool, rows: EventColumns) -> Mask:
    result: Mask = _trait_rows(rows, "is_target_account", bool) == want
    return result


PROFILE_FIELDS: Mapping[str, ProfileField] = {
    f.name: f
    for f in (
        ProfileField(
            "has_contact",
            lambda want, prof, _model: prof.has_contact == want,
            _has_contact_rows,
        ),
        ProfileField(
            "consent",
            lambda want, prof, _model: prof.consent in want,
            lambda want, rows: _trait_rows(rows, "consent", lambda v: v in want),
        ),
        ProfileField(
            "is_target_account",
            lambda want, prof, _model: prof.is_target_account == want,
            _target_rows,
        ),
        ProfileField(
            "fit_grade",
            lambda want, prof, model: score_fit(prof, model).grade in want,
            None,
            "model uses fit_grade conditions",
        ),
        ProfileField(
            "predicted_at_least",
            lambda want, prof, _model: prof.predicted is not None and prof.predicted >= want,
            None,
            "model uses predicted_at_least conditions",
        ),
    )
}


def profile_matches(want: ProfileMatch, profile: LeadProfile, model: LeadModel) -> bool:
    for name, spec in PROFILE_FIELDS.items():
        value = getattr(want, name)
        if value is not None and not spec.scalar(value, profile, model):
            return False
    return True


def profile_rows(want: ProfileMatch, rows: EventColumns) -> Mask:
    out = np.ones(rows.row_count(), dtype=bool)
    for name, spec in PROFILE_FIELDS.items():
        value = getattr(want, name)
        if value is None:
            continue
        if spec.vector is None:
            raise ValueError(f"profile.{name} has no vectorised form ({spec.fallback})")
        out &= spec.vector(value, rows)
    return out


# --------------------------------------------------------------------------- condition keys


@dataclass(frozen=True)
class ConditionField:
    name: str
    scalar: Callable[[Any, LeadFacts, Event], bool]
    vector: Callable[[Any, EventColumns], Mask]


def _score_holds(want: float, facts: LeadFacts, event: Event) -> bool:
    # the ceiling first: it is known without summing the decayed score
    return facts.ceiling >= want and facts.score_at(event.occurred_at) >= want


CONDITION_FIELDS: Mapping[str, ConditionField] = {
    f.name: f
    for f in (
        # cheapest first: the stage machine stops at the first key that fails
        ConditionField(
            "event",
            lambda want, _facts, event: event_matches(want, event),
            event_rows,
        ),
        ConditionField(
            "profile",
            lambda want, facts, _event: profile_matches(want, facts.profile, facts.model),
            profile_rows,
        ),
        ConditionField("score", _score_holds, lambda want, rows: rows.score_holds(want)),
    )
}


def holds(cond: Condition, facts: LeadFacts, event: Event) -> bool:
    """Does ``cond`` hold for the lead at ``event``? (The stage machine's reading.)"""
    for name, spec in CONDITION_FIELDS.items():
        value = getattr(cond, name)
        if value is not None and not spec.scalar(value, facts, event):
            return False
    return True


def rows_holding(cond: Condition, rows: EventColumns) -> Mask:
    """Rows where ``cond`` holds (the backtest's reading); see :func:`fallback_reason`."""
    out = np.ones(rows.row_count(), dtype=bool)
    for name, spec in CONDITION_FIELDS.items():
        value = getattr(cond, name)
        if value is not None:
            out &= spec.vector(value, rows)
    return out


def fallback_reason(conditions: Sequence[Condition]) -> str | None:
    """Why the backtest cannot vectorise these conditions (the first key, in table order,
    that one of them uses and that has no vectorised form), or None."""
    for name, spec in PROFILE_FIELDS.items():
        if spec.vector is not None:
            continue
        if any(c.profile is not None and getattr(c.profile, name) is not None for c in conditions):
            return spec.fallback or f"model uses {name} conditions"
    return None


# --------------------------------------------------------------------------- completeness


def _check_complete(model: type[BaseModel], table: Mapping[str, object], where: str) -> None:
    fields, entries = set(model.model_fields), set(table)
    if fields != entries:
        missing, stale = sorted(fields - entries), sorted(entries - fields)
        raise TypeError(
            f"leadflow.core.conditions.{where} does not match {model.__name__}: "
            f"no entry for {missing or 'none'}, entries for unknown {stale or 'none'}. "
            "Every condition key needs a scalar and a vectorised reading (or a fallback)."
        )


def check_registry() -> None:
    """Raise unless every field of the condition models has exactly one entry."""
    _check_complete(Condition, CONDITION_FIELDS, "CONDITION_FIELDS")
    _check_complete(EventMatch, EVENT_FIELDS, "EVENT_FIELDS")
    _check_complete(ProfileMatch, PROFILE_FIELDS, "PROFILE_FIELDS")
    for spec in PROFILE_FIELDS.values():
        if spec.vector is None and not spec.fallback:
            raise TypeError(f"PROFILE_FIELDS[{spec.name!r}]: no vectorised form and no fallback")


check_registry()

__all__ = [
    "CONDITION_FIELDS",
    "EVENT_FIELDS",
    "PROFILE_FIELDS",
    "ColumnTest",
    "ConditionField",
    "EventColumns",
    "EventField",
    "EventRows",
    "LeadFacts",
    "ProfileField",
    "check_registry",
    "column_tests",
    "event_matches",
    "event_rows",
    "fallback_reason",
    "holds",
    "profile_matches",
    "profile_rows",
    "rows_holding",
]
