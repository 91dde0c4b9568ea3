"""The backtest's input tables: events and profiles as Polars frames."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from leadflow.core import lifecycle
from leadflow.core.config import EventMatch, LeadModel
from leadflow.core.model import Event, LeadProfile

TRAITS = (
    "email",
    "phone",
    "title",
    "consent",
    "is_target_account",
    "industry",
    "country",
    "employee_count",
)
TRAIT_TYPES: dict[str, pl.DataType] = {
    "email": pl.String(),
    "phone": pl.String(),
    "title": pl.String(),
    "consent": pl.String(),
    "is_target_account": pl.Boolean(),
    "industry": pl.String(),
    "country": pl.String(),
    "employee_count": pl.Int64(),
}
BASE_COLUMNS: dict[str, pl.DataType] = {
    "lead_id": pl.Int64(),
    "message_id": pl.String(),
    "type": pl.String(),
    "name": pl.String(),
    "occurred_at": pl.Datetime("us", "UTC"),
    "path": pl.String(),
    "page_url": pl.String(),
    "channel": pl.String(),
    "utm_source": pl.String(),
    "utm_medium": pl.String(),
    "utm_campaign": pl.String(),
    **{f"set_{t}": TRAIT_TYPES[t] for t in TRAITS},
}
NEEDS_FALLBACK = "needs_fallback"
"""Optional boolean column: the row cannot be represented exactly (replay its lead)."""
SCORE_MARGIN = 1e-6
MAX_HALF_LIVES = 1000.0
US_PER_DAY = 86_400 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- input tables


@dataclass(frozen=True)
class EventTable:
    """Events as columns (see the module docs), with the original events if known.

    The table is read-only: the first :func:`evaluate`/:func:`compare` on it keeps its
    preparation (order, dictionaries, rule matches) for later calls with the same
    profiles frame and ``as_of``."""

    frame: pl.DataFrame
    originals: Mapping[int, Sequence[Event]] | None = None
    _prepared: list[Any] = field(default_factory=list, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.frame.height


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()
_SENTINEL = LeadProfile(
    id=0,
    **{t: _UNSET for t in TRAITS},
)


def referenced_properties(*models: LeadModel) -> list[str]:
    """Every event property key a model's matches test (engagement, criteria, dead end)."""
    keys: list[str] = []
    for model in models:
        for match in _all_matches(model):
            keys += [k for k in match.properties if k not in keys]
    return keys


def _all_matches(model: LeadModel) -> list[EventMatch]:
    spec = model.spec
    found = [r.match for r in spec.engagement.rules]
    conditions = [fp.when for fp in spec.fastpass]
    conditions += [c for stage in spec.stages.values() for c in stage.enter_when]
    found += [c.event for c in conditions if c.event is not None]
    found += [r.event for r in spec.dead_end.rules if r.event is not None]
    return found


def trait_updates(event: Event) -> dict[str, Any]:
    """What an event sets on the profile, as ``lifecycle.merge_traits`` reads it."""
    merged = lifecycle.merge_traits(_SENTINEL, event)
    return {t: getattr(merged, t) for t in TRAITS if getattr(merged, t) is not _UNSET}


def events_frame(
    events: Iterable[Event],
    properties: Sequence[str] = (),
    *,
    keep_originals: bool = True,
) -> EventTable:
    """An :class:`EventTable` from core events (``lead_id`` required) with the given
    property keys flattened (use :func:`referenced_properties`)."""
    reserved = set(BASE_COLUMNS) | {NEEDS_FALLBACK}
    for key in properties:
        if key in reserved:
            raise ValueError(f"property '{key}' clashes with a column of the event table")
    cols: dict[str, list[Any]] = {c: [] for c in BASE_COLUMNS}
    props: dict[str, list[Any]] = {k: [] for k in properties}
    flagged: list[bool] = []
    originals: dict[int, list[Event]] = {}
    for event in events:
        if event.lead_id is None:
            raise ValueError(f"event {event.message_id}: no lead_id (anonymous events have none)")
        if keep_originals:
            originals.setdefault(event.lead_id, []).append(event)
        updates = trait_updates(event)
        cols["lead_id"].append(event.lead_id)
        cols["message_id"].append(event.message_id)
        cols["type"].append(event.type)
        cols["name"].append(event.name)
        cols["occurred_at"].append(event.occurred_at)
        cols["path"].append(event.path)
        cols["page_url"].append(event.page_url)
        for attr in ("channel", "utm_source", "utm_medium", "utm_campaign"):
            cols[attr].append(getattr(event, attr))
        for t in TRAITS:
            cols[f"set_{t}"].append(updates.get(t))
        odd = False
        for key in properties:
            value = event.properties.get(key)
            if value is not None and not isinstance(value, str):
                odd, value = True, None
            props[key].append(value)
        flagged.append(odd)
    frame = pl.DataFrame(
        {**cols, **props, NEEDS_FALLBACK: flagged},
        schema={
            **BASE_COLUMNS,
            **{k: pl.String() for k in properties},
            NEEDS_FALLBACK: pl.Boolean(),
        },
    )
    return EventTable(frame, originals if keep_originals else None)


PROFILE_COLUMNS: dict[str, pl.DataType] = {
    "id": pl.Int64(),
    "email": pl.String(),
    "phone": pl.String(),
    "title": pl.String(),
    "industry": pl.String(),
    "employee_count": pl.Int64(),
    "country": pl.String(),
    "is_target_account": pl.Boolean(),
    "consent": pl.String(),
    "predicted": pl.Float64(),
}
"""The base profile the backtest reads: the traits conditions, dead-end rules and fit read,
and the predicted conversion probability (``profile.predicted_at_least``)."""


def profiles_frame(profiles: Iterable[LeadProfile]) -> pl.DataFrame:
    rows = [{c: getattr(p, c) for c in PROFILE_COLUMNS} for p in profiles]
    return pl.DataFrame(rows, schema=PROFILE_COLUMNS)


def _profile_of(row: Mapping[str, Any]) -> LeadProfile:
    fields: dict[str, Any] = {c: row.get(c) for c in PROFILE_COLUMNS if row.get(c) is not None}
    return LeadProfile(**fields)


_INTERNAL = frozenset(
    {*BASE_COLUMNS, NEEDS_FALLBACK, "code", "t_us", "day", "_first"}
    | {f"base_{t}" for t in TRAITS}
    | {f"eff_{t}" for t in TRAITS}
)


def _rebuild_events(frame: pl.DataFrame, properties: Sequence[str]) -> list[Event]:
    events = []
    for row in frame.iter_rows(named=True):
        props: dict[str, Any] = {k: row[k] for k in properties if row.get(k) is not None}
        if row["type"] in ("identify", "group"):
            for t in TRAITS:
                if row.get(f"set_{t}") is not None:
                    props[t] = row[f"set_{t}"]
        events.append(
            Event(
                message_id=row["message_id"],
                type=row["type"],
                occurred_at=row["occurred_at"],
                lead_id=row["lead_id"],
                name=row.get("name"),
                properties=props,
                page_url=row.get("page_url")
                or (f"https://x.invalid{row.get('path')}" if row.get("path") else None),
                channel=row.get("channel"),
                utm_source=row.get("utm_source"),
                utm_medium=row.get("utm_medium"),
                utm_campaign=row.get("utm_campaign"),
            )
        )
    return events
