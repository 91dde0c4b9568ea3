"""Value types of the scoring and lifecycle core: plain frozen data, no behaviour beyond
small derived properties. Times are timezone-aware and normalised to UTC on construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what}: expected a timezone-aware datetime")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One tracked message (Segment style) attributed to a lead, or still anonymous.

    For ``identify`` the traits are in ``properties``; for ``group`` the account traits are.
    """

    message_id: str
    type: str
    occurred_at: datetime
    lead_id: int | None = None
    name: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    page_url: str | None = None
    referrer: str | None = None
    utm_campaign: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    channel: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "occurred_at", _utc(self.occurred_at, "Event.occurred_at"))

    @property
    def path(self) -> str | None:
        """The URL path of ``page_url``, lower-cased, without a trailing slash (root is ``/``)."""
        if not self.page_url:
            return None
        path = urlsplit(self.page_url).path.lower() or "/"
        return path.rstrip("/") or "/"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bant:
    """Sales' BANT assessment. Each value is a level name from the model
    (``confirmed``, ``partial``, ``unknown``, ...) or a number from 0 to 1; None is unknown."""

    budget: str | float | None = None
    authority: str | float | None = None
    need: str | float | None = None
    timeframe: str | float | None = None


@dataclass(frozen=True, slots=True)
class AccountWatch:
    """The lead's account lost a deal at ``since`` (``lost_lead_id``'s, when known): its
    people are watched for a return until one of them is worked by sales again (``until``,
    None while it goes on). See :func:`leadflow.core.lifecycle.account_watches`."""

    since: datetime
    until: datetime | None = None
    lost_lead_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadProfile:
    """What is known about a lead and its account (attribute data, 속성 정보)."""

    id: int
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    industry: str | None = None
    employee_count: int | None = None
    country: str | None = None
    is_target_account: bool = False
    consent: str = "unknown"
    """``granted``, ``denied`` or ``unknown`` (marketing permission)."""
    account_id: int | None = None
    account_lost_opportunity: bool = False
    """The lead's account has a lost opportunity, time unknown (feeds the return alert)."""
    account_watch: tuple[AccountWatch, ...] = ()
    """When the lead's account was watched for a return after a lost deal (derived from
    the stage changes of all its people and its lost opportunities)."""
    bant: Bant = field(default_factory=Bant)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    predicted: float | None = None
    """The active predictive model's conversion probability (0..1), None when not scored."""

    @property
    def has_contact(self) -> bool:
        return bool(self.email) or bool(self.phone)

    @property
    def email_domain(self) -> str | None:
        if not self.email or "@" not in self.email:
            return None
        return self.email.rsplit("@", 1)[1].strip().lower() or None


@dataclass(frozen=True, slots=True, kw_only=True)
class SalesAction:
    """Something sales did to a lead: ``accept``, ``not_now``, ``qualify``, ``win``, ``lose``..."""

    action_id: str
    name: str
    at: datetime
    lead_id: int | None = None
    amount: float | None = None
    bant: Bant | None = None
    reason: str | None = None
    actor: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _utc(self.at, "SalesAction.at"))


@dataclass(frozen=True, slots=True, kw_only=True)
class StageChange:
    """A lead moved between stages; ``rule`` says why, ``cause`` is the message id or the
    action id that triggered it (None for time-driven changes such as a pause ending)."""

    lead_id: int
    from_stage: str
    to_stage: str
    at: datetime
    rule: str
    model_version: str
    cause: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """Something for the outside world: ``lead.returning`` (alert sales),
    ``lead.history_revised`` (a late event rewrote the stage history; ``data['removed']``)."""

    name: str
    lead_id: int
    at: datetime
    rule: str
    model_version: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleContribution:
    """One engagement rule's share of a score."""

    rule_id: str
    points_before_decay: float
    points_after_decay: float
    message_ids: tuple[str, ...]
    occurrences: int
    capped: int = 0
    """Matching events that earned nothing because a per-day or lifetime cap was reached."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EngagementScore:
    total: float
    as_of: datetime
    contributions: tuple[RuleContribution, ...]
    model_version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FitContribution:
    criterion: str
    """``industry``, ``company_size``, ``title_seniority``, ``country`` or ``target_account``."""
    value: str | None
    points: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FitScore:
    score: float
    """0 to 100."""
    grade: str
    contributions: tuple[FitContribution, ...]
    model_version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QualificationContribution:
    criterion: str
    level: str | float | None
    value: float
    """0 to 1."""
    weight: float
    points: float


@dataclass(frozen=True, slots=True, kw_only=True)
class QualificationScore:
    score: float
    """0 to 100."""
    threshold: float
    ready_for_handoff: bool
    contributions: tuple[QualificationContribution, ...]
    model_version: str
