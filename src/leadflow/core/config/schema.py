"""The schema of the stages and the scores: conditions (event and profile matches),
stages, lifecycle, fast-passes, actions, engagement, fit, qualification (BANT), dead end and
the return alert."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from leadflow.core.config.base import NonEmptyStr, ScalarList, StrList, _as_list, _Spec
from leadflow.core.config.roles import StageRole


class Display(_Spec):
    en: NonEmptyStr
    ko: NonEmptyStr


class EventMatch(_Spec):
    """Matches one event. Every key given must hold; a list means "any of"."""

    type: StrList | None = None
    name: StrList | None = None
    path: StrList | None = None
    """Glob patterns on the URL path of ``page_url`` (``/product/*``), case-insensitive."""
    properties: dict[str, ScalarList] = Field(default_factory=dict)
    channel: StrList | None = None
    utm_source: StrList | None = None
    utm_medium: StrList | None = None
    utm_campaign: StrList | None = None


class ProfileMatch(_Spec):
    has_contact: bool | None = None
    consent: (
        Annotated[list[Literal["granted", "denied", "unknown"]], BeforeValidator(_as_list)] | None
    ) = None
    is_target_account: bool | None = None
    fit_grade: StrList | None = None
    predicted_at_least: Annotated[float, Field(ge=0, le=1)] | None = None
    """The active predictive model's conversion probability at least this (0..1); a lead
    without a prediction does not match."""


class Condition(_Spec):
    """One way into a stage. Keys combine with AND; a list of conditions combines with OR."""

    event: EventMatch | None = None
    score: float | None = None
    """Engagement score (decayed, at the event's time) at least this."""
    profile: ProfileMatch | None = None


class RecycleSpec(_Spec):
    pause_days: Annotated[float, Field(ge=0)]
    return_to: NonEmptyStr


class StageSpec(_Spec):
    display: Display
    role: StageRole | None = None
    """What the stage means to reports, KPIs, webhooks and the backtest (``STAGE_ROLES``)."""
    from_: StrList | None = Field(default=None, alias="from")
    """Stages the automatic criteria may move a lead from (default: every earlier stage of
    the main path)."""
    enter_when: list[Condition] = Field(default_factory=list)
    recycle: RecycleSpec | None = None
    marketing_email: bool = True


class LifecycleSpec(_Spec):
    initial: NonEmptyStr
    main_path: Annotated[list[NonEmptyStr], Field(min_length=1)]
    dead_end: NonEmptyStr


class FastpassSpec(_Spec):
    id: NonEmptyStr
    to: NonEmptyStr
    from_: StrList = Field(alias="from")
    when: Condition


class ActionSpec(_Spec):
    from_: StrList = Field(alias="from")
    to: NonEmptyStr
    requires_amount: bool = False
    requires_qualification: bool = False
    """Refuse unless the BANT score reaches ``qualification.handoff_threshold``."""


class EngagementRule(_Spec):
    id: NonEmptyStr
    match: EventMatch
    points: float
    max_per_day: Annotated[int, Field(ge=1)] | None = None
    max_total: Annotated[int, Field(ge=1)] | None = None
    decay: bool = True
    half_life_days: Annotated[float, Field(gt=0)] | None = None
    """Overrides ``engagement.half_life_days`` for this rule."""


class EngagementSpec(_Spec):
    half_life_days: Annotated[float, Field(gt=0)] | None = None
    """Points halve every this many days; null means no decay."""
    rules: list[EngagementRule] = Field(default_factory=list)


class SizeBand(_Spec):
    label: NonEmptyStr
    min: Annotated[int, Field(ge=0)] = 0
    max: Annotated[int, Field(ge=0)] | None = None
    points: float


class SeniorityRule(_Spec):
    label: NonEmptyStr
    patterns: Annotated[list[NonEmptyStr], Field(min_length=1)]
    points: float


class AttributeFitRule(_Spec):
    """Points when a lead attribute (an imported custom column, a form field) matches:
    ``values`` (any of them; text compared case-insensitively) and/or a number range
    ``min``..``max`` (inclusive). A lead without the attribute gets no points."""

    name: NonEmptyStr
    values: ScalarList | None = None
    min: float | None = None
    max: float | None = None
    points: float


class FitSpec(_Spec):
    industry: dict[str, float] = Field(default_factory=dict)
    company_size: list[SizeBand] = Field(default_factory=list)
    title_seniority: list[SeniorityRule] = Field(default_factory=list)
    country: dict[str, float] = Field(default_factory=dict)
    target_account: float = 0
    attributes: list[AttributeFitRule] = Field(default_factory=list)
    grades: dict[str, Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=lambda: {"A": 75.0, "B": 50.0, "C": 25.0, "D": 0.0}
    )


class BantWeights(_Spec):
    budget: Annotated[float, Field(ge=0)]
    authority: Annotated[float, Field(ge=0)]
    need: Annotated[float, Field(ge=0)]
    timeframe: Annotated[float, Field(ge=0)]


class QualificationSpec(_Spec):
    weights: BantWeights
    levels: dict[str, Annotated[float, Field(ge=0, le=1)]]
    handoff_threshold: Annotated[float, Field(ge=0, le=100)]


class DeadEndRule(_Spec):
    id: NonEmptyStr
    title_contains: StrList | None = None
    email_domains: StrList | None = None
    invalid_email: bool = False
    event: EventMatch | None = None


class DeadEndSpec(_Spec):
    from_: StrList | None = Field(default=None, alias="from")
    rules: list[DeadEndRule] = Field(default_factory=list)


class ReturnAlertSpec(_Spec):
    stages: StrList
    """Entering one of these stages (lost) starts watching the lead's visits."""
    clear_at: StrList = Field(default_factory=list)
    """Entering one of these stages (sales works the lead again) stops watching."""
    visits: Annotated[int, Field(ge=1)] = 3
    window_days: Annotated[float, Field(gt=0)] = 14
    when_account_lost: bool = True
