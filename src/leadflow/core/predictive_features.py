"""Training sets from leadflow's own store: outcomes, point-in-time features, drift.

Pure and vectorised (polars): frames in, frames out; no database, no clock. The service
(``leadflow.services.predictive_store``) reads the tables into the frames described below
and hands the result to ``leadflow.core.predictive.train``.

**Outcome and labelling time** (``label_outcomes``). For each lead with an acquisition
time, the first of these decides its outcome, and its time is the *labelling time*:

- entry into the target stage (or a later stage of the main path): positive;
- a lost / rejected hand-off (``actions.lose``, ``actions.reject``) or entry into the dead
  end: negative;
- acquisition + ``horizon_days`` without reaching the target: negative ("no progress").

A lead whose outcome is not known yet at ``now`` is left out (it is neither).

**No look-ahead** (``behaviour_features``): only events that occurred strictly *before* the
labelling time are counted, so nothing that happened at or after the outcome can enter a
training row. The same function scores current leads with ``as_of = now``.

**Rule scores.** Fit (ICP) does not depend on events, so the lead's current fit score and
grade are used as they are. The engagement score as of the labelling time would need a
replay of every lead's history; it is not computed here - the behaviour aggregates (counts
per event over 7/30/90 days, recency) carry the same information without look-ahead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from leadflow.core.scoring import has_term

WINDOWS: tuple[int, ...] = (7, 30, 90)
KNOWN_EVENT_NAMES: tuple[str, ...] = (
    "email_open",
    "email_click",
    "email_unsubscribe",
    "form_submit",
    "content_download",
    "webinar_registered",
    "webinar_attended",
    "event_attended",
    "catalogue_request",
    "contact_request",
    "quote_request",
)
ATTENDANCE_NAMES: tuple[str, ...] = ("webinar_attended", "event_attended")
MAX_EVENT_NAMES = 25
NEGATIVE_RULES: tuple[str, ...] = ("actions.lose", "actions.reject")
PSI_FLAG = 0.2
PSI_EPSILON = 1e-4
ID = "lead_id"
LABEL_AT = "label_at"
CONVERTED = "converted"
RULE = "rule_mql"
ACQUIRED_AT = "acquired_at"
PROBABILITY = "probability"
ATTRIBUTES: tuple[str, ...] = (
    "industry",
    "employee_count",
    "country",
    "title_seniority",
    "source",
    "is_target",
    "fit",
    "fit_grade",
)


def _utc(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Datetime columns as microsecond UTC (SQLite and PostgreSQL rows agree)."""
    exprs = []
    for name in columns:
        dtype = frame.schema[name]
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            col = (
                col.dt.replace_time_zone("UTC")
                if dtype.time_zone is None
                else col.dt.convert_time_zone("UTC")
            )
            exprs.append(col.dt.cast_time_unit("us").alias(name))
        else:
            exprs.append(pl.col(name).cast(pl.Datetime("us", "UTC")).alias(name))
    return frame.with_columns(exprs) if exprs else frame


# --------------------------------------------------------------------------- outcomes


def label_outcomes(
    leads: pl.DataFrame,
    changes: pl.DataFrame,
    *,
    target_stages: Sequence[str],
    negative_stages: Sequence[str],
    handoff_stages: Sequence[str],
    horizon_days: float,
    now: datetime,
    negative_rules: Sequence[str] = NEGATIVE_RULES,
) -> pl.DataFrame:
    """One row per lead whose outcome is known at ``now``.

    ``leads``: ``lead_id``, ``acquired_at``. ``changes`` (the stage-history log):
    ``lead_id``, ``to_stage``, ``at``, ``rule``. Returns ``lead_id``, ``acquired_at``,
    ``label_at``, ``converted`` (1/0) and ``rule_mql`` ("yes" when the rule-based decision
    handed the lead off - it entered one of ``handoff_stages`` - before the labelling time).
    """
    if horizon_days <= 0:
        raise ValueError("horizon_days: must be greater than 0")
    leads = _utc(leads.select(ID, ACQUIRED_AT), ACQUIRED_AT).filter(
        pl.col(ACQUIRED_AT).is_not_null()
    )
    changes = _utc(changes.select(ID, "to_stage", "at", "rule"), "at")
    joined = changes.join(leads, on=ID, how="inner").filter(pl.col("at") >= pl.col(ACQUIRED_AT))
    firsts = joined.group_by(ID).agg(
        pl.col("at").filter(pl.col("to_stage").is_in(list(target_stages))).min().alias("pos_at"),
        pl.col("at")
        .filter(
            pl.col("to_stage").is_in(list(negative_stages))
            | pl.col("rule").is_in(list(negative_rules))
        )
        .min()
        .alias("neg_at"),
    )
    horizon = timedelta(days=horizon_days)
    now_lit = pl.lit(now).cast(pl.Datetime("us", "UTC"))
    frame = (
        leads.join(firsts, on=ID, how="left")
        .with_columns((pl.col(ACQUIRED_AT) + horizon).alias("deadline"))
        .with_columns(pl.min_horizontal("neg_at", "deadline").alias("negative_at"))
        .with_columns(
            (pl.col("pos_at").is_not_null() & (pl.col("pos_at") <= pl.col("negative_at")))
            .fill_null(False)
            .alias("positive")
        )
        .with_columns(
            pl.when(pl.col("positive"))
            .then(pl.col("pos_at"))
            .otherwise(pl.col("negative_at"))
            .alias(LABEL_AT)
        )
        .filter(pl.col(LABEL_AT) <= now_lit)
    )
    handed = (
        changes.filter(pl.col("to_stage").is_in(list(handoff_stages)))
        .join(frame.select(ID, LABEL_AT), on=ID, how="inner")
        .filter(pl.col("at") < pl.col(LABEL_AT))
        .select(ID)
        .unique()
        .with_columns(pl.lit(True).alias("handed"))
    )
    return (
        frame.join(handed, on=ID, how="left")
        .select(
            ID,
            ACQUIRED_AT,
            LABEL_AT,
            pl.col("positive").cast(pl.Int8).alias(CONVERTED),
            pl.when(pl.col("handed").fill_null(False))
            .then(pl.lit("yes"))
            .otherwise(pl.lit("no"))
            .alias(RULE),
        )
        .sort(LABEL_AT, ID)
    )


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureSpec:
    """Which behaviour columns a model uses; stored with the model to score the same way."""

    event_names: tuple[str, ...] = KNOWN_EVENT_NAMES
    windows: tuple[int, ...] = WINDOWS

    def to_dict(self) -> dict[str, Any]:
        return {"event_names": list(self.event_names), "windows": list(self.windows)}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> FeatureSpec:
        return FeatureSpec(
            tuple(str(n) for n in data.get("event_names", KNOWN_EVENT_NAMES)),
            tuple(int(w) for w in data.get("windows", WINDOWS)),
        )


def choose_event_names(events: pl.DataFrame, limit: int = MAX_EVENT_NAMES) -> FeatureSpec:
    """The known marketing events plus the most frequent other track events (up to ``limit``)."""
    tracked = events.filter((pl.col("type") == "track") & pl.col("name").is_not_null())
    frequent = (
        tracked.group_by("name").len().sort(["len", "name"], descending=[True, False])["name"]
    )
    names = list(KNOWN_EVENT_NAMES)
    columns = {_safe(n) for n in names}
    for name in frequent.to_list():
        if len(names) >= limit:
            break
        if _safe(name) not in columns:  # "a-b" and "a_b" would share a column name
            names.append(name)
            columns.add(_safe(name))
    return FeatureSpec(tuple(names))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower())[:60]


def behaviour_columns(spec: FeatureSpec) -> list[str]:
    cols = []
    for w in spec.windows:
        cols += [f"events_{w}d", f"pages_{w}d"]
        cols += [f"{_safe(n)}_{w}d" for n in spec.event_names]
    return [
        *cols,
        "events_total",
        "recency_days",
        "distinct_pages",
        "distinct_content",
        "attended_total",
        "form_submits_total",
    ]


def behaviour_features(
    events: pl.DataFrame, as_of: pl.DataFrame, spec: FeatureSpec
) -> pl.DataFrame:
    """Aggregates of each lead's events strictly before its ``as_of`` time.

    ``events``: ``lead_id``, ``type``, ``name``, ``occurred_at``, ``path`` (page path or
    null), ``content`` (content key or null). ``as_of``: ``lead_id``, ``as_of``. One row per
    ``as_of`` row; counts are 0 and recency null when the lead had no earlier event.
    """
    as_of = _utc(as_of.select(ID, "as_of"), "as_of")
    ev = _utc(events.select(ID, "type", "name", "occurred_at", "path", "content"), "occurred_at")
    seen = ev.join(as_of, on=ID, how="inner").filter(pl.col("occurred_at") < pl.col("as_of"))
    seen = seen.with_columns(
        ((pl.col("as_of") - pl.col("occurred_at")).dt.total_seconds() / 86400.0).alias("age")
    )
    is_track = pl.col("type") == "track"
    aggs: list[pl.Expr] = []
    for w in spec.windows:
        recent = pl.col("age") < w
        aggs.append(recent.sum().alias(f"events_{w}d"))
        aggs.append((recent & (pl.col("type") == "page")).sum().alias(f"pages_{w}d"))
        for name in spec.event_names:
            aggs.append(
                (recent & is_track & (pl.col("name") == name)).sum().alias(f"{_safe(name)}_{w}d")
            )
    aggs += [
        pl.len().alias("events_total"),
        pl.col("age").min().alias("recency_days"),
        pl.col("path")
        .filter(pl.col("type") == "page")
        .drop_nulls()
        .n_unique()
        .alias("distinct_pages"),
        pl.col("content").drop_nulls().n_unique().alias("distinct_content"),
        (is_track & pl.col("name").is_in(list(ATTENDANCE_NAMES))).sum().alias("attended_total"),
        (is_track & (pl.col("name") == "form_submit")).sum().alias("form_submits_total"),
    ]
    grouped = seen.group_by(ID).agg(aggs)
    columns = behaviour_columns(spec)
    counts = [c for c in columns if c != "recency_days"]
    out = as_of.join(grouped, on=ID, how="left")
    return out.select(
        ID,
        *[pl.col(c).fill_null(0).cast(pl.Float64) for c in counts],
        pl.col("recency_days").cast(pl.Float64),
    ).select(ID, *columns)


def title_seniority(titles: pl.Series, rules: Sequence[tuple[str, Sequence[str]]]) -> pl.Series:
    """The first matching seniority label per title (the fit model's rules), else null."""
    unique = titles.drop_nulls().unique().to_list()
    mapping: dict[str, str | None] = {}
    for title in unique:
        mapping[title] = next(
            (label for label, patterns in rules if any(has_term(title, p) for p in patterns)),
            None,
        )
    return titles.replace_strict(mapping, default=None, return_dtype=pl.Utf8).alias(
        "title_seniority"
    )


def attribute_features(
    profiles: pl.DataFrame, seniority_rules: Sequence[tuple[str, Sequence[str]]]
) -> pl.DataFrame:
    """``lead_id`` plus lead and account attributes; ``title`` becomes its seniority level.

    ``profiles``: ``lead_id``, ``industry``, ``employee_count``, ``country``, ``title``,
    ``source``, ``is_target``, ``fit``, ``fit_grade``.
    """
    return profiles.select(
        ID,
        pl.col("industry").cast(pl.Utf8),
        pl.col("employee_count").cast(pl.Float64),
        pl.col("country").cast(pl.Utf8),
        title_seniority(profiles["title"].cast(pl.Utf8), seniority_rules),
        pl.col("source").cast(pl.Utf8),
        pl.col("is_target").cast(pl.Float64).fill_null(0.0),
        pl.col("fit").cast(pl.Float64),
        pl.col("fit_grade").cast(pl.Utf8),
    )


def feature_frame(
    as_of: pl.DataFrame,
    attributes: pl.DataFrame,
    events: pl.DataFrame,
    spec: FeatureSpec,
) -> pl.DataFrame:
    """``as_of`` (``lead_id``, ``as_of`` and any extra columns) with every feature added."""
    behaviour = behaviour_features(events, as_of.select(ID, "as_of"), spec)
    return as_of.join(attributes, on=ID, how="left").join(
        behaviour.drop("as_of", strict=False), on=ID, how="left"
    )


def time_holdout(
    frame: pl.DataFrame, column: str, share: float = 0.2
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(earlier rows, the latest ``share`` of rows) by ``column``; ties stay together."""
    if not 0 < share < 1:
        raise ValueError("holdout share: must be between 0 and 1")
    ordered = frame.sort(column, ID)
    cut_at = ordered[column][math.floor(ordered.height * (1 - share))]
    return ordered.filter(pl.col(column) < cut_at), ordered.filter(pl.col(column) >= cut_at)


# --------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class DriftRow:
    column: str
    psi: float
    flagged: bool
    reference_rows: int
    current_rows: int


@dataclass
class Reference:
    """Training-time distribution of one column: numeric bin edges or categorical levels."""

    kind: str
    edges: list[float] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    rows: int = 0


def _numeric_shares(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    nan = np.isnan(values)
    bins = np.searchsorted(np.asarray(edges), values[~nan], side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1).astype(float)
    counts = np.append(counts, nan.sum())
    return counts / max(1, len(values))


def _categorical_shares(values: pl.Series, levels: Sequence[str]) -> np.ndarray:
    text = values.cast(pl.Utf8).fill_null("(missing)")
    known = set(levels)
    counts = dict.fromkeys([*levels, "(other)"], 0)
    for level, n in text.value_counts().iter_rows():
        counts[level if level in known else "(other)"] += n
    return np.array(list(counts.values()), dtype=float) / max(1, values.len())


def reference_of(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per column: deciles (numeric, plus a missing bin) or levels with their shares."""
    out: dict[str, dict[str, Any]] = {}
    for name in columns:
        series = frame[name]
        if series.dtype.is_numeric():
            values = series.cast(pl.Float64).fill_null(np.nan).to_numpy()
            finite = values[~np.isnan(values)]
            edges = (
                sorted({float(e) for e in np.quantile(finite, np.linspace(0.1, 0.9, 9))})
                if len(finite)
                else []
            )
            shares = _numeric_shares(values, edges)
            ref = Reference("numeric", edges=edges, shares=shares.tolist(), rows=len(values))
        else:
            text = series.cast(pl.Utf8).fill_null("(missing)")
            levels = text.value_counts(sort=True).head(30)[name].to_list()
            shares = _categorical_shares(series, levels)
            ref = Reference("categorical", levels=levels, shares=shares.tolist(), rows=len(text))
        out[name] = ref.__dict__.copy()
    return out


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index: sum((a - e) * ln(a / e)), empty bins floored at 1e-4."""
    e = np.maximum(np.asarray(expected, dtype=float), PSI_EPSILON)
    a = np.maximum(np.asarray(actual, dtype=float), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def drift(reference: Mapping[str, Mapping[str, Any]], current: pl.DataFrame) -> list[DriftRow]:
    """PSI per referenced column present in ``current``; flagged above 0.2. Worst first."""
    rows = []
    for name, ref in reference.items():
        if name not in current.columns or current.height == 0:
            continue
        series = current[name]
        if ref["kind"] == "numeric":
            values = series.cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
            shares = _numeric_shares(values, ref["edges"])
        else:
            shares = _categorical_shares(series, ref["levels"])
        value = round(psi(ref["shares"], shares), 4)
        rows.append(DriftRow(name, value, value > PSI_FLAG, int(ref["rows"]), current.height))
    return sorted(rows, key=lambda r: (-r.psi, r.column))


__all__ = [
    "ACQUIRED_AT",
    "ATTRIBUTES",
    "CONVERTED",
    "ID",
    "LABEL_AT",
    "PROBABILITY",
    "PSI_FLAG",
    "RULE",
    "DriftRow",
    "FeatureSpec",
    "attribute_features",
    "behaviour_columns",
    "behaviour_features",
    "choose_event_names",
    "drift",
    "feature_frame",
    "label_outcomes",
    "psi",
    "reference_of",
    "time_holdout",
    "title_seniority",
]
