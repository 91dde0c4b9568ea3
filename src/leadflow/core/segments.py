"""Segment criteria: a strict, validated description of who belongs to a segment.

Pure: pydantic models and checks only; ``services/segments.py`` compiles a
:class:`Criteria` into one SQL query.

Every field given in one criteria object must hold (AND). ``all``/``any`` combine nested
criteria objects, ``not`` negates one. Example (YAML)::

    stage: [mql]
    score: {min: 50}
    fit_grade: [A, B]
    account: {industry: [Financial services], is_target: true}
    any:
      - event: {type: page, path: /pricing/*, within_days: 14}
      - event: {type: track, name: demo_request, within_days: 30, min_count: 1}

Bad input raises :class:`CriteriaError` naming the path and the reason, e.g.
``criteria.score.min: expected a number``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from leadflow.core import errors

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Attribute names are JSON keys read with a bound JSON path: letters (any script), digits,
# underscore, hyphen and space only, so a name can never change the shape of the path.
ATTRIBUTE_NAME = re.compile(r"^[\w][\w -]{0,63}$")
MAX_DEPTH = 5
MAX_LIST = 200

Text = Annotated[str, Field(min_length=1, max_length=255)]
AttributeValue = Annotated[str, Field(max_length=255)] | int | float | bool


class CriteriaError(errors.InvalidInput):
    """Invalid criteria; ``str()`` is ``<path>: <reason>``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", field=path)
        self.path = path
        self.reason = reason


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class Range(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not be greater than max")
        return self


class LeadFields(_Strict):
    source: list[Text] | None = Field(default=None, max_length=MAX_LIST)
    consent: list[Literal["granted", "denied", "unknown"]] | None = None
    has_email: bool | None = None


class AccountFields(_Strict):
    industry: list[Text] | None = Field(default=None, max_length=MAX_LIST)
    country: list[Text] | None = Field(default=None, max_length=MAX_LIST)
    employee_count: Range | None = None
    is_target: bool | None = None
    owner: list[Text] | None = Field(default=None, max_length=MAX_LIST)


class EventRule(_Strict):
    """The lead did something: ``min_count`` matching events in the last ``within_days``.

    ``path`` is a glob on the page URL's path (``*`` any characters, ``?`` one character),
    e.g. ``/pricing/*``; it is compared case-insensitively, ignoring scheme, host and query.
    """

    type: Literal["track", "page", "identify", "screen", "group", "alias"] | None = None
    name: Text | None = None
    path: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    within_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    min_count: Annotated[int, Field(ge=1, le=100_000)] = 1

    @model_validator(mode="after")
    def _something(self) -> EventRule:
        if self.type is None and self.name is None and self.path is None:
            raise ValueError("give at least one of type, name, path")
        if self.path is not None and not self.path.startswith(("/", "*")):
            raise ValueError("path must start with / (a glob like /pricing/*)")
        return self


ProgramStatus = Literal["active", "completed", "exited"]


def _active_only() -> list[ProgramStatus]:
    return ["active"]


class ProgramRule(_Strict):
    key: Annotated[str, Field(min_length=1, max_length=64)]
    status: list[ProgramStatus] = Field(default_factory=_active_only)


class Criteria(_Strict):
    stage: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=MAX_LIST
    )
    score: Range | None = None  # engagement score
    fit: Range | None = None  # fit score
    fit_grade: list[Annotated[str, Field(min_length=1, max_length=8)]] | None = Field(
        default=None, max_length=MAX_LIST
    )
    attributes: dict[str, list[AttributeValue]] | None = None
    lead: LeadFields | None = None
    account: AccountFields | None = None
    event: EventRule | None = None
    events: list[EventRule] | None = Field(default=None, max_length=20)
    program: ProgramRule | None = None
    all: list[Criteria] | None = Field(default=None, max_length=50)
    any: list[Criteria] | None = Field(default=None, max_length=50)
    not_: Criteria | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _attributes(self) -> Criteria:
        for name, values in (self.attributes or {}).items():
            if not ATTRIBUTE_NAME.match(name):
                raise CriteriaError(
                    f"attributes.{name[:40]}",
                    "attribute names may contain letters, digits, _, - and spaces only",
                )
            if not values:
                raise CriteriaError(f"attributes.{name}", "give at least one value")
            if len(values) > MAX_LIST:
                raise CriteriaError(f"attributes.{name}", f"at most {MAX_LIST} values")
        return self

    def event_rules(self) -> list[EventRule]:
        return ([self.event] if self.event else []) + list(self.events or [])

    def depth(self) -> int:
        children = [*(self.all or []), *(self.any or [])]
        if self.not_ is not None:
            children.append(self.not_)
        return 1 + max((c.depth() for c in children), default=0)


_REASONS = {
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "extra_forbidden": "unknown field",
    "missing": "required",
    "literal_error": None,  # "expected one of ..." below
    "too_long": None,
    "too_short": None,
    "string_too_long": None,
    "string_too_short": None,
    "greater_than_equal": None,
    "less_than_equal": None,
}


def _reason(error: Any) -> str:
    kind = str(error.get("type", ""))
    fixed = _REASONS.get(kind)
    if fixed:
        return fixed
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ").removeprefix("Input should be ")
    if kind == "literal_error":
        return f"expected one of {msg}"
    return msg[:1].lower() + msg[1:]


def _path(prefix: str, loc: tuple[Any, ...]) -> str:
    parts = [prefix]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        elif item in ("float", "int", "str", "bool", "function-after[_ordered()]"):
            continue  # union member names pydantic adds
        elif isinstance(item, str) and item.startswith(("function-", "constrained-")):
            continue
        else:
            parts.append(str(item))
    return ".".join(parts)


def parse_criteria(data: Any, *, prefix: str = "criteria") -> Criteria:
    """Validate ``data`` (a mapping, e.g. parsed JSON/YAML); raise :class:`CriteriaError`."""
    if not isinstance(data, dict):
        raise CriteriaError(prefix, "expected a mapping")
    try:
        criteria = Criteria.model_validate(data)
    except CriteriaError as exc:
        raise CriteriaError(f"{prefix}.{exc.path}", exc.reason) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        ctx = first.get("ctx") or {}
        inner = ctx.get("error") if isinstance(ctx, dict) else None
        if isinstance(inner, CriteriaError):
            loc = _path(prefix, tuple(first["loc"]))
            raise CriteriaError(f"{loc}.{inner.path}", inner.reason) from None
        raise CriteriaError(_path(prefix, tuple(first["loc"])), _reason(first)) from None
    if criteria.depth() > MAX_DEPTH:
        raise CriteriaError(prefix, f"nested all/any/not deeper than {MAX_DEPTH} levels")
    return criteria


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise CriteriaError(
            "key", "use 1-64 lower-case letters, digits, - or _ (starting with a letter/digit)"
        )
    return key


def glob_to_like(glob: str) -> str:
    """A path glob as a LIKE pattern with ``\\`` as the escape character, lower-cased."""
    out: list[str] = []
    for ch in glob.lower():
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in ("%", "_", "\\"):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)
