"""The scoring and lifecycle model (``leadflow.yaml``): schema, loading, checking.

A model file is YAML. It is validated strictly (unknown keys, wrong types and dangling
references are refused) and a refusal names the key path and the reason in one line::

    stages.mql.enter_when[1].score: expected a number

:func:`load_model` returns a :class:`LeadModel`: the validated spec plus the indexes the
scoring and lifecycle code need. ``version`` is the model's own label (bump it when you
change the rules); ``content_hash`` is a SHA-256 over the validated content in canonical
JSON, so it is stable across key order, comments and formatting. :func:`check` backs
``leadflow model check FILE`` and ``POST /api/model/check``: it never raises for a bad
model, it reports.

Both take the YAML *text*, never a file name: whatever the string looks like (``x.yaml``
included), it is parsed, not opened. Reading a file is the CLI's job
(``entrypoints/cli/model.py``); a request can never make the server read one.

The shipped model is ``leadflow/default.yaml`` (:func:`load_default_model`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from leadflow.core.inputs import InputError, check_json

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
BANT_CRITERIA = ("budget", "authority", "need", "timeframe")
CONSENT_VALUES = ("granted", "denied", "unknown")

# What a stage means to the code that reads the model (reports, KPIs, webhooks, backtest,
# seminars, dashboard, CLI). Code asks ``model.stage_for(role)``; it never names a stage id.
StageRole = Literal[
    "entry",
    "acquired",
    "nurture",
    "handoff",
    "sales_accepted",
    "opportunity",
    "won",
    "customer",
    "expansion",
    "recycle",
    "lost",
    "dead_end",
]
STAGE_ROLES: tuple[str, ...] = get_args(StageRole)
"""Every role, in the order reports list them (the ``role`` key accepts exactly these)."""
MULTI_ROLES = frozenset({"nurture", "recycle"})
"""Roles several stages may share; every other role names at most one stage."""
REQUIRED_ROLES = ("entry", "handoff", "won", "dead_end")
"""Roles every model must give a stage: the code needs exactly one of each."""

LEGACY_ROLES: Mapping[str, str] = {
    "acquired": "acquired",
    "nurturing": "nurture",
    "mql": "handoff",
    "appointment": "sales_accepted",
    "opportunity": "opportunity",
    "won": "won",
    "customer": "customer",
    "expansion": "expansion",
    "recycle_a": "recycle",
    "recycle_b": "lost",
}
"""Roles of a model written before stages had roles (the shipped models up to 2024.3, kept
as versioned history in every database, and files copied from them): a model in which no
stage names a role gets these by its stage ids, plus ``entry`` for ``lifecycle.initial`` and
``dead_end`` for ``lifecycle.dead_end``. Only such a model is read this way; a model that
names one role must name them all."""


class ModelConfigError(ValueError):
    """A model file is refused. ``path`` names the key, ``reason`` says what is wrong.

    ``str(error)`` is the first problem as ``path: reason``; ``errors`` lists every problem
    found (``leadflow model check`` prints them all).
    """

    def __init__(self, path: str, reason: str, errors: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.errors: tuple[tuple[str, str], ...] = errors or ((path, reason),)

    @property
    def messages(self) -> tuple[str, ...]:
        return tuple(f"{p}: {r}" for p, r in self.errors)


# --------------------------------------------------------------------------- schema


def _as_list(value: Any) -> Any:
    """Let a single value stand for a one-element list (``type: page``)."""
    if value is None or isinstance(value, list):
        return value
    return [value]


Scalar = str | int | float | bool
StrList = Annotated[list[str], BeforeValidator(_as_list)]
ScalarList = Annotated[list[Scalar], BeforeValidator(_as_list)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


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


class FitSpec(_Spec):
    industry: dict[str, float] = Field(default_factory=dict)
    company_size: list[SizeBand] = Field(default_factory=list)
    title_seniority: list[SeniorityRule] = Field(default_factory=list)
    country: dict[str, float] = Field(default_factory=dict)
    target_account: float = 0
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


# --------------------------------------------------------------------------- nurture (issue 4)

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
CONTENT_TYPES = (
    "blog_post",
    "white_paper",
    "case_study",
    "demo_video",
    "pricing",
    "webinar",
    "trial",
)
EVALUATION_STAGES = ("early", "middle", "late")
ContentType = Literal[
    "blog_post", "white_paper", "case_study", "demo_video", "pricing", "webinar", "trial"
]
EvaluationStage = Literal["early", "middle", "late"]
# Absolute http(s) URL or a site path; never javascript:, data: or protocol-relative.
SafeUrl = Annotated[
    str, Field(pattern=r"^(https?://[^\s<>\"']+|/([^/\s<>\"'\\][^\s<>\"']*)?)$", max_length=2000)
]


class ContentSpec(_Spec):
    """An asset of the content library (seed 002: content by evaluation stage)."""

    key: Slug
    title: Annotated[str, Field(min_length=1, max_length=255)]
    type: ContentType
    stage: EvaluationStage
    gated: bool = False
    # Industries the asset suits; empty = every industry.
    industries: StrList = Field(default_factory=list)
    url: SafeUrl


FIELD_TYPES = ("text", "email", "tel", "number", "select", "checkbox", "textarea")


class FormFieldSpec(_Spec):
    # Lead columns (email, first_name, last_name, title, phone), account fields (company,
    # industry, employee_count, country) or any other name, stored in lead attributes.
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    label: Display | None = None
    type: Literal["text", "email", "tel", "number", "select", "checkbox", "textarea"] = "text"
    required: bool = False
    options: list[NonEmptyStr] = Field(default_factory=list)
    max_length: Annotated[int, Field(ge=1, le=5000)] = 255


class FormSpec(_Spec):
    """A hosted form (``/f/{key}``) that creates or updates a lead."""

    key: Slug
    title: Display
    fields: Annotated[list[FormFieldSpec], Field(min_length=1)]
    # The gated asset a submission unlocks.
    asset: Slug | None = None
    # The text the person agrees to (stored with the submission as their consent).
    consent: Display | None = None
    consent_required: bool = False
    # Progressive profiling: fields already known are not asked again; at most this many
    # unknown optional fields are asked at once (None = all).
    ask_at_most: Annotated[int, Field(ge=1, le=50)] | None = None
    # Event name written for a submission (scoring sees it).
    event: NonEmptyStr = "form_submit"
    # Where to send the browser afterwards: a site path only (never another host).
    redirect: Annotated[str, Field(pattern=r"^/([^/\s<>\"'\\][^\s<>\"'\\]*)?$")] | None = None


class ProgramCondition(_Spec):
    """A step's condition; every given part must hold."""

    score_at_least: float | None = None
    score_below: float | None = None
    stage: StrList | None = None
    fit_grade: StrList | None = None
    # Lead attributes (or lead columns) with the values that satisfy them.
    attributes: dict[str, ScalarList] = Field(default_factory=dict)
    # An event the lead did (or, with ``seen: false``, did not do) in the last N days.
    event: EventMatch | None = None
    within_days: Annotated[float, Field(gt=0)] | None = None
    seen: bool = True


class SendSpec(_Spec):
    template: Slug = "nurture"
    subject: Display
    # ``next_best``: the best asset for the lead's stage and industry not yet consumed;
    # or a content key.
    asset: Slug = "next_best"
    # ``marketing`` needs consent and counts toward the frequency cap.
    category: Literal["marketing", "transactional"] = "marketing"


class StepSpec(_Spec):
    id: Slug
    # Days after the previous step (or the enrolment for the first step).
    wait_days: Annotated[float, Field(ge=0, le=3650)] = 0
    when: ProgramCondition | None = None
    # What happens when ``when`` does not hold: skip this step, or leave the program.
    otherwise: Literal["skip", "exit"] = "skip"
    send: SendSpec | None = None
    # Set lead attributes.
    set: dict[str, Scalar] | None = None
    # Write a signal (delivered by webhooks) named ``program.notify`` with this note.
    notify: Annotated[str, Field(min_length=1, max_length=255)] | None = None


class ProgramSpec(_Spec):
    key: Slug
    name: Display
    # Leads enter when they enter one of these stages and leave when they leave them all.
    stages: Annotated[list[NonEmptyStr], Field(min_length=1), BeforeValidator(_as_list)]
    steps: Annotated[list[StepSpec], Field(min_length=1)]
    # Enter again after leaving (e.g. back from recycle), starting at the first step.
    reenroll: bool = True
    # Only members of this saved segment (``leadflow segments``) enter; leaving it exits.
    segment: Slug | None = None


class FrequencyCap(_Spec):
    emails: Annotated[int, Field(ge=1, le=1000)] = 2
    days: Annotated[float, Field(gt=0, le=365)] = 7


ROLE_CONTENT_STAGES: Mapping[str, str] = {
    "entry": "early",
    "acquired": "early",
    "nurture": "middle",
    "recycle": "middle",
    "lost": "middle",
    "handoff": "late",
    "sales_accepted": "late",
    "opportunity": "late",
    "won": "late",
    "customer": "late",
    "expansion": "late",
}
"""Default ``nurture.content_stages``: the evaluation stage of each stage role's content."""


class NurtureSpec(_Spec):
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    # The evaluation stage (early/middle/late) of content that suits a lifecycle stage.
    content_stages: dict[str, EvaluationStage] | None = None
    """Default: by the stage's role (``ROLE_CONTENT_STAGES``)."""
    content: list[ContentSpec] = Field(default_factory=list)
    forms: list[FormSpec] = Field(default_factory=list)
    programs: list[ProgramSpec] = Field(default_factory=list)


class ModelSpec(_Spec):
    version: NonEmptyStr
    name: str | None = None
    description: str | None = None
    lifecycle: LifecycleSpec
    stages: Annotated[dict[str, StageSpec], Field(min_length=1)]
    fastpass: list[FastpassSpec] = Field(default_factory=list)
    actions: dict[str, ActionSpec] = Field(default_factory=dict)
    engagement: EngagementSpec
    fit: FitSpec = Field(default_factory=FitSpec)
    qualification: QualificationSpec
    dead_end: DeadEndSpec = Field(default_factory=DeadEndSpec)
    return_alert: ReturnAlertSpec | None = None
    sales: SalesSpec | None = None
    nurture: NurtureSpec | None = None


# --------------------------------------------------------------------------- runtime model


@dataclass(frozen=True)
class LeadModel:
    """A validated model with the indexes scoring and the stage machine use."""

    spec: ModelSpec
    content_hash: str
    stage_order: Mapping[str, int] = field(repr=False)
    criteria_from: Mapping[str, frozenset[str]] = field(repr=False)
    dead_end_from: frozenset[str] = field(repr=False)

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.spec.stages)

    @property
    def initial_stage(self) -> str:
        return self.spec.lifecycle.initial

    @property
    def dead_end_stage(self) -> str:
        return self.spec.lifecycle.dead_end

    @property
    def roles(self) -> Mapping[str, tuple[str, ...]]:
        """Role -> the stages that play it, in model order (roles nobody plays are absent)."""
        found: dict[str, list[str]] = {}
        for key, stage in self.spec.stages.items():
            if stage.role is not None:
                found.setdefault(stage.role, []).append(key)
        return {role: tuple(keys) for role, keys in found.items()}

    def stages_for(self, role: str) -> tuple[str, ...]:
        """Every stage that plays ``role`` (empty when none does)."""
        if role not in STAGE_ROLES:
            raise ValueError(f"unknown stage role {role!r}")
        return self.roles.get(role, ())

    def stage_for(self, role: str) -> str | None:
        """The stage that plays ``role`` (a unique role), or None when no stage does."""
        if role in MULTI_ROLES:
            raise ValueError(f"stage role {role!r} may name several stages: use stages_for")
        found = self.stages_for(role)
        return found[0] if found else None

    def require_stage(self, role: str) -> str:
        """The stage of a required role (``REQUIRED_ROLES``): a checked model always has it."""
        found = self.stage_for(role)
        if found is None:
            raise ValueError(f"the model names no stage with role {role!r}")
        return found

    @property
    def handoff_stage(self) -> str:
        """The hand-off (MQL) stage: ``lead.mql`` fires, and KPIs count MQLs, on entering it."""
        return self.require_stage("handoff")

    @property
    def mql_condition(self) -> int | None:
        """Index in the hand-off stage's ``enter_when`` of its first ``score`` condition."""
        conditions = self.spec.stages[self.handoff_stage].enter_when
        return next((i for i, c in enumerate(conditions) if c.score is not None), None)

    @property
    def mql_threshold(self) -> float | None:
        """The MQL score threshold: that condition's ``score`` (None when it has none)."""
        i = self.mql_condition
        score = None if i is None else self.spec.stages[self.handoff_stage].enter_when[i].score
        return None if score is None else float(score)

    @property
    def won_stage(self) -> str:
        return self.require_stage("won")

    @property
    def content_stages(self) -> Mapping[str, str]:
        """``nurture.content_stages``, by default each stage's role's (``ROLE_CONTENT_STAGES``)."""
        nurture = self.spec.nurture
        if nurture is not None and nurture.content_stages is not None:
            return nurture.content_stages
        return {
            key: ROLE_CONTENT_STAGES[stage.role]
            for key, stage in self.spec.stages.items()
            if stage.role is not None and stage.role in ROLE_CONTENT_STAGES
        }

    @property
    def handoff_stages(self) -> tuple[str, ...]:
        """``sales.handoff_stages``, by default the hand-off role's stage."""
        sales = self.spec.sales
        if sales is not None and sales.handoff_stages is not None:
            return tuple(sales.handoff_stages)
        return (self.handoff_stage,)

    def role_of(self, stage: str) -> str | None:
        spec = self.spec.stages.get(stage)
        return spec.role if spec is not None else None

    def display_name(self, stage: str, language: str = "en") -> str:
        display = self.spec.stages[stage].display
        return display.ko if language == "ko" else display.en

    def rank(self, stage: str) -> int:
        """Position on the main path; stages off the path rank -1."""
        return self.stage_order.get(stage, -1)


def _stage_ref_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    known = set(spec.stages)
    errors: list[tuple[str, str]] = []

    def need(path: str, name: str) -> None:
        if name not in known:
            errors.append((path, f"unknown stage '{name}'"))

    need("lifecycle.initial", spec.lifecycle.initial)
    need("lifecycle.dead_end", spec.lifecycle.dead_end)
    seen: set[str] = set()
    for i, name in enumerate(spec.lifecycle.main_path):
        need(f"lifecycle.main_path[{i}]", name)
        if name in seen:
            errors.append((f"lifecycle.main_path[{i}]", f"stage '{name}' is listed twice"))
        seen.add(name)
    for key, stage in spec.stages.items():
        for i, name in enumerate(stage.from_ or ()):
            need(f"stages.{key}.from[{i}]", name)
        if stage.recycle is not None:
            need(f"stages.{key}.recycle.return_to", stage.recycle.return_to)
    for i, rule in enumerate(spec.fastpass):
        need(f"fastpass[{i}].to", rule.to)
        for j, name in enumerate(rule.from_):
            need(f"fastpass[{i}].from[{j}]", name)
    for key, action in spec.actions.items():
        need(f"actions.{key}.to", action.to)
        for j, name in enumerate(action.from_):
            need(f"actions.{key}.from[{j}]", name)
    for j, name in enumerate(spec.dead_end.from_ or ()):
        need(f"dead_end.from[{j}]", name)
    if spec.return_alert is not None:
        for j, name in enumerate(spec.return_alert.stages):
            need(f"return_alert.stages[{j}]", name)
        for j, name in enumerate(spec.return_alert.clear_at):
            need(f"return_alert.clear_at[{j}]", name)
    return errors


def _role_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    holder: dict[str, str] = {}
    for key, stage in spec.stages.items():
        role = stage.role
        if role is None:
            continue
        if role not in MULTI_ROLES and role in holder:
            errors.append(
                (
                    f"stages.{key}.role",
                    f"role '{role}' is already stage '{holder[role]}' (only one stage may have it)",
                )
            )
        holder.setdefault(role, key)
    for required in REQUIRED_ROLES:
        if required not in holder:
            errors.append(("stages", f"no stage has role '{required}' (required)"))
    for path, name, expected in (
        ("lifecycle.initial", spec.lifecycle.initial, "entry"),
        ("lifecycle.dead_end", spec.lifecycle.dead_end, "dead_end"),
    ):
        if expected in holder and name in spec.stages and holder[expected] != name:
            errors.append(
                (path, f"must be the stage with role '{expected}' ('{holder[expected]}')")
            )
    return errors


def _grade_refs(
    condition: Condition, path: str, grades: Mapping[str, float]
) -> list[tuple[str, str]]:
    if condition.profile is None or condition.profile.fit_grade is None:
        return []
    return [
        (f"{path}.profile.fit_grade[{i}]", f"unknown grade '{g}'")
        for i, g in enumerate(condition.profile.fit_grade)
        if g not in grades
    ]


def _with_legacy_roles(spec: ModelSpec) -> ModelSpec:
    """``spec`` with the roles of ``LEGACY_ROLES`` when none of its stages names a role."""
    if any(stage.role is not None for stage in spec.stages.values()):
        return spec
    structural = {spec.lifecycle.initial: "entry", spec.lifecycle.dead_end: "dead_end"}
    stages = {
        key: stage.model_copy(update={"role": structural.get(key) or LEGACY_ROLES.get(key)})
        for key, stage in spec.stages.items()
    }
    return spec.model_copy(update={"stages": stages})


def _semantic_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    errors = _stage_ref_errors(spec)
    errors += _role_errors(spec)
    ids: set[str] = set()
    for i, rule in enumerate(spec.engagement.rules):
        if rule.id in ids:
            errors.append((f"engagement.rules[{i}].id", f"duplicate rule id '{rule.id}'"))
        ids.add(rule.id)
    ids = set()
    for i, fp in enumerate(spec.fastpass):
        if fp.id in ids:
            errors.append((f"fastpass[{i}].id", f"duplicate rule id '{fp.id}'"))
        ids.add(fp.id)
        errors += _grade_refs(fp.when, f"fastpass[{i}].when", spec.fit.grades)
    for key, stage in spec.stages.items():
        for i, cond in enumerate(stage.enter_when):
            errors += _grade_refs(cond, f"stages.{key}.enter_when[{i}]", spec.fit.grades)
    for key, stage in spec.stages.items():
        for i, cond in enumerate(stage.enter_when):
            if cond.event is None and cond.score is None and cond.profile is None:
                errors.append((f"stages.{key}.enter_when[{i}]", "empty condition"))
    for i, fp in enumerate(spec.fastpass):
        w = fp.when
        if w.event is None and w.score is None and w.profile is None:
            errors.append((f"fastpass[{i}].when", "empty condition"))
    ids = set()
    for i, dead_rule in enumerate(spec.dead_end.rules):
        if dead_rule.id in ids:
            errors.append((f"dead_end.rules[{i}].id", f"duplicate rule id '{dead_rule.id}'"))
        ids.add(dead_rule.id)
        if not (
            dead_rule.title_contains
            or dead_rule.email_domains
            or dead_rule.invalid_email
            or dead_rule.event
        ):
            errors.append((f"dead_end.rules[{i}]", "rule matches nothing"))
    weights = spec.qualification.weights
    total = weights.budget + weights.authority + weights.need + weights.timeframe
    if abs(total - 100) > 1e-9:
        errors.append(("qualification.weights", f"weights must add up to 100 (got {total:g})"))
    grades = list(spec.fit.grades.items())
    if not grades:
        errors.append(("fit.grades", "at least one grade is required"))
    for (_, prev), (name, low) in itertools.pairwise(grades):
        if low >= prev:
            errors.append((f"fit.grades.{name}", "grades must be listed best first, lower each"))
    for i, band in enumerate(spec.fit.company_size):
        if band.max is not None and band.max < band.min:
            errors.append((f"fit.company_size[{i}].max", "must not be below min"))
    for i, name in enumerate(spec.lifecycle.main_path):
        if name == spec.lifecycle.dead_end:
            errors.append((f"lifecycle.main_path[{i}]", "the dead-end stage is not on the path"))
    if spec.sales is not None:
        errors += _sales_errors(spec)
    if spec.nurture is not None:
        errors += _nurture_errors(spec)
    return errors


def _unique(items: list[Any], path: str, what: str) -> list[tuple[str, str]]:
    seen: set[str] = set()
    errors: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if item.key in seen:
            errors.append((f"{path}[{i}].key", f"duplicate {what} '{item.key}'"))
        seen.add(item.key)
    return errors


def _nurture_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    nurture = spec.nurture
    assert nurture is not None
    errors = _unique(nurture.content, "nurture.content", "content key")
    errors += _unique(nurture.forms, "nurture.forms", "form key")
    errors += _unique(nurture.programs, "nurture.programs", "program key")
    assets = {c.key for c in nurture.content}
    for name in nurture.content_stages or {}:
        if name not in spec.stages:
            errors.append((f"nurture.content_stages.{name}", f"unknown stage '{name}'"))
    for i, form in enumerate(nurture.forms):
        path = f"nurture.forms[{i}]"
        names = [f.name for f in form.fields]
        if "email" not in names:
            errors.append((f"{path}.fields", "a form needs an 'email' field"))
        for j, name in enumerate(names):
            if name in names[:j]:
                errors.append((f"{path}.fields[{j}].name", f"duplicate field '{name}'"))
        for j, fld in enumerate(form.fields):
            if fld.type == "select" and not fld.options:
                errors.append((f"{path}.fields[{j}].options", "a select field needs options"))
        if form.asset is not None and form.asset not in assets:
            errors.append((f"{path}.asset", f"unknown content '{form.asset}'"))
        if form.consent_required and form.consent is None:
            errors.append((f"{path}.consent", "consent_required needs the consent text"))
    for i, program in enumerate(nurture.programs):
        path = f"nurture.programs[{i}]"
        for j, name in enumerate(program.stages):
            if name not in spec.stages:
                errors.append((f"{path}.stages[{j}]", f"unknown stage '{name}'"))
        ids: set[str] = set()
        for j, step in enumerate(program.steps):
            spath = f"{path}.steps[{j}]"
            if step.id in ids:
                errors.append((f"{spath}.id", f"duplicate step id '{step.id}'"))
            ids.add(step.id)
            actions = [a for a in (step.send, step.set, step.notify) if a is not None]
            if len(actions) != 1:
                errors.append((spath, "a step needs exactly one of send, set, notify"))
            send = step.send
            if send is not None and send.asset != "next_best" and send.asset not in assets:
                errors.append((f"{spath}.send.asset", f"unknown content '{send.asset}'"))
            if step.when is not None:
                for k, name in enumerate(step.when.stage or ()):
                    if name not in spec.stages:
                        errors.append((f"{spath}.when.stage[{k}]", f"unknown stage '{name}'"))
                for k, grade in enumerate(step.when.fit_grade or ()):
                    if grade not in spec.fit.grades:
                        errors.append((f"{spath}.when.fit_grade[{k}]", f"unknown grade '{grade}'"))
    return errors


def _sales_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    sales = spec.sales
    assert sales is not None
    errors: list[tuple[str, str]] = []
    try:
        ZoneInfo(sales.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(("sales.timezone", f"unknown time zone '{sales.timezone}'"))
    for i, name in enumerate(sales.handoff_stages or ()):
        if name not in spec.stages:
            errors.append((f"sales.handoff_stages[{i}]", f"unknown stage '{name}'"))
    seen: set[str] = set()
    for i, rep in enumerate(sales.reps):
        if rep.key in seen:
            errors.append((f"sales.reps[{i}].key", f"duplicate rep key '{rep.key}'"))
        seen.add(rep.key)
    hours = sales.working_hours
    if hours.end <= hours.start:
        errors.append(("sales.working_hours.end", "must be later than start"))
    for name in ("reject_reasons", "lost_reasons"):
        keys: set[str] = set()
        for i, reason in enumerate(getattr(sales, name)):
            if reason.key in keys:
                errors.append((f"sales.{name}[{i}].key", f"duplicate reason '{reason.key}'"))
            keys.add(reason.key)
    for i, reason in enumerate(sales.reject_reasons):
        action = "disqualify" if reason.dead_end else "reject"
        if action not in spec.actions:
            errors.append(
                (f"sales.reject_reasons[{i}]", f"needs an action '{action}' under actions")
            )
    for i, reason in enumerate(sales.lost_reasons):
        if reason.dead_end:
            errors.append((f"sales.lost_reasons[{i}].dead_end", "only reject reasons lead there"))
    return errors


def _loc_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, bool):
            part = str(part).lower()
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


_REASONS = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "union_tag_invalid": "unexpected value",
}


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _reason(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _REASONS:
        return _REASONS[kind]
    if kind == "greater_than":
        return f"must be greater than {_num(ctx.get('gt'))}"
    if kind == "greater_than_equal":
        return f"must be at least {_num(ctx.get('ge'))}"
    if kind == "less_than_equal":
        return f"must be at most {_num(ctx.get('le'))}"
    if kind == "less_than":
        return f"must be less than {_num(ctx.get('lt'))}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}"
    return str(error.get("msg", kind))


def _dedupe_union_errors(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in errors:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:
        pos = max(0, min(int(exc.position), len(text)))
        line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        char = exc.character if isinstance(exc.character, int) else -1
        what = f"U+{char:04X}" if char >= 0 else "a byte"
        raise ModelConfigError(
            f"line {line}, column {column}", f"invalid YAML: {what} is not allowed in YAML text"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ModelConfigError(where, f"invalid YAML: {problem}") from None


def _text(source: str) -> str:
    if not isinstance(source, str):
        raise TypeError(
            f"a lead model is YAML text, not {type(source).__name__}: read the file first"
        )
    return source


def _content_hash(spec: ModelSpec) -> str:
    canonical = json.dumps(
        spec.model_dump(mode="json", by_alias=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_model(data: Any) -> LeadModel:
    """Validate already-parsed YAML (a mapping) into a :class:`LeadModel`."""
    if not isinstance(data, Mapping):
        raise ModelConfigError("(root)", "expected a mapping")
    try:  # text no backend can store (a YAML "\0" escape) never reaches a stored model
        check_json(data, max_depth=64, numbers=False)
    except InputError as exc:
        raise ModelConfigError(exc.field, exc.reason) from None
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        found = _dedupe_union_errors(
            [
                (_loc_path(e["loc"]), _reason(e) + (" as a key" if "[key]" in e["loc"] else ""))
                for e in exc.errors()
            ]
        )
        raise ModelConfigError(found[0][0], found[0][1], tuple(found)) from None
    spec = _with_legacy_roles(spec)
    problems = _semantic_errors(spec)
    if problems:
        raise ModelConfigError(problems[0][0], problems[0][1], tuple(problems))
    order = {name: i for i, name in enumerate(spec.lifecycle.main_path)}
    criteria_from = {}
    for key, stage in spec.stages.items():
        if stage.from_ is not None:
            criteria_from[key] = frozenset(stage.from_)
        elif key in order:
            criteria_from[key] = frozenset(s for s, i in order.items() if i < order[key])
        else:
            criteria_from[key] = frozenset()
    dead_from = (
        frozenset(spec.dead_end.from_)
        if spec.dead_end.from_ is not None
        else frozenset(s for s in spec.stages if s != spec.lifecycle.dead_end)
    )
    return LeadModel(
        spec=spec,
        content_hash=_content_hash(spec),
        stage_order=order,
        criteria_from=criteria_from,
        dead_end_from=dead_from,
    )


def load_model(source: str) -> LeadModel:
    """Load a model from its YAML text (never a file name: ``"x.yaml"`` is parsed as YAML).

    Raises :class:`ModelConfigError` naming the key path and the reason.
    """
    return build_model(_parse_yaml(_text(source)))


def load_default_model() -> LeadModel:
    """The shipped model, ``leadflow/default.yaml`` (the articles' stages and numbers)."""
    text = resources.files("leadflow").joinpath("default.yaml").read_text(encoding="utf-8")
    return load_model(text)


@dataclass(frozen=True)
class CheckReport:
    """What ``leadflow model check FILE`` prints."""

    ok: bool
    errors: tuple[str, ...] = ()
    version: str | None = None
    content_hash: str | None = None
    stages: tuple[str, ...] = ()
    engagement_rules: int = 0
    fastpass_rules: int = 0
    roles: tuple[tuple[str, str], ...] = ()
    """(role, stage) for every stage that has a role, in role order."""

    def lines(self) -> list[str]:
        if not self.ok:
            return list(self.errors)
        return [
            f"ok: model {self.version} (sha256 {self.content_hash})",
            f"stages: {', '.join(self.stages)}",
            f"engagement rules: {self.engagement_rules}, fastpass rules: {self.fastpass_rules}",
            "roles: " + ", ".join(f"{role} {stage}" for role, stage in self.roles),
        ]


def check(source: str) -> CheckReport:
    """Validate a model's YAML text and report every problem found; never raises for a bad
    model."""
    try:
        model = load_model(source)
    except ModelConfigError as exc:
        return CheckReport(ok=False, errors=exc.messages)
    return CheckReport(
        ok=True,
        version=model.version,
        content_hash=model.content_hash,
        stages=model.stages,
        engagement_rules=len(model.spec.engagement.rules),
        fastpass_rules=len(model.spec.fastpass),
        roles=tuple((role, stage) for role in STAGE_ROLES for stage in model.roles.get(role, ())),
    )
