"""Steps 1 and 2: the outcome column parsed to 0/1, and the feature columns typed
(``infer_schema``) and encoded (``encode``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from leadflow.core.predictive.common import (
    MAX_LEVELS,
    MIN_PER_CLASS,
    MISSING_LEVEL,
    NEGATIVE_OUTCOMES,
    NO,
    NUMERIC_SHARE,
    OTHER_LEVEL,
    PLACEHOLDERS,
    POSITIVE_OUTCOMES,
    YES,
    PredictiveError,
)

# --------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class Outcome:
    column: str
    positive: str
    negative: str
    rows_without_outcome: int


def parse_outcome(
    values: pl.Series, column: str, positive: str | None = None
) -> tuple[np.ndarray, np.ndarray, Outcome]:
    """(y as 0/1, mask of rows that have an outcome, description) or a clear error."""
    norm = _normalised(values)
    present = norm.is_not_null().to_numpy()
    distinct = sorted(norm.drop_nulls().unique().to_list())
    if not distinct:
        raise PredictiveError(f"target column {column!r} is empty (every value is blank)")
    if len(distinct) == 1:
        raise PredictiveError(
            f"target column {column!r} is constant ({distinct[0]!r} in every row): "
            "a model needs both outcomes"
        )
    if len(distinct) > 2:
        shown = ", ".join(repr(v) for v in distinct[:5])
        more = f" and {len(distinct) - 5} more" if len(distinct) > 5 else ""
        raise PredictiveError(
            f"target column {column!r} is not binary: {len(distinct)} values ({shown}{more})"
        )
    if positive is not None:
        pos = positive.strip().lower()
        if pos not in distinct:
            raise PredictiveError(
                f"--positive {positive!r} is not a value of target column {column!r} "
                f"(values: {distinct[0]!r}, {distinct[1]!r})"
            )
    else:
        known = [v for v in distinct if v in POSITIVE_OUTCOMES]
        negatives = [v for v in distinct if v in NEGATIVE_OUTCOMES]
        if len(known) == 1:
            pos = known[0]
        elif len(negatives) == 1:
            pos = next(v for v in distinct if v not in NEGATIVE_OUTCOMES)
        else:
            raise PredictiveError(
                f"target column {column!r} has values {distinct[0]!r} and {distinct[1]!r}: "
                "cannot tell which is the conversion; name it with --positive"
            )
    neg = next(v for v in distinct if v != pos)
    y = (norm == pos).fill_null(False).to_numpy().astype(np.int8)
    outcome = Outcome(column, pos, neg, int((~present).sum()))
    counts = (int(y[present].sum()), int(present.sum() - y[present].sum()))
    if min(counts) < MIN_PER_CLASS:
        which = pos if counts[0] < counts[1] else neg
        raise PredictiveError(
            f"target column {column!r} has only {min(counts)} rows with {which!r}: "
            f"at least {MIN_PER_CLASS} of each outcome are needed to cross-validate"
        )
    return y, present, outcome


# --------------------------------------------------------------------------- cleaning


@dataclass(frozen=True)
class ColumnSpec:
    """How one input column becomes one model column (``kind`` numeric/yes_no/categorical)."""

    name: str
    kind: Literal["numeric", "yes_no", "categorical"]
    levels: tuple[str, ...] = ()
    decimal_comma: bool = False
    notes: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"


@dataclass(frozen=True)
class DroppedColumn:
    column: str
    reason: str


@dataclass(frozen=True)
class Schema:
    columns: tuple[ColumnSpec, ...]
    dropped: tuple[DroppedColumn, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def without(self, names: Sequence[str], reason: str) -> Schema:
        gone = set(names)
        return Schema(
            tuple(c for c in self.columns if c.name not in gone),
            self.dropped + tuple(DroppedColumn(n, reason) for n in names),
        )


def _normalised(values: pl.Series) -> pl.Series:
    """Stripped, lowercased text; placeholders become null."""
    text = values.cast(pl.Utf8, strict=False).str.strip_chars().str.to_lowercase()
    return text.set(text.is_in(list(PLACEHOLDERS)).fill_null(True), None)


def _as_number(text: pl.Series, decimal_comma: bool) -> pl.Series:
    if decimal_comma:
        text = text.str.replace(",", ".", literal=True)
    number = text.cast(pl.Float64, strict=False)
    return number.set(~number.is_finite().fill_null(False), None)


def infer_schema(frame: pl.DataFrame, columns: Sequence[str]) -> Schema:
    """Decide per column: numeric, yes/no or categorical, or drop it with the reason."""
    specs: list[ColumnSpec] = []
    dropped: list[DroppedColumn] = []
    n = frame.height
    for name in columns:
        series = frame[name]
        if series.dtype.is_numeric() or series.dtype == pl.Boolean:
            number = series.cast(pl.Float64, strict=False)
            if number.drop_nulls().n_unique() <= 1:
                dropped.append(DroppedColumn(name, "constant or empty"))
                continue
            specs.append(ColumnSpec(name, "numeric"))
            continue
        norm = _normalised(series)
        present = norm.drop_nulls()
        blanks = n - present.len()
        if present.n_unique() <= 1:
            dropped.append(DroppedColumn(name, "constant or empty"))
            continue
        notes = [f"{blanks} blank/placeholder cells treated as missing"] if blanks else []
        distinct = set(present.unique().to_list())
        if distinct <= (YES | NO):
            specs.append(ColumnSpec(name, "yes_no", notes=(*notes, "yes/no read as 1/0")))
            continue
        number = _as_number(present, False)
        comma = False
        if number.is_null().sum() > present.len() * (1 - NUMERIC_SHARE):
            alt = _as_number(present, True)
            if alt.is_null().sum() < number.is_null().sum():
                number, comma = alt, True
        bad = int(number.is_null().sum())
        if bad <= present.len() * (1 - NUMERIC_SHARE):
            if bad:
                examples = present.filter(number.is_null()).unique().sort().head(3).to_list()
                notes.append(f"{bad} non-numeric cells treated as missing (e.g. {examples})")
            if comma:
                notes.append("decimal comma")
            specs.append(ColumnSpec(name, "numeric", decimal_comma=comma, notes=tuple(notes)))
            continue
        if present.n_unique() >= 0.9 * present.len() and present.len() >= 20:
            dropped.append(
                DroppedColumn(name, "identifier-like: a distinct text in nearly every row")
            )
            continue
        counts = present.value_counts(sort=True)
        min_count = max(3, math.ceil(0.001 * n))
        frequent = counts.filter(pl.col("count") >= min_count).head(MAX_LEVELS)
        levels = sorted(frequent[:, 0].to_list())
        pooled = present.len() - int(frequent["count"].sum())
        extra = []
        if blanks:
            extra.append(MISSING_LEVEL)
        if pooled:
            extra.append(OTHER_LEVEL)
            notes.append(f"{pooled} cells in rare levels pooled as {OTHER_LEVEL}")
        specs.append(ColumnSpec(name, "categorical", tuple(levels + extra), notes=tuple(notes)))
    return Schema(tuple(specs), tuple(dropped))


def encode(frame: pl.DataFrame, schema: Schema) -> np.ndarray:
    """Float matrix, one column per spec: numbers, 1/0, or level codes; NaN when missing."""
    missing = [c.name for c in schema.columns if c.name not in frame.columns]
    if missing:
        raise PredictiveError(f"column(s) {', '.join(map(repr, missing))} not in the data")
    out = np.full((frame.height, len(schema.columns)), np.nan)
    for j, spec in enumerate(schema.columns):
        series = frame[spec.name]
        if series.dtype.is_numeric() or series.dtype == pl.Boolean:
            out[:, j] = series.cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
            continue
        norm = _normalised(series)
        if spec.kind == "numeric":
            out[:, j] = _as_number(norm, spec.decimal_comma).fill_null(np.nan).to_numpy()
        elif spec.kind == "yes_no":
            values = np.array(norm.to_list(), dtype=object)
            out[:, j] = [1.0 if v in YES else 0.0 if v in NO else np.nan for v in values]
        else:
            lookup = {level: float(i) for i, level in enumerate(spec.levels)}
            fallback_other = lookup.get(OTHER_LEVEL, np.nan)
            fallback_missing = lookup.get(MISSING_LEVEL, fallback_other)
            out[:, j] = [
                fallback_missing if v is None else lookup.get(v, fallback_other)
                for v in norm.to_list()
            ]
    return out


def describe_value(spec: ColumnSpec, value: float) -> str:
    if math.isnan(value):
        return "(missing)"
    if spec.categorical:
        return spec.levels[int(value)]
    if spec.kind == "yes_no":
        return "yes" if value >= 0.5 else "no"
    return f"{value:g}"
