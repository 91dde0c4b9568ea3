"""The schema of the ``nurture`` section (issue 4): the content library, hosted forms,
programs with their steps, and the frequency cap."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from leadflow.core.config.base import NonEmptyStr, Scalar, ScalarList, StrList, _as_list, _Spec
from leadflow.core.config.schema import Display, EventMatch

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


class NurtureSpec(_Spec):
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    # The evaluation stage (early/middle/late) of content that suits a lifecycle stage.
    content_stages: dict[str, EvaluationStage] | None = None
    """Default: by the stage's role (``ROLE_CONTENT_STAGES``)."""
    content: list[ContentSpec] = Field(default_factory=list)
    forms: list[FormSpec] = Field(default_factory=list)
    programs: list[ProgramSpec] = Field(default_factory=list)
