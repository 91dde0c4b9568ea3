"""Smart lists: a typed, validated query over leads, parsed from query-string parameters.

One :class:`LeadQuery` serves the dashboard's lead list, ``GET /api/leads``,
``leadflow leads list`` and saved views (which store the query string). Parsing never
trusts its input: every refusal is a :class:`ListQueryError` naming the parameter and the
reason (unknown parameter, bad number, ``min`` above ``max``, unknown sort column, a value
too long...). Text is only ever data: search terms are matched literally by the storage
layer (``%`` and ``_`` included).

Parameters (each at most once unless marked *repeatable*):

- ``q``: search in name, e-mail, e-mail domain and company name (case-insensitive substring)
- ``stage`` (*repeatable*): stage id; ``role`` (*repeatable*): stage role (``handoff``...)
- ``engagement_min`` / ``engagement_max``, ``fit_min`` / ``fit_max``: score ranges (inclusive)
- ``grade`` (*repeatable*): fit grade
- ``owner``: the sales rep who owns the lead's account
- ``active_after`` / ``active_before``: last activity (an event) on/after, or none since,
  a date (``YYYY-MM-DD``) or an ISO 8601 time
- ``program``: actively enrolled in this nurture program; ``segment``: member of this
  segment (key); ``form``: submitted this form (key); ``campaign``: has an event of this
  ``utm_campaign``; ``source``: lead source; ``account``: account id; ``domain``: account
  domain
- ``f.<field>``: custom attribute equals a value; ``f.<field>.min`` / ``f.<field>.max``:
  numeric custom attribute range
- ``sort``: a column, ``-column`` for descending (default ``-id``: newest first)
- ``page`` (from 1), ``size`` (1 to :data:`MAX_SIZE`); ``cursor``: only leads with a
  smaller id (keyset paging on the default order)
- ``cols``: comma-separated columns to show

Drill-down parameters (what a dashboard figure links to; see ``docs/lead-lists.md``):

- ``move_to`` / ``move_from`` (both *repeatable*): made a stage move (in the stage log,
  with each lead's first entry as a move from ``(new)``) into one of these stages / out of
  one of these stages (``(new)``: first seen), at ``moved_after`` <= at < ``moved_before``
- ``as_of``: ``stage`` and ``role`` filter the stage held at this instant (from the log)
- ``converted_to``: first entry ever into this stage at ``converted_after`` <= at <
  ``converted_before``; ``touched_channel`` / ``touched_campaign``: a touch (the
  attribution report's) of this channel / ``utm_campaign`` up to that conversion
- ``submitted_after`` / ``submitted_before``: submitted ``form`` (or any form) in the period
- ``enrolment``: ``active`` (the default of ``program``), ``completed``, ``exited`` or
  ``any``; ``step``: with ``program``, a send of this step; ``step_result``: ``planned``,
  ``sent``, ``skipped``, ``failed``, ``opened``, ``clicked`` or ``unsubscribed``
- ``action``: a sales action of this name (``accept``...) at ``action_after`` <= at <
  ``action_before``
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from math import isfinite
from urllib.parse import urlencode

from leadflow.core import errors
from leadflow.core.config.roles import STAGE_ROLES

MAX_SIZE = 1000
DEFAULT_SIZE = 50
MAX_OFFSET = 100_000
"""Deepest row a page may start at: past it, narrow the filter (or use ``cursor``)."""
MAX_TEXT = 200
MAX_VALUES = 50
"""At most this many values of a repeatable parameter (stages, roles, grades)."""
MAX_FIELDS = 10
MAX_QUERY_STRING = 4000
SCORE_LIMIT = 1e9

COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "email",
    "title",
    "company",
    "domain",
    "stage",
    "engagement",
    "fit",
    "fit_grade",
    "owner",
    "last_activity",
    "program",
    "source",
    "created_at",
)
"""Every column a list can show (and sort by)."""
SORTABLE: frozenset[str] = frozenset(COLUMNS) - {"program"}
DEFAULT_COLUMNS: tuple[str, ...] = (
    "name",
    "company",
    "stage",
    "engagement",
    "fit_grade",
    "owner",
    "last_activity",
    "created_at",
)
DEFAULT_SORT = "id"

_FIELD_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_SIMPLE = ("program", "segment", "form", "campaign", "source", "owner", "domain")
_SINGLE = frozenset(
    {
        "q",
        "engagement_min",
        "engagement_max",
        "fit_min",
        "fit_max",
        "active_after",
        "active_before",
        "account",
        "sort",
        "page",
        "size",
        "cursor",
        "cols",
        *_SIMPLE,
    }
)
_REPEATABLE = frozenset({"stage", "role", "grade"})
NEW = "(new)"
"""``move_from`` of a lead's first entry into the stage log (the Sankey's ``(new)``)."""
ENROLMENTS = ("active", "completed", "exited", "any")
STEP_RESULTS = ("planned", "sent", "skipped", "failed", "opened", "clicked", "unsubscribed")
_DRILL_MOMENTS = (
    "moved_after",
    "moved_before",
    "as_of",
    "converted_after",
    "converted_before",
    "submitted_after",
    "submitted_before",
    "action_after",
    "action_before",
)
_DRILL_TEXT = (
    "converted_to",
    "touched_channel",
    "touched_campaign",
    "enrolment",
    "step",
    "step_result",
    "action",
)
DRILL_PARAMETERS: tuple[str, ...] = ("move_from", "move_to", *_DRILL_TEXT, *_DRILL_MOMENTS)
"""The drill-down parameters, in the order the filter form shows them."""
_SINGLE = _SINGLE | frozenset(_DRILL_TEXT) | frozenset(_DRILL_MOMENTS)
_REPEATABLE = _REPEATABLE | {"move_to", "move_from"}
PARAMETERS: frozenset[str] = _SINGLE | _REPEATABLE
"""Every parameter name (besides ``f.<field>`` custom attribute filters)."""


class ListQueryError(errors.BadRequest):
    """A list parameter is refused; ``field`` names it, ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}", field=name)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldFilter:
    """A custom attribute filter: equality (``value``) or a numeric range."""

    name: str
    value: str | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True, slots=True)
class LeadQuery:
    q: str = ""
    stages: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    engagement_min: float | None = None
    engagement_max: float | None = None
    fit_min: float | None = None
    fit_max: float | None = None
    grades: tuple[str, ...] = ()
    owner: str = ""
    active_after: datetime | None = None
    active_before: datetime | None = None
    program: str = ""
    segment: str = ""
    form: str = ""
    campaign: str = ""
    source: str = ""
    account_id: int | None = None
    domain: str = ""
    fields: tuple[FieldFilter, ...] = ()
    sort: str = DEFAULT_SORT
    descending: bool = True
    page: int = 1
    size: int = DEFAULT_SIZE
    cursor: int | None = None
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    explicit_columns: bool = field(default=False, compare=False)
    # Drill-down filters (appended; see the module docstring).
    move_to: tuple[str, ...] = ()
    move_from: tuple[str, ...] = ()
    moved_after: datetime | None = None
    moved_before: datetime | None = None
    as_of: datetime | None = None
    converted_to: str = ""
    converted_after: datetime | None = None
    converted_before: datetime | None = None
    touched_channel: str = ""
    touched_campaign: str = ""
    submitted_after: datetime | None = None
    submitted_before: datetime | None = None
    enrolment: str = ""
    step: str = ""
    step_result: str = ""
    action: str = ""
    action_after: datetime | None = None
    action_before: datetime | None = None

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def filtered(self) -> bool:
        """Whether any filter (not sort, page or columns) narrows the list."""
        return bool(
            self.q
            or self.stages
            or self.roles
            or self.grades
            or self.fields
            or self.account_id is not None
            or self.cursor is not None
            or any(
                v is not None
                for v in (
                    self.engagement_min,
                    self.engagement_max,
                    self.fit_min,
                    self.fit_max,
                    self.active_after,
                    self.active_before,
                )
            )
            or any(getattr(self, name) for name in _SIMPLE)
            or bool(self.drill_params())
        )

    def drill_params(self) -> list[tuple[str, str]]:
        """The drill-down filters that are set, as query-string parameters."""
        out: list[tuple[str, str]] = [("move_from", s) for s in self.move_from]
        out += [("move_to", s) for s in self.move_to]
        for name in _DRILL_TEXT:
            if getattr(self, name):
                out.append((name, getattr(self, name)))
        for name in _DRILL_MOMENTS:
            value = getattr(self, name)
            if value is not None:
                out.append((name, _moment_text(value)))
        return out

    def without(self, name: str, value: str | None = None) -> str:
        """This query's string (page 1) without parameter ``name`` (or only its ``value``):
        the link that removes one filter chip."""
        return urlencode(
            [
                (k, v)
                for k, v in self.params(paging=False)
                if not (k == name and (value is None or v == value))
            ]
        )

    def with_page(self, page: int) -> LeadQuery:
        return replace(self, page=page)

    def params(self, *, paging: bool = True) -> list[tuple[str, str]]:
        """The query as query-string parameters (what :func:`parse` reads back)."""
        out: list[tuple[str, str]] = []
        if self.q:
            out.append(("q", self.q))
        out += [("stage", s) for s in self.stages]
        out += [("role", r) for r in self.roles]
        for name in ("engagement_min", "engagement_max", "fit_min", "fit_max"):
            value = getattr(self, name)
            if value is not None:
                out.append((name, _number_text(value)))
        out += [("grade", g) for g in self.grades]
        for name in ("active_after", "active_before"):
            value = getattr(self, name)
            if value is not None:
                out.append((name, value.isoformat()))
        for name in _SIMPLE:
            if getattr(self, name):
                out.append((name, getattr(self, name)))
        if self.account_id is not None:
            out.append(("account", str(self.account_id)))
        for f in self.fields:
            if f.value is not None:
                out.append((f"f.{f.name}", f.value))
            if f.low is not None:
                out.append((f"f.{f.name}.min", _number_text(f.low)))
            if f.high is not None:
                out.append((f"f.{f.name}.max", _number_text(f.high)))
        out += self.drill_params()
        if self.sort != DEFAULT_SORT or not self.descending:
            out.append(("sort", ("-" if self.descending else "") + self.sort))
        if self.explicit_columns:
            out.append(("cols", ",".join(self.columns)))
        if paging:
            if self.size != DEFAULT_SIZE:
                out.append(("size", str(self.size)))
            if self.page != 1:
                out.append(("page", str(self.page)))
            if self.cursor is not None:
                out.append(("cursor", str(self.cursor)))
        return out

    def query_string(self, *, paging: bool = True) -> str:
        return urlencode(self.params(paging=paging))


def _moment_text(value: datetime) -> str:
    """A date when the moment is UTC midnight (what the filter form's date inputs give)."""
    if value.utcoffset() == UTC.utcoffset(None) and value.time() == datetime.min.time():
        return value.date().isoformat()
    return value.isoformat()


def _number_text(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _items(
    params: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]],
) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        pairs: list[tuple[str, str]] = []
        for key, value in params.items():
            if isinstance(value, str):
                pairs.append((key, value))
            else:
                pairs += [(key, v) for v in value]
        return pairs
    return list(params)


def _text(name: str, value: str, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise ListQueryError(name, f"longer than {limit} characters")
    if "\x00" in value:
        raise ListQueryError(name, "contains a NUL character")
    return value.strip()


def _number(name: str, value: str) -> float:
    text = _text(name, value, 40)
    try:
        number = float(text)
    except ValueError:
        raise ListQueryError(name, f"{text[:40]!r} is not a number") from None
    if not isfinite(number) or abs(number) > SCORE_LIMIT:
        raise ListQueryError(name, f"must be a finite number within ±{SCORE_LIMIT:.0e}")
    return number


def _integer(name: str, value: str, low: int, high: int) -> int:
    text = _text(name, value, 20)
    if not (text.isascii() and text.isdigit()):
        raise ListQueryError(name, f"{text[:20]!r} is not a whole number")
    number = int(text)
    if not low <= number <= high:
        raise ListQueryError(name, f"must be between {low} and {high}")
    return number


def _moment(name: str, value: str) -> datetime:
    text = _text(name, value, 40)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ListQueryError(
            name, f"{text[:40]!r} is not a date (YYYY-MM-DD) or ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _range(name: str, low: float | None, high: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise ListQueryError(name, f"min {_number_text(low)} is above max {_number_text(high)}")


def parse(
    params: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]],
    *,
    stages: Collection[str] | None = None,
    grades: Collection[str] | None = None,
    max_size: int = MAX_SIZE,
    ignore: Collection[str] = (),
) -> LeadQuery:
    """A :class:`LeadQuery` from query-string parameters, or :class:`ListQueryError`.

    ``stages`` and ``grades``, when given, are the model's: other values are refused.
    Parameters in ``ignore`` (a caller's own, like a CSRF token) are skipped; empty values
    mean "no filter" (a form's blank field)."""
    pairs = [(k, v) for k, v in _items(params) if k not in ignore]
    if sum(len(k) + len(v) for k, v in pairs) > MAX_QUERY_STRING:
        raise ListQueryError("query", f"longer than {MAX_QUERY_STRING} characters")
    seen: dict[str, str] = {}
    multi: dict[str, list[str]] = {name: [] for name in _REPEATABLE}
    custom: dict[str, dict[str, str]] = {}
    for key, value in pairs:
        if key.startswith("f."):
            name, _, op = key[2:].partition(".")
            if not _FIELD_NAME.match(name) or op not in ("", "min", "max"):
                raise ListQueryError(
                    key[:80], "a custom field filter is f.<name>, f.<name>.min or f.<name>.max"
                )
            if value.strip() == "":
                continue
            slot = custom.setdefault(name, {})
            if op in slot:
                raise ListQueryError(key, "given more than once")
            slot[op] = value
            continue
        if key in _REPEATABLE:
            if value.strip():
                multi[key].append(value)
            continue
        if key not in _SINGLE:
            raise ListQueryError(key[:80] or "(empty name)", "unknown parameter")
        if key in seen:
            raise ListQueryError(key, "given more than once")
        seen[key] = value
    if len(custom) > MAX_FIELDS:
        raise ListQueryError("f", f"more than {MAX_FIELDS} custom field filters")

    values: dict[str, object] = {}

    def given(name: str) -> str | None:
        value = seen.get(name)
        return value if value is not None and value.strip() != "" else None

    if (q := given("q")) is not None:
        values["q"] = _text("q", q)
    for name in ("engagement_min", "engagement_max", "fit_min", "fit_max"):
        if (raw := given(name)) is not None:
            values[name] = _number(name, raw)
    _range("engagement", values.get("engagement_min"), values.get("engagement_max"))  # type: ignore[arg-type]
    _range("fit", values.get("fit_min"), values.get("fit_max"))  # type: ignore[arg-type]
    for name in ("active_after", "active_before"):
        if (raw := given(name)) is not None:
            values[name] = _moment(name, raw)
    for name in _SIMPLE:
        if (raw := given(name)) is not None:
            text = _text(name, raw, 255)
            if name not in ("owner", "source", "domain") and not _KEY.match(text):
                raise ListQueryError(name, "a key is 1-64 letters, digits, _ . : or -")
            values[name] = text.lower() if name == "domain" else text
    if (raw := given("account")) is not None:
        values["account_id"] = _integer("account", raw, 1, 2**62)
    if (raw := given("cursor")) is not None:
        values["cursor"] = _integer("cursor", raw, 0, 2**62)

    for name, attr, known in (
        ("stage", "stages", stages),
        ("role", "roles", STAGE_ROLES),
        ("grade", "grades", grades),
    ):
        found = multi[name]
        if len(found) > MAX_VALUES:
            raise ListQueryError(name, f"more than {MAX_VALUES} values")
        checked: list[str] = []
        for raw in found:
            text = _text(name, raw, 64)
            if known is not None and text not in known:
                raise ListQueryError(name, f"unknown {name} {text[:64]!r}")
            if text not in checked:
                checked.append(text)
        values[attr] = tuple(checked)

    field_filters: list[FieldFilter] = []
    for name, ops in sorted(custom.items()):
        key = f"f.{name}"
        equal = _text(key, ops[""], 255) if "" in ops else None
        low = _number(f"{key}.min", ops["min"]) if "min" in ops else None
        high = _number(f"{key}.max", ops["max"]) if "max" in ops else None
        if equal is not None and (low is not None or high is not None):
            raise ListQueryError(key, "either equal to a value or within a range, not both")
        _range(key, low, high)
        field_filters.append(FieldFilter(name=name, value=equal, low=low, high=high))
    values["fields"] = tuple(field_filters)

    if (raw := given("sort")) is not None:
        text = _text("sort", raw, 40)
        descending = text.startswith("-")
        column = text.lstrip("-+")
        if column not in SORTABLE:
            raise ListQueryError(
                "sort", f"unknown column {column[:40]!r} (one of {', '.join(sorted(SORTABLE))})"
            )
        values["sort"], values["descending"] = column, descending
    if (raw := given("size")) is not None:
        values["size"] = _integer("size", raw, 1, max_size)
    if (raw := given("page")) is not None:
        values["page"] = _integer("page", raw, 1, MAX_OFFSET)
    if (raw := given("cols")) is not None:
        text = _text("cols", raw, 400)
        columns: list[str] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if part not in COLUMNS:
                raise ListQueryError("cols", f"unknown column {part[:40]!r}")
            if part not in columns:
                columns.append(part)
        if columns:
            values["columns"] = tuple(columns)
            values["explicit_columns"] = True
    values.update(_drill(given, multi, stages, values))
    query = LeadQuery(**values)  # type: ignore[arg-type]
    if query.offset + query.size > MAX_OFFSET + max_size:
        raise ListQueryError(
            "page", f"starts past lead {MAX_OFFSET}: narrow the filter or sort the other way"
        )
    return query


def _period(
    values: dict[str, object], after: str, before: str, given: Callable[[str], str | None]
) -> None:
    for name in (after, before):
        if (raw := given(name)) is not None:
            values[name] = _moment(name, raw)
    low, high = values.get(after), values.get(before)
    if isinstance(low, datetime) and isinstance(high, datetime) and low >= high:
        raise ListQueryError(before, f"must be after {after}")


def _needs(values: dict[str, object], name: str, *required: str) -> None:
    if values.get(name) not in (None, "", ()) and not any(
        values.get(r) not in (None, "", ()) for r in required
    ):
        raise ListQueryError(name, f"only with {' or '.join(required)}")


def _drill(
    given: Callable[[str], str | None],
    multi: dict[str, list[str]],
    stages: Collection[str] | None,
    outer: dict[str, object],
) -> dict[str, object]:
    """The drill-down filters (see the module docstring), each checked."""
    values: dict[str, object] = {}

    def stage(name: str, text: str, *, new: bool = False) -> str:
        text = _text(name, text, 64)
        if new and text == NEW:
            return text
        if not _KEY.match(text) or (stages is not None and text not in stages):
            raise ListQueryError(name, f"unknown stage {text[:64]!r}")
        return text

    for name in ("move_to", "move_from"):
        if len(multi[name]) > MAX_VALUES:
            raise ListQueryError(name, f"more than {MAX_VALUES} values")
        values[name] = tuple(
            dict.fromkeys(stage(name, v, new=name == "move_from") for v in multi[name])
        )
    if (raw := given("converted_to")) is not None:
        values["converted_to"] = stage("converted_to", raw)
    for name in ("touched_channel", "touched_campaign", "step", "action"):
        if (raw := given(name)) is not None:
            text = _text(name, raw, 255)
            if name in ("step", "action") and not _KEY.match(text):
                raise ListQueryError(name, "a key is 1-64 letters, digits, _ . : or -")
            values[name] = text
    for name, choices in (("enrolment", ENROLMENTS), ("step_result", STEP_RESULTS)):
        if (raw := given(name)) is not None:
            text = _text(name, raw, 40)
            if text not in choices:
                raise ListQueryError(
                    name, f"unknown value {text[:40]!r} (one of {', '.join(choices)})"
                )
            values[name] = text
    _period(values, "moved_after", "moved_before", given)
    _period(values, "converted_after", "converted_before", given)
    _period(values, "submitted_after", "submitted_before", given)
    _period(values, "action_after", "action_before", given)
    if (raw := given("as_of")) is not None:
        values["as_of"] = _moment("as_of", raw)
    merged = {**outer, **values}
    for name in ("moved_after", "moved_before"):
        _needs(merged, name, "move_to", "move_from")
    for name in ("converted_after", "converted_before"):
        _needs(merged, name, "converted_to")
    for name in ("action_after", "action_before"):
        _needs(merged, name, "action")
    for name in ("enrolment", "step"):
        _needs(merged, name, "program")
    _needs(merged, "step_result", "step")
    _needs(merged, "as_of", "stages", "roles")
    return values
