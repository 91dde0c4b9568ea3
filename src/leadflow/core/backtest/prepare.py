"""Preparation shared by every model evaluated on one table: event order, dictionary
codes, effective profile traits, event matches."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from leadflow.core import conditions
from leadflow.core.backtest.tables import (
    _EPOCH,
    BASE_COLUMNS,
    NEEDS_FALLBACK,
    PROFILE_COLUMNS,
    US_PER_DAY,
    EventTable,
)
from leadflow.core.config import EventMatch

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
    _segs: _Segments | None = None

    def row_count(self) -> int:
        return len(self.rows)

    def lookup(self, column: str, key: Hashable, test: Callable[[Any], bool]) -> np.ndarray:
        return _lookup(self, column, key, test)

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
    for kept_profiles, kept_as_of, kept in table._prepared:
        if kept_profiles is profiles and kept_as_of == as_of:
            found: _Prepared = kept
            return found
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


def _lookup(prep: _Prepared, col: str, key: Hashable, test: Callable[[Any], bool]) -> np.ndarray:
    """``test(value)`` per row, evaluated once per distinct value of ``col``; ``key``
    names the test (equal keys: equal tests), so that its result is computed once."""
    memo_key = ("lookup", col, key)
    if memo_key not in prep.memo:
        codes, values = prep.codes(col)
        table = np.array([bool(test(v)) for v in values] + [bool(test(None))], dtype=bool)
        prep.memo[memo_key] = table[codes]
    return prep.memo[memo_key]


def _match(match: EventMatch, prep: _Prepared) -> np.ndarray:
    """Rows whose event ``match`` holds: the tests of :mod:`leadflow.core.conditions`
    (the stage machine's own), once per distinct value. Do not modify the result: it is
    shared."""
    memo_key = ("match", *((t.column, t.key) for t in conditions.column_tests(match)))
    if memo_key not in prep.memo:
        prep.memo[memo_key] = conditions.event_rows(match, prep)
    return prep.memo[memo_key]


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
