"""Backtest a lead model: replay the event history as columns, compare two models.

:func:`evaluate` computes, for every lead of an event table and under one
:class:`~leadflow.core.config.LeadModel`, what the per-lead core
(:func:`leadflow.core.lifecycle.replay`, :func:`leadflow.core.scoring.score_engagement`)
computes - engagement score at ``as_of``, stage at ``as_of``, every stage change with its
time and rule - but as vectorised Polars/NumPy operations over the whole table.
:func:`compare` runs two models over the same history and reports the differences
(``leadflow model backtest``).

Why Polars (with NumPy for the stage rounds): the work is sorts, window functions
(``cum_sum``/``cum_count`` over lead, rule and day), joins on small dictionaries and
boolean masks; Polars does them multi-threaded in-process on Arrow memory, and the
per-lead state of the stage machine (a few integers per lead) is gathered and scattered
with NumPy fancy indexing. DuckDB can express the same steps in SQL, but the stage
machine is a loop of rounds whose state lives in Python between queries; measured on the
1,000,000-event demo table the Polars path was faster end to end, so SQL buys nothing here.

Inputs
------
An :class:`EventTable`: a Polars frame with one row per event - ``lead_id``,
``message_id``, ``type``, ``name``, ``occurred_at`` (UTC), ``path`` (normalised as
:attr:`Event.path`), ``page_url``, ``channel``, ``utm_source``, ``utm_medium``,
``utm_campaign``, one column per event property a model references (``asset_type``,
``bounce_type``, ...; string values) and the profile traits an event sets, as
:func:`leadflow.core.lifecycle.merge_traits` reads them (``set_email``, ``set_phone``,
``set_title``, ``set_consent``, ``set_is_target_account``, ``set_industry``,
``set_country``, ``set_employee_count``; ``email_unsubscribe`` sets ``set_consent`` to
``denied``). :func:`events_frame` builds one from :class:`Event` objects using the core's
own ``merge_traits``, so the columns mean exactly what the core would do. Profiles are a
frame with ``id`` and the base :class:`LeadProfile` fields (:func:`profiles_frame`).

What is vectorised (exactly the core's semantics)
------------------------------------------------
- Duplicates dropped per lead by ``message_id`` (first row wins); event-time order
  ``(occurred_at, message_id)``; only events at or before ``as_of``.
- Engagement rule matching: ``type``/``name``/``channel``/``utm_*`` as set membership,
  property equality (a string value or its lower-case form in the allowed list), path
  globs evaluated with the core's own ``path_matches`` once per distinct path (a
  dictionary-encoded match, then a hash lookup per row).
- Caps: ``max_per_day`` is the rank of the event among the rule's events of that lead and
  UTC day; ``max_total`` the running count of the per-day survivors - the earliest events
  count, as in the fold.
- Decay: the score at ``as_of`` sums ``points * 0.5 ** (age_days / half_life)`` per
  occurrence (``decay: false`` and models without a half-life: undecayed). The score at
  each event's own time (for ``score:`` criteria) is a per-lead running sum rebased at the
  lead's first event: ``2 ** -s_i * cumsum(points_j * 2 ** s_j)`` with ``s`` in
  half-lives; the ``score`` criterion also checks the running positive-points ceiling like
  the fold does.
- The effective profile after each event (identify/group traits, unsubscribe) as a
  forward fill of the ``set_*`` columns over the base profile; ``profile`` conditions on
  ``has_contact``, ``consent`` and ``is_target_account``; dead-end tests on title
  (``has_term`` per distinct title), e-mail domain and invalid e-mail (per distinct
  address) and on the event.
- Transitions: every criterion (fastpass rules, ``enter_when`` conditions, dead-end rules)
  is one bit of a per-event mask; which bits hold does not depend on the stage. One step
  of the machine (dead end first, then nearest stage wins, walking several stages) is a
  pure function of ``(stage, mask)``, evaluated once per distinct pair by emulating
  ``lifecycle``'s step. The stage history is then found in rounds: each round, for every
  lead still moving, the first event after its last change whose step moves it - looked
  up per lead in a "next moving event" array per stage (a reverse running minimum over
  all events, built only for the stages leads are in); a round per stage change, so a
  handful of rounds in all.
- Weekly MQL volume: the first change of each lead into the MQL stage or beyond on the
  main path, counted per ISO week (Monday, UTC).

Speed (``benchmarks/backtest.py``)
----------------------------------
- Preparation is done once per table, profiles frame and ``as_of`` and kept on the
  :class:`EventTable` (the latest one): the event order, dictionary codes, effective
  traits and every rule match already evaluated (keyed by what it tests, so ``compare``
  evaluates a rule both models share once). The table is treated as read-only.
- Event order without a string sort: duplicates are found through one 64-bit mix of
  lead and message-id hash (the exact strings decide only if it repeats); rows already in
  time order are radix-sorted by lead, otherwise by one packed (lead, time) integer; only
  events of the same lead and instant are ordered by ``message_id``.
- Mostly null columns (the ``set_*`` traits) are dictionary-encoded over their non-null
  rows only; per-lead running sums add in each lead's own order (zero-padded matrices
  summed down their rows, one per power-of-two history length), bit for bit the sums a
  per-lead loop makes.

Fallback (the per-lead core, ``lifecycle.replay``), and why
-----------------------------------------------------------
- Leads with sales actions (actions move stages and start recycle pauses).
- Every lead, when the model has something the rounds cannot express: an automatic move
  into a stage with ``recycle`` (a time-driven pause end), a ``fit_grade`` profile
  condition, or more than 63 criteria.
- Leads whose score at some event is within 1e-6 of a ``score:`` threshold (the rebased
  running sum is exact to ~1e-12, not bit-identical, and an exact tie - e.g. 100 points
  in one instant - must be decided as the core decides it), and leads whose history spans
  more than 1,000 half-lives (the rebasing factor would overflow).
- Leads whose events carry a non-string value in a referenced property (when the table
  was built with :func:`events_frame`; it flags them).

The fallback replays :class:`Event` objects: the originals when the table keeps them,
otherwise events rebuilt from the columns (equivalent for every rule the model can
express over those columns). Return-alert signals are not computed (they never change a
stage); ``lead.returning`` is the live system's business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from leadflow.core import lifecycle
from leadflow.core.config import Condition, DeadEndRule, EventMatch, LeadModel
from leadflow.core.model import Event, LeadProfile, SalesAction
from leadflow.core.scoring import _property_matches, has_term, path_matches, score_engagement

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
    **{t: _UNSET for t in TRAITS},  # type: ignore[arg-type]
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
}


def profiles_frame(profiles: Iterable[LeadProfile]) -> pl.DataFrame:
    rows = [{c: getattr(p, c) for c in PROFILE_COLUMNS} for p in profiles]
    return pl.DataFrame(rows, schema=PROFILE_COLUMNS)


def _profile_of(row: Mapping[str, Any]) -> LeadProfile:
    fields = {c: row.get(c) for c in PROFILE_COLUMNS if row.get(c) is not None}
    return LeadProfile(**fields)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Backtest:
    """One model over one history.

    ``leads``: ``lead_id``, ``stage``, ``score`` (engagement at ``as_of``, rounded to 9
    decimals like the core), ``mql_at`` (first entry into MQL or beyond, or null),
    ``fallback`` (true when the per-lead core computed the lead).
    ``changes``: ``lead_id``, ``from_stage``, ``to_stage``, ``at``, ``rule``, ``cause``.
    ``fallback_reasons``: leads that took the per-lead path, by reason.
    """

    model_version: str
    as_of: datetime
    leads: pl.DataFrame
    changes: pl.DataFrame
    fallback_reasons: Mapping[str, int]
    events: int

    @property
    def fallback_leads(self) -> int:
        return int(self.leads["fallback"].sum())

    def weekly_mql(self, since: datetime | None = None) -> pl.DataFrame:
        """Leads becoming MQL per ISO week (``week`` is the Monday, UTC)."""
        mql = self.leads.filter(pl.col("mql_at").is_not_null())
        if since is not None:
            mql = mql.filter(pl.col("mql_at") >= since)
        return (
            mql.select(pl.col("mql_at").dt.truncate("1w").dt.date().alias("week"))
            .group_by("week")
            .agg(pl.len().alias("mql"))
            .sort("week")
        )


# --------------------------------------------------------------------------- preparation


_NULL_TEXT = {"email": "", "phone": "", "title": "", "consent": "unknown"}


@dataclass
class _Prepared:
    """The history in event-time order, shared by every model evaluated on it. Rows are
    positions in ``frame`` (the table as given); string columns are dictionary-encoded on
    demand (:meth:`codes`) so that rules are evaluated once per distinct value."""

    frame: pl.DataFrame
    rows: np.ndarray
    """Positions in ``frame`` of the kept events, in event-time order."""
    lead_ids: np.ndarray
    code: np.ndarray
    """Dense lead number of each row."""
    t_us: np.ndarray
    day: np.ndarray
    """UTC day number of each row (for per-day caps)."""
    first: np.ndarray
    """Row of each lead's first event."""
    as_of: datetime
    profiles: pl.DataFrame
    table: EventTable
    flagged: np.ndarray
    """Per lead: some event needs the fallback."""
    base: pl.DataFrame
    """Base profile per lead code (``email``, ``phone``, ``title``, ``consent``,
    ``is_target_account``), nulls replaced by the core's defaults."""
    cache: dict[str, tuple[np.ndarray, list[Any]]] = field(default_factory=dict)
    memo: dict[tuple[Any, ...], np.ndarray] = field(default_factory=dict)
    """Per-row tests already evaluated (by what they test), shared between models."""
    _segs: Any = None

    def segments(self) -> _Segments:
        """The per-lead layout of :func:`_segmented_cumsum` (computed once)."""
        if self._segs is None:
            self._segs = _segments(self.code)
        return self._segs

    def codes(self, col: str) -> tuple[np.ndarray, list[Any]]:
        """Per row (event-time order) the index of its value in the returned distinct
        values; null is ``len(values)``."""
        if col not in self.cache:
            if col not in self.frame.columns:
                raise ValueError(f"event table: no column for property '{col}' (a rule uses it)")
            series = self.frame[col]
            if series.dtype != pl.String:
                series = series.cast(pl.String)
            self.cache[col] = _dictionary(series, self.rows)
        return self.cache[col]

    def effective(self, trait: str) -> tuple[np.ndarray, list[Any]]:
        """The profile trait after each row's event (identify/group traits, unsubscribe):
        the last value an event of the lead set, else the base profile's."""
        key = f"eff_{trait}"
        if key not in self.cache:
            base = self.base[trait]
            if trait == "is_target_account":
                set_col = self.frame["set_is_target_account"].cast(pl.String)
                base = base.cast(pl.String)
            else:
                set_col = self.frame[f"set_{trait}"]
            set_codes, values = _dictionary(set_col, self.rows, base)
            null = len(values)
            base_codes = base.cast(pl.Enum(values)).to_physical().to_numpy().astype(np.int32)
            n = len(self.rows)
            is_first = np.zeros(n, dtype=bool)
            is_first[self.first] = True
            defined = (set_codes != null) | is_first
            src = np.maximum.accumulate(np.where(defined, np.arange(n), 0))
            chosen = set_codes[src]
            eff = np.where(chosen != null, chosen, base_codes[self.code[src]])
            if trait == "is_target_account":
                values = [v == "true" for v in values]
            self.cache[key] = (eff, values)
        return self.cache[key]


def _dictionary(
    series: pl.Series, rows: np.ndarray, extra: pl.Series | None = None
) -> tuple[np.ndarray, list[Any]]:
    """Dictionary codes of a string column at ``rows``: the index of each value in the
    sorted distinct values (of the column and ``extra``); null is ``len(values)``. Mostly
    null columns (the traits events set) are encoded over their non-null rows only."""
    n = len(series)
    positions: np.ndarray | None = None
    present = series
    if series.null_count() > n // 2:
        found = series.is_not_null().arg_true()
        positions = found.to_numpy()
        present = series.gather(found)
    distinct = present.drop_nulls()
    if extra is not None:
        distinct = pl.concat([distinct, extra.drop_nulls()])
    values = distinct.unique().sort().to_list()
    null = len(values)
    if not values:
        return np.full(len(rows), null, dtype=np.int32), values
    codes = present.cast(pl.Enum(values)).to_physical().fill_null(null).to_numpy()
    codes = codes.astype(np.int32)
    if positions is not None:
        full = np.full(n, null, dtype=np.int32)
        full[positions] = codes
        codes = full
    return codes[rows], values


def _event_order(lead: np.ndarray, t_us: np.ndarray) -> np.ndarray:
    """A stable order by ``(lead, t_us)`` (ties keep their input order)."""
    if len(lead) == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(lead.min()), int(lead.max())
    if hi - lo < 1 << 16 and bool((t_us[1:] >= t_us[:-1]).all()):
        # already in time order (the usual export): a radix sort by lead keeps it
        return np.argsort((lead - lo).astype(np.uint16), kind="stable")
    t0 = int(t_us.min())
    t_bits = max(int(t_us.max()) - t0, 0).bit_length()
    if (hi - lo).bit_length() + t_bits <= 62:
        return np.argsort(((lead - lo) << t_bits) | (t_us - t0), kind="stable")
    return np.lexsort((t_us, lead))


def _order_ties(
    rows: np.ndarray, lead: np.ndarray, t_us: np.ndarray, message_id: pl.Series
) -> np.ndarray:
    """``rows`` (ordered by lead and time) with events of the same lead and instant put
    in ``message_id`` order."""
    n = len(rows)
    if n < 2:
        return rows
    lo, to = lead[rows], t_us[rows]
    same = (lo[1:] == lo[:-1]) & (to[1:] == to[:-1])
    if not same.any():
        return rows
    start = np.ones(n, dtype=bool)
    start[1:] = ~same
    run = np.cumsum(start) - 1
    in_tie = np.zeros(n, dtype=bool)
    in_tie[1:] = same
    in_tie[:-1] |= same
    at = np.flatnonzero(in_tie)
    tied = pl.DataFrame({"run": run[at], "m": message_id.gather(rows[at]), "row": rows[at]})
    out = rows.copy()
    out[at] = tied.sort("run", "m")["row"].to_numpy()
    return out


def _prepared_for(table: EventTable, profiles: pl.DataFrame | None, as_of: datetime) -> _Prepared:
    """The table's preparation for these profiles and ``as_of``: kept on the table (the
    latest one only) and reused while both are the same."""
    for kept_profiles, kept_as_of, prep in table._prepared:
        if kept_profiles is profiles and kept_as_of == as_of:
            return prep
    prep = _prepare(table, profiles, as_of)
    table._prepared[:] = [(profiles, as_of, prep)]
    return prep


def _prepare(table: EventTable, profiles: pl.DataFrame | None, as_of: datetime) -> _Prepared:
    frame = table.frame
    missing = [c for c in ("lead_id", "message_id", "type", "occurred_at") if c not in frame]
    if missing:
        raise ValueError(f"event table: missing column(s) {', '.join(missing)}")
    add = [
        pl.lit(None, dtype=dtype).alias(col)
        for col, dtype in BASE_COLUMNS.items()
        if col not in frame.columns
    ]
    if NEEDS_FALLBACK not in frame.columns:
        add.append(pl.lit(False).alias(NEEDS_FALLBACK))
    frame = frame.with_columns(add) if add else frame
    keys = frame.select(
        pl.col("lead_id").cast(pl.Int64),
        pl.col("occurred_at").dt.convert_time_zone("UTC").dt.epoch("us").alias("t_us"),
        pl.col("message_id").hash().alias("h"),
    )
    # first copy of each (lead, message id) wins; a 64-bit hash finds the copies and the
    # exact strings decide whenever the hash says there are any
    lead_all = keys["lead_id"].to_numpy()
    t_all = keys["t_us"].to_numpy()
    as_of_us = int((as_of - _EPOCH) / timedelta(microseconds=1))
    mixed = keys["h"].to_numpy() + lead_all.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    if pl.Series(mixed).n_unique() == len(mixed):
        kept = np.flatnonzero(t_all <= as_of_us)
    else:
        first_copy = frame.select(pl.struct("lead_id", "message_id").is_first_distinct())
        kept = np.flatnonzero(first_copy.to_series().to_numpy() & (t_all <= as_of_us))
    rows = kept[_event_order(lead_all[kept], t_all[kept])]
    rows = _order_ties(rows, lead_all, t_all, frame["message_id"])
    lead = lead_all[rows]
    t_us = t_all[rows]
    n = len(rows)
    is_first = np.ones(n, dtype=bool)
    is_first[1:] = lead[1:] != lead[:-1]
    first = np.flatnonzero(is_first)
    code = np.cumsum(is_first) - 1
    lead_ids = lead[first] if n else np.zeros(0, np.int64)
    if profiles is None:
        profiles = pl.DataFrame(schema=PROFILE_COLUMNS)
    for col, dtype in PROFILE_COLUMNS.items():
        if col not in profiles.columns:
            profiles = profiles.with_columns(pl.lit(None, dtype=dtype).alias(col))
    base = (
        pl.DataFrame({"id": lead_ids}, schema={"id": pl.Int64})
        .join(
            profiles.with_columns(pl.col("id").cast(pl.Int64)),
            on="id",
            how="left",
            maintain_order="left",
        )
        .select(
            *[pl.col(t).fill_null(d) for t, d in _NULL_TEXT.items()],
            pl.col("is_target_account").fill_null(False),
        )
    )
    flagged = np.zeros(len(first), dtype=bool)
    bad = frame[NEEDS_FALLBACK].fill_null(False).to_numpy()[rows]
    if bad.any():
        flagged[np.unique(code[bad])] = True
    return _Prepared(
        frame=frame,
        rows=rows,
        lead_ids=lead_ids,
        code=code,
        t_us=t_us,
        day=np.floor_divide(t_us, US_PER_DAY),
        first=first,
        as_of=as_of,
        profiles=profiles,
        table=table,
        flagged=flagged,
        base=base,
    )


# --------------------------------------------------------------------------- matching


def _lookup(prep: _Prepared, col: str, key: Any, test: Any) -> np.ndarray:
    """``test(value)`` per row, evaluated once per distinct value of ``col``; ``key``
    names the test (equal keys: equal tests), so that its result is computed once."""
    memo_key = ("lookup", col, key)
    if memo_key not in prep.memo:
        codes, values = prep.codes(col)
        table = np.array([bool(test(v)) for v in values] + [bool(test(None))], dtype=bool)
        prep.memo[memo_key] = table[codes]
    return prep.memo[memo_key]


def _match(match: EventMatch, prep: _Prepared) -> np.ndarray:
    """Rows whose event ``match`` holds (``scoring.event_matches``). Do not modify the
    result: it is shared."""
    tests: list[tuple[str, Any, Any]] = []
    for col in ("type", "name", "channel", "utm_source", "utm_medium", "utm_campaign"):
        allowed = getattr(match, col)
        if allowed is not None:
            tests.append((col, ("in", repr(allowed)), lambda v, allowed=allowed: v in allowed))
    if match.path is not None:
        globs = match.path
        tests.append(("path", ("glob", repr(globs)), lambda v: path_matches(v, globs or ())))
    for key, allowed in match.properties.items():
        tests.append(
            (
                key,
                ("property", repr(allowed)),
                lambda v, a=allowed: v is not None and _property_matches(v, a),
            )
        )
    memo_key = ("match", *((col, key) for col, key, _ in tests))
    if memo_key not in prep.memo:
        out = np.ones(len(prep.rows), dtype=bool)
        for col, key, test in tests:
            out &= _lookup(prep, col, key, test)
        prep.memo[memo_key] = out
    return prep.memo[memo_key]


# --------------------------------------------------------------------------- engagement


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


@dataclass(frozen=True)
class _Segments:
    """Where each row goes in :func:`_segmented_cumsum`'s padded matrices: the rows of
    each length class (``parts``), their flat positions, the matrix shapes."""

    n: int
    parts: list[np.ndarray]
    flats: list[np.ndarray]
    shapes: list[tuple[int, int]]


def _segments(code: np.ndarray) -> _Segments:
    n = len(code)
    if n == 0:
        return _Segments(0, [], [], [])
    start = np.ones(n, dtype=bool)
    start[1:] = code[1:] != code[:-1]
    first = np.flatnonzero(start)
    length = np.diff(np.append(first, n))
    lead = np.cumsum(start) - 1
    pos = np.arange(n) - first[lead]
    width_class = np.ceil(np.log2(length)).astype(np.uint8)
    by_class = np.argsort(width_class[lead], kind="stable")  # rows, leads kept together
    bounds = np.flatnonzero(np.diff(width_class[lead[by_class]])) + 1
    parts, flats, shapes = [], [], []
    for part in np.split(by_class, bounds):
        width = 1 << int(width_class[lead[part[0]]])
        p_lead = lead[part]
        p_start = np.ones(len(part), dtype=bool)
        p_start[1:] = p_lead[1:] != p_lead[:-1]
        n_cols = int(p_start.sum())
        parts.append(part)
        flats.append(pos[part] * n_cols + (np.cumsum(p_start) - 1))
        shapes.append((width, n_cols))
    return _Segments(n, parts, flats, shapes)


def _segmented_cumsum(values: np.ndarray, seg: _Segments) -> np.ndarray:
    """Cumulative sum restarting at every lead (no cancellation across leads). The leads
    of each power-of-two length class are the columns of a zero-padded matrix summed down
    its rows: the same additions in the same order as a running sum per lead."""
    out = np.empty(len(values), dtype=np.float64)
    for part, flat, (width, n_cols) in zip(seg.parts, seg.flats, seg.shapes, strict=True):
        block = np.zeros(width * n_cols, dtype=np.float64)
        block[flat] = values[part]
        matrix = block.reshape(width, n_cols)
        np.cumsum(matrix, axis=0, out=matrix)
        out[part] = block[flat]
    return out


# --------------------------------------------------------------------------- the machine


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
    if any(c.condition.profile is not None and c.condition.profile.fit_grade for c in criteria):
        return "model uses fit_grade conditions"
    if any(
        c.condition.profile is not None and c.condition.profile.predicted_at_least is not None
        for c in criteria
    ):
        return "model uses predicted_at_least conditions"
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


def _condition(
    cond: Condition, prep: _Prepared, score_ok: Mapping[float, np.ndarray]
) -> np.ndarray:
    """Rows where a criterion holds (``lifecycle``'s ``holds``, on the effective profile)."""
    out = np.ones(len(prep.rows), dtype=bool)
    if cond.event is not None:
        out &= _match(cond.event, prep)
    if cond.profile is not None:
        want = cond.profile
        if want.has_contact is not None:
            email, e_values = prep.effective("email")
            phone, p_values = prep.effective("phone")
            has = np.array([bool(v) for v in e_values] + [False])[email]
            has |= np.array([bool(v) for v in p_values] + [False])[phone]
            out &= has == want.has_contact
        if want.consent is not None:
            consent, values = prep.effective("consent")
            out &= np.array([v in want.consent for v in values] + [False])[consent]
        if want.is_target_account is not None:
            target, values = prep.effective("is_target_account")
            out &= np.array([*values, False], dtype=bool)[target] == want.is_target_account
    if cond.score is not None:
        out &= score_ok[cond.score]
    return out


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
        key = ("title", repr(words))
        if key not in prep.memo:
            title, values = prep.effective("title")
            dead = [bool(v) and any(has_term(v, w) for w in words) for v in values]
            prep.memo[key] = np.array([*dead, False])[title]
        out |= prep.memo[key]
    if rule.email_domains or rule.invalid_email:
        key = ("email", repr(rule.email_domains), rule.invalid_email)
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


# --------------------------------------------------------------------------- evaluate


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


def _replay_leads(
    model: LeadModel,
    prep: _Prepared,
    codes: np.ndarray,
    actions: Mapping[int, Sequence[SalesAction]] | None,
) -> Iterable[tuple[int, lifecycle.LeadState, float]]:
    """The per-lead core for the given leads: (lead code, replayed state, score)."""
    as_of = prep.as_of
    ids = prep.lead_ids[codes]
    wanted = prep.profiles.filter(pl.col("id").is_in(ids))
    profile_rows = {r["id"]: r for r in wanted.iter_rows(named=True)}
    per_lead: dict[int, list[Event]] = {}
    if prep.table.originals is None:
        properties = [c for c in prep.frame.columns if c not in _INTERNAL]
        sub = prep.frame.filter(pl.col("lead_id").is_in(ids))
        for ev in _rebuild_events(sub, properties):
            per_lead.setdefault(ev.lead_id or 0, []).append(ev)
    for c, lead_id in zip(codes.tolist(), ids.tolist(), strict=True):
        base = profile_rows.get(lead_id)
        profile = _profile_of(base) if base else LeadProfile(id=lead_id)
        if prep.table.originals is not None:
            events = list(prep.table.originals.get(lead_id, ()))
        else:
            events = per_lead.get(lead_id, [])
        lead_actions = (actions or {}).get(lead_id, ())
        state = lifecycle.replay(profile, events, model, actions=lead_actions, as_of=as_of)
        yield c, state, score_engagement(events, as_of, model).total


def evaluate(
    model: LeadModel,
    table: EventTable,
    profiles: pl.DataFrame | None = None,
    *,
    as_of: datetime,
    actions: Mapping[int, Sequence[SalesAction]] | None = None,
    _prepared: _Prepared | None = None,
) -> Backtest:
    """Every lead of ``table`` under ``model`` at ``as_of`` (see the module docs)."""
    as_of = as_of.astimezone(UTC)
    prep = _prepared or _prepared_for(table, profiles, as_of)
    n_leads = len(prep.first)
    reasons: Counter[str] = Counter()
    occ = _occurrences(model, prep)
    final_score = _score_at_as_of(occ, prep, n_leads)
    fallback = prep.flagged.copy()
    reasons["event property that is not a string"] += int(fallback.sum())
    if actions:
        with_actions = np.isin(prep.lead_ids, np.array([k for k, v in actions.items() if v]))
        reasons["sales actions"] += int((with_actions & ~fallback).sum())
        fallback |= with_actions
    whole = _model_fallback_reason(model)
    stage_names = list(model.stages)
    if whole is not None:
        reasons[whole] += int((~fallback).sum())
        fallback[:] = True
        stage_of = np.zeros(n_leads, dtype=np.int64)
        changes: _Changes | None = None
    else:
        needs_score = any(c.condition.score is not None for c in _criteria(model))
        if needs_score:
            score, ceiling, overflow = _running_scores(occ, prep)
        else:
            score = ceiling = np.zeros(len(prep.rows))
            overflow = np.zeros(n_leads, dtype=bool)
        reasons["history longer than 1,000 half-lives"] += int((overflow & ~fallback).sum())
        fallback |= overflow
        stage_of, changes, close = _vectorised_machine(model, prep, score, ceiling)
        reasons["score within 1e-6 of a threshold"] += int((close & ~fallback).sum())
        fallback |= close
    stage_col = np.array(stage_names, dtype=object)[stage_of].tolist()
    scores = np.round(final_score, 9)
    parts = [] if changes is None else [changes.frame(prep, ~fallback)]
    # the per-lead core for the rest
    fb_codes = np.flatnonzero(fallback)
    if len(fb_codes):
        fb_rows: list[tuple[Any, ...]] = []
        for c, state, total in _replay_leads(model, prep, fb_codes, actions):
            stage_col[c] = state.stage
            scores[c] = total
            fb_rows += [
                (ch.lead_id, ch.from_stage, ch.to_stage, ch.at, ch.rule, ch.cause)
                for ch in state.history
            ]
        parts.append(pl.DataFrame(fb_rows, schema=CHANGE_COLUMNS, orient="row"))
    changes_df = (
        pl.concat(parts).sort("lead_id", maintain_order=True)
        if parts
        else pl.DataFrame(schema=CHANGE_COLUMNS)
    )
    handoff = model.stage_for("handoff")
    mql_rank = model.rank(handoff) if handoff in model.stage_order else None
    leads = pl.DataFrame(
        {
            "lead_id": prep.lead_ids,
            "stage": stage_col,
            "score": scores,
            "fallback": fallback,
        }
    )
    if mql_rank is not None:
        qualified = [s for s, r in model.stage_order.items() if r >= mql_rank]
        first_mql = (
            changes_df.filter(pl.col("to_stage").is_in(qualified))
            .group_by("lead_id")
            .agg(pl.col("at").min().alias("mql_at"))
        )
        leads = leads.join(first_mql, on="lead_id", how="left", maintain_order="left")
    else:
        leads = leads.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("mql_at"))
    return Backtest(
        model_version=model.version,
        as_of=as_of,
        leads=leads,
        changes=changes_df,
        fallback_reasons={k: v for k, v in reasons.items() if v},
        events=len(prep.rows),
    )


# --------------------------------------------------------------------------- compare

OPPORTUNITY_OUTCOMES = frozenset({"opportunity", "won", "lost"})
REJECTED_OUTCOMES = frozenset({"rejected", "sales_rejected", "disqualified"})


@dataclass(frozen=True)
class ModelSummary:
    version: str
    mql: int
    fallback_leads: int
    fallback_reasons: Mapping[str, int]
    with_outcome: int = 0
    """MQLs whose outcome is known."""
    opportunity_rate: float | None = None
    won_rate: float | None = None
    rejected_share: float | None = None


@dataclass(frozen=True)
class BacktestReport:
    """What ``leadflow model backtest`` prints: the current model against a candidate."""

    as_of: datetime
    since: datetime | None
    leads: int
    events: int
    current: ModelSummary
    candidate: ModelSummary
    stage_changes: Mapping[tuple[str, str], int]
    """Leads whose stage at ``as_of`` differs: (current stage, candidate stage) -> leads."""
    sample: tuple[tuple[int, str, str], ...]
    weekly: pl.DataFrame
    """``week``, ``current``, ``candidate``: leads becoming MQL per week."""
    newly_mql: int
    no_longer_mql: int

    @property
    def changed(self) -> int:
        return sum(self.stage_changes.values())

    def lines(self) -> list[str]:
        cur, cand = self.current, self.candidate
        out = [
            f"backtest at {self.as_of:%Y-%m-%d %H:%M} UTC over {self.events:,} events, "
            f"{self.leads:,} leads"
            + (f" (MQLs since {self.since:%Y-%m-%d})" if self.since else ""),
            f"MQL: current {cur.version} {cur.mql:,}  candidate {cand.version} {cand.mql:,} "
            f"({cand.mql - cur.mql:+,}); newly MQL {self.newly_mql:,}, "
            f"no longer MQL {self.no_longer_mql:,}",
            f"leads changing stage: {self.changed:,}",
        ]
        for (a, b), n in sorted(self.stage_changes.items(), key=lambda kv: -kv[1]):
            out.append(f"  {a} -> {b}: {n:,}")
        if self.sample:
            out.append("sample: " + ", ".join(f"{i} ({a}->{b})" for i, a, b in self.sample))
        for s in (cur, cand):
            if s.opportunity_rate is not None:
                out.append(
                    f"{s.version}: of {s.with_outcome:,} MQLs with a known outcome, "
                    f"{s.opportunity_rate:.1%} reached opportunity, {s.won_rate:.1%} won, "
                    f"{s.rejected_share:.1%} rejected by sales"
                )
            if s.fallback_leads:
                why = ", ".join(f"{k}: {v:,}" for k, v in s.fallback_reasons.items())
                out.append(f"{s.version}: {s.fallback_leads:,} leads via the per-lead core ({why})")
        return out


def _summary(
    result: Backtest, mql: pl.DataFrame, outcomes: Mapping[int, str] | None
) -> ModelSummary:
    kw: dict[str, Any] = {}
    if outcomes is not None:
        known = [outcomes[i].strip().lower() for i in mql["lead_id"].to_list() if i in outcomes]
        n = len(known)
        kw["with_outcome"] = n
        if n:
            kw["opportunity_rate"] = sum(o in OPPORTUNITY_OUTCOMES for o in known) / n
            kw["won_rate"] = sum(o == "won" for o in known) / n
            kw["rejected_share"] = sum(o in REJECTED_OUTCOMES for o in known) / n
    return ModelSummary(
        version=result.model_version,
        mql=mql.height,
        fallback_leads=result.fallback_leads,
        fallback_reasons=result.fallback_reasons,
        **kw,
    )


def compare(
    current_model: LeadModel,
    candidate_model: LeadModel,
    events: EventTable,
    profiles: pl.DataFrame | None = None,
    outcomes: Mapping[int, str] | None = None,
    *,
    as_of: datetime,
    since: datetime | None = None,
    actions: Mapping[int, Sequence[SalesAction]] | None = None,
    sample_size: int = 10,
) -> BacktestReport:
    """Replay the same history under both models and report the differences.

    ``outcomes`` maps lead ids to what happened in sales (``opportunity``, ``won``,
    ``lost``, ``rejected``); rates are over the MQLs whose outcome is known. ``since``
    limits the MQL counts and weekly volumes to MQLs from that time (scores still use all
    earlier events)."""
    as_of = as_of.astimezone(UTC)
    prep = _prepared_for(events, profiles, as_of)
    cur = evaluate(current_model, events, as_of=as_of, actions=actions, _prepared=prep)
    cand = evaluate(candidate_model, events, as_of=as_of, actions=actions, _prepared=prep)

    def mqls(result: Backtest) -> pl.DataFrame:
        m = result.leads.filter(pl.col("mql_at").is_not_null())
        return m.filter(pl.col("mql_at") >= since) if since is not None else m

    cur_mql, cand_mql = mqls(cur), mqls(cand)
    both = cur.leads.select("lead_id", pl.col("stage").alias("a")).join(
        cand.leads.select("lead_id", pl.col("stage").alias("b")), on="lead_id"
    )
    diff = both.filter(pl.col("a") != pl.col("b")).sort("lead_id")
    counts = diff.group_by("a", "b").agg(pl.len().alias("n"))
    stage_changes = {(r["a"], r["b"]): r["n"] for r in counts.iter_rows(named=True)}
    sample = tuple(
        (r["lead_id"], r["a"], r["b"]) for r in diff.head(sample_size).iter_rows(named=True)
    )
    weekly = (
        cur.weekly_mql(since)
        .rename({"mql": "current"})
        .join(
            cand.weekly_mql(since).rename({"mql": "candidate"}),
            on="week",
            how="full",
            coalesce=True,
        )
        .fill_null(0)
        .sort("week")
    )
    a_ids, b_ids = set(cur_mql["lead_id"].to_list()), set(cand_mql["lead_id"].to_list())
    return BacktestReport(
        as_of=as_of,
        since=since,
        leads=cur.leads.height,
        events=len(prep.rows),
        current=_summary(cur, cur_mql, outcomes),
        candidate=_summary(cand, cand_mql, outcomes),
        stage_changes=stage_changes,
        sample=sample,
        weekly=weekly,
        newly_mql=len(b_ids - a_ids),
        no_longer_mql=len(a_ids - b_ids),
    )


def week_of(at: datetime) -> date:
    """The Monday (UTC) of ``at``'s ISO week: the key of the weekly MQL series."""
    day = at.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


__all__ = [
    "Backtest",
    "BacktestReport",
    "EventTable",
    "ModelSummary",
    "compare",
    "evaluate",
    "events_frame",
    "profiles_frame",
    "referenced_properties",
    "trait_updates",
    "week_of",
]
