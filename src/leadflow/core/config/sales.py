"""The schema of the ``sales`` section: reps and territories, working hours, SLA and
the reasons sales may give."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from leadflow.core.config.base import NonEmptyStr, StrList, _as_list, _Spec

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _date(value: Any) -> Any:
    """YAML gives dates as dates; quoted ones (``"2025-01-01"``) arrive as text."""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return value
    return value


def _hhmm(value: Any) -> Any:
    """``09:00`` as text; YAML 1.1 reads an unquoted ``9:00`` as sexagesimal minutes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


Clock = Annotated[
    str, BeforeValidator(_hhmm), Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")
]
Day = Annotated[date, BeforeValidator(_date)]


class TerritorySpec(_Spec):
    """One territory rule of a rep: every key given must hold (a list means "any of")."""

    industries: StrList | None = None
    countries: StrList | None = None
    accounts: StrList | None = None
    """Account domains, external ids or numeric ids (as text)."""


class RepSpec(_Spec):
    key: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
    name: NonEmptyStr
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]
    active: bool = True
    daily_capacity: Annotated[int, Field(ge=0, le=10_000)] | None = None
    """New leads a day; default ``sales.default_capacity``."""
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    territories: list[TerritorySpec] = Field(default_factory=list)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WORKING_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")


class WorkingHoursSpec(_Spec):
    days: Annotated[
        list[Weekday],
        BeforeValidator(_as_list),
        Field(min_length=1),
    ] = Field(default_factory=lambda: list(_WORKING_DAYS))
    start: Clock = "09:00"
    end: Clock = "18:00"
    holidays: list[Day] = Field(default_factory=list)


class ReasonSpec(_Spec):
    key: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
    label: str | None = None
    dead_end: bool = False
    """Reject reasons only: the lead goes to the dead end (the ``disqualify`` action)."""


class SalesSpec(_Spec):
    """Sales hand-off: the team, pacing, SLA and the reasons sales may give."""

    timezone: NonEmptyStr = "Asia/Seoul"
    """Capacity days and working hours are counted in this IANA time zone."""
    handoff_stages: StrList | None = None
    """Default: the stage with role ``handoff``."""
    default_capacity: Annotated[int, Field(ge=0, le=10_000)] = 20
    reps: list[RepSpec] = Field(default_factory=list)
    working_hours: WorkingHoursSpec = Field(default_factory=WorkingHoursSpec)
    sla_hours: Annotated[float, Field(gt=0, le=10_000)] = 24
    on_breach: Literal["escalate", "reroute", "escalate_then_reroute"] = "escalate_then_reroute"
    escalation_hours: Annotated[float, Field(gt=0, le=10_000)] = 8
    reject_reasons: list[ReasonSpec] = Field(default_factory=list)
    lost_reasons: list[ReasonSpec] = Field(default_factory=list)
