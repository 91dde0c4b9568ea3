"""Training sets from leadflow's own store: outcomes, point-in-time features, drift.

Pure: frames and plain values in, frames out; no database, no clock. Behaviour aggregates
are vectorised (polars); attributes and rule scores are replayed per lead with the core's
own trait reading and scoring functions. The service
(``leadflow.services.predictive_store``) reads the tables into the frames described below
and hands the result to ``leadflow.core.predictive.train``.

**Outcome and labelling time** (``label_outcomes``). For each lead with an acquisition
time, the first of these decides its outcome, and its time is the *labelling time*:

- entry into the target stage (or a later stage of the main path): positive;
- a lost / rejected hand-off (``actions.lose``, ``actions.reject``) or entry into the dead
  end: negative;
- acquisition + ``horizon_days`` without reaching the target: negative ("no progress").

A lead whose outcome is not known yet at ``now`` is left out (it is neither).

**No look-ahead.** Every feature is taken as of a cut-off (the labelling time, or
``gap_days`` before it; ``now`` when scoring current leads) and sees only what was known
strictly *before* it:

- behaviour (``behaviour_features``): counts of events per window, recency, distinct pages
  and content, over the events that occurred before the cut-off;
- attributes (``attributes_as_of``): title and its seniority, lead source, first-touch
  channel and UTM source/medium, industry, employees, country, target flag and the custom
  fields of the lead (``attributes.<key>``) and of its account (``account.<key>``),
  replayed from the identify/group events before the cut-off with the stage machine's own
  trait reading; values no event carries (an import's custom columns, an account import's
  facts) have no date in the store and are used as stored;
- rule scores: the fit score and grade of that profile and the engagement score of the
  events before the cut-off (the core scoring functions, replayed per lead).

What only changes after the outcome - the stage, the owner, deal fields, BANT, the stored
scores and predictions - is never read. The same functions score current leads with
``as_of = now``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from leadflow.core import traits
from leadflow.core.config import LeadModel
from leadflow.core.lifecycle import merge_traits
from leadflow.core.model import Event, LeadProfile
from leadflow.core.scoring import dedupe, has_term, score_engagement, score_fit

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
    "title",
    "title_seniority",
    "source",
    "first_touch_channel",
    "first_touch_utm_source",
    "first_touch_utm_medium",
    "industry",
    "employee_count",
    "country",
    "is_target",
    "fit",
    "fit_grade",
    "engagement",
)
"""Built-in attribute columns, every one as of the cut-off (see ``attributes_as_of``)."""
NUMERIC_ATTRIBUTES = frozenset({"employee_count", "is_target", "fit", "engagement"})
LEAD_PREFIX = "attributes."
ACCOUNT_PREFIX = "account."
NEVER_FEATURES: Mapping[str, str] = {
    "bant": "sales' BANT assessment, recorded at qualification (after the hand-off)",
    "demo_true_intent": "the demo world's simulator truth, never known to a company",
    "lead_status": "the CRM's lead status moves as the lead is worked (the stage itself)",
}
"""Custom-field keys that are never features, with the reason (reported with the model)."""
BUILT_IN_KEYS = frozenset(
    {
        *traits.ACCOUNT_COLUMN_TRAITS,
        *traits.COUNT_KEYS,
        *traits.TARGET_KEYS,
        *traits.PERSON_KEYS,
        "full_name",
        "mobile",
        "website",
        "crm_id",
    }
)
"""Keys an attribute column already covers (industry, employees, target flag...) and
identifying keys an import keeps (names, phone, website, the CRM's record id)."""
MAX_CUSTOM_KEYS = 40
MAX_KEY_LENGTH = 64
MIN_KEY_SHARE = 0.01


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
    """Which columns a model uses; stored with the model to score the same way.

    ``event_names`` and ``windows``: the behaviour aggregates. ``attributes``: whether the
    lead and account attributes and the rule scores as of the cut-off are features (False:
    events only). ``lead_keys`` / ``account_keys``: the custom fields (``leads.attributes``,
    ``accounts.traits``) that become ``attributes.<key>`` / ``account.<key>`` columns."""

    event_names: tuple[str, ...] = KNOWN_EVENT_NAMES
    windows: tuple[int, ...] = WINDOWS
    attributes: bool = True
    lead_keys: tuple[str, ...] = ()
    account_keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_names": list(self.event_names),
            "windows": list(self.windows),
            "attributes": self.attributes,
            "lead_keys": list(self.lead_keys),
            "account_keys": list(self.account_keys),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> FeatureSpec:
        return FeatureSpec(
            tuple(str(n) for n in data.get("event_names", KNOWN_EVENT_NAMES)),
            tuple(int(w) for w in data.get("windows", WINDOWS)),
            bool(data.get("attributes", True)),
            tuple(str(k) for k in data.get("lead_keys", ())),
            tuple(str(k) for k in data.get("account_keys", ())),
        )

    def attribute_columns(self) -> list[str]:
        """The attribute columns this spec adds (none for an events-only spec)."""
        if not self.attributes:
            return []
        return [
            *ATTRIBUTES,
            *(lead_column(k) for k in self.lead_keys),
            *(account_column(k) for k in self.account_keys),
        ]


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


# --------------------------------------------------------------------------- attributes


def lead_column(key: str) -> str:
    return f"{LEAD_PREFIX}{key}"


def account_column(key: str) -> str:
    return f"{ACCOUNT_PREFIX}{key}"


@dataclass(frozen=True, slots=True)
class StoredLead:
    """What the store holds about a lead and its account *now*: the values no event dates.

    ``targeted_at``: when target discovery marked the account (None: marked by other means,
    or not a target)."""

    lead_id: int
    title: str | None = None
    source: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    industry: str | None = None
    employee_count: int | None = None
    country: str | None = None
    is_target: bool = False
    targeted_at: datetime | None = None
    account_traits: Mapping[str, Any] = field(default_factory=dict)


def _scalar(value: Any) -> str | None:
    """A custom field's value as text (cleaning types it), None for nothing or a structure."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text[:200] or None


def choose_attribute_keys(
    stored: Iterable[StoredLead],
    fit_keys: Sequence[str] = (),
    *,
    limit: int = MAX_CUSTOM_KEYS,
    min_share: float = MIN_KEY_SHARE,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(lead keys, account keys): the custom fields that become features. The keys the fit
    model's ``fit.attributes`` rules read, then the most frequent ones held by at least
    ``min_share`` of the leads (up to ``limit`` each); never ``NEVER_FEATURES`` nor keys a
    built-in column covers, nor keys longer than ``MAX_KEY_LENGTH`` or with control
    characters; only keys with a plain value (text, number, yes/no)."""
    lead_counts: Counter[str] = Counter()
    account_counts: Counter[str] = Counter()
    n = 0
    for lead in stored:
        n += 1
        lead_counts.update(k for k, v in lead.attributes.items() if _scalar(v) is not None)
        account_counts.update(k for k, v in lead.account_traits.items() if _scalar(v) is not None)

    def pick(counts: Counter[str], first: Sequence[str]) -> tuple[str, ...]:
        out = [k for k in dict.fromkeys(first) if k not in NEVER_FEATURES]
        floor = max(1, math.ceil(min_share * n))
        for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(out) >= limit:
                break
            usable = (
                key not in NEVER_FEATURES
                and key not in BUILT_IN_KEYS
                and key not in out
                and len(key) <= MAX_KEY_LENGTH
                and key.isprintable()
            )
            if count >= floor and usable:
                out.append(key)
        return tuple(out)

    return pick(lead_counts, fit_keys), pick(account_counts, ())


@dataclass(frozen=True, slots=True)
class _Dated:
    """Which of a lead's values its events carry (at any time): those are read from the
    events as of the cut-off, never from the stored row."""

    person: frozenset[str]
    attributes: frozenset[str]
    account: frozenset[str]
    account_traits: frozenset[str]


_BLANK = LeadProfile(id=0)
_PROFILE_FIELDS = ("title", "industry", "employee_count", "country", "is_target_account")


def _dated(events: Sequence[Event]) -> _Dated:
    person: set[str] = set()
    attributes: set[str] = set()
    account: set[str] = set()
    account_traits: set[str] = set()
    for event in events:
        if event.type not in ("identify", "group") or not event.properties:
            continue
        seen = merge_traits(_BLANK, event)
        for name in _PROFILE_FIELDS:
            if getattr(seen, name) != getattr(_BLANK, name):
                (person if name == "title" else account).add(name)
        attributes.update(seen.attributes)
        if event.type == "identify":
            if "source" in traits.read_traits(event.properties).person:
                person.add("source")
        else:
            account_traits.update(traits.read_group(event.properties, None).extra)
    return _Dated(
        frozenset(person), frozenset(attributes), frozenset(account), frozenset(account_traits)
    )


def attributes_as_of(
    stored: StoredLead,
    events: Iterable[Event],
    cutoffs: Sequence[datetime],
    model: LeadModel,
    spec: FeatureSpec,
) -> list[dict[str, Any]]:
    """The attribute features of one lead at each cut-off: only what was known *strictly
    before* it.

    - Values the lead's events carry (identify and group traits: title, lead source,
      industry, employees, country, target flag, custom traits) are replayed from the
      events before the cut-off with the stage machine's own reading
      (:func:`leadflow.core.lifecycle.merge_traits`): a value given later is not seen, a
      value changed later is seen as it was.
    - Values no event carries (custom columns of an import, account facts from an account
      import or the CRM) have no date in the store: they are used as stored (the leakage
      guard screens them). An account marked a target by target discovery counts only
      from ``targeted_at``.
    - First touch: the channel, UTM source and medium of the lead's earliest event.
    - ``fit``/``fit_grade``: :func:`leadflow.core.scoring.score_fit` of that profile;
      ``engagement``: :func:`leadflow.core.scoring.score_engagement` of the events before
      the cut-off, evaluated at the cut-off (decay included).
    """
    ordered = dedupe(events)
    dated = _dated(ordered)
    rules = [(r.label, list(r.patterns)) for r in (model.spec.fit.title_seniority or [])]
    rows = []
    for cut in cutoffs:
        before = [e for e in ordered if e.occurred_at < cut]
        profile = LeadProfile(
            id=stored.lead_id,
            title=None if "title" in dated.person else stored.title,
            industry=None if "industry" in dated.account else stored.industry,
            employee_count=None if "employee_count" in dated.account else stored.employee_count,
            country=None if "country" in dated.account else stored.country,
            is_target_account=stored.is_target
            and (
                stored.targeted_at < cut
                if stored.targeted_at is not None
                else "is_target_account" not in dated.account
            ),
            attributes={k: v for k, v in stored.attributes.items() if k not in dated.attributes},
        )
        source = None if "source" in dated.person else stored.source
        account_traits = {
            k: v for k, v in stored.account_traits.items() if k not in dated.account_traits
        }
        for event in before:
            if event.type not in ("identify", "group") or not event.properties:
                continue
            profile = merge_traits(profile, event)
            if event.type == "identify":
                source = traits.read_traits(event.properties).person.get("source", source)
            else:
                account_traits.update(traits.read_group(event.properties, None).extra)
        first = before[0] if before else None
        touch = next((e for e in before if e.utm_source or e.utm_medium), None)
        fit = score_fit(profile, model)
        row: dict[str, Any] = {
            "title": profile.title,
            "title_seniority": next(
                (
                    label
                    for label, patterns in rules
                    if any(has_term(profile.title, p) for p in patterns)
                ),
                None,
            ),
            "source": source,
            "first_touch_channel": first.channel if first else None,
            "first_touch_utm_source": touch.utm_source if touch else None,
            "first_touch_utm_medium": touch.utm_medium if touch else None,
            "industry": profile.industry,
            "employee_count": profile.employee_count,
            "country": profile.country.strip().upper() if profile.country else None,
            "is_target": 1.0 if profile.is_target_account else 0.0,
            "fit": fit.score,
            "fit_grade": fit.grade,
            "engagement": score_engagement(before, cut, model).total,
        }
        for key in spec.lead_keys:
            row[lead_column(key)] = _scalar(profile.attributes.get(key))
        for key in spec.account_keys:
            row[account_column(key)] = _scalar(account_traits.get(key))
        rows.append(row)
    return rows


def attribute_schema(spec: FeatureSpec) -> dict[str, Any]:
    """The polars schema of the attribute columns: numbers as floats, the rest as text
    (``leadflow.core.predictive.infer_schema`` types them, as it does a CSV's)."""
    return {
        name: pl.Float64 if name in NUMERIC_ATTRIBUTES else pl.Utf8
        for name in spec.attribute_columns()
    }


def feature_frame(
    as_of: pl.DataFrame,
    attributes: pl.DataFrame | None,
    events: pl.DataFrame,
    spec: FeatureSpec,
) -> pl.DataFrame:
    """``as_of`` (``lead_id``, ``as_of`` and any extra columns) with every feature added.

    ``attributes``: ``lead_id`` and the attribute columns as of that lead's ``as_of`` (one
    row per lead; None for an events-only spec)."""
    behaviour = behaviour_features(events, as_of.select(ID, "as_of"), spec)
    out = as_of.join(behaviour.drop("as_of", strict=False), on=ID, how="left")
    if attributes is None or not spec.attributes:
        return out
    out = out.join(attributes.drop("as_of", strict=False), on=ID, how="left")
    return out.select(*as_of.columns, *spec.attribute_columns(), *behaviour_columns(spec))


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
    "StoredLead",
    "attribute_schema",
    "attributes_as_of",
    "behaviour_columns",
    "behaviour_features",
    "choose_attribute_keys",
    "choose_event_names",
    "drift",
    "feature_frame",
    "label_outcomes",
    "psi",
    "reference_of",
    "time_holdout",
    "title_seniority",
]
