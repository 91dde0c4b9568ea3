"""Response models of the JSON routes: what the OpenAPI document says each success body is.

Every model names the keys a client can rely on, with their types; rows keep the other
columns the services return (``extra="allow"``: a model documents a body, it does not
filter it). A route's ``response_model`` is checked by FastAPI on every answer, and the
schemathesis contract test (tests/integration/test_openapi_contract.py) validates the bodies
against the document, so a wrong type here is a failing test, not a silent lie.

The reports are large nested documents: their top-level keys are declared, their sections
as objects or lists of objects.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Json = dict[str, Any]


class Out(BaseModel):
    """Base of the response models: declared keys typed, other keys passed through."""

    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------- meta


class Health(Out):
    status: Literal["ok"]
    version: str


# --------------------------------------------------------------------------- scoring


class ScoreExplanation(Out):
    lead_id: int
    as_of: str
    model_version: str
    model_hash: str
    stage: str
    stage_display: dict[str, str]
    paused_until: str | None
    engagement: Json
    fit: Json
    qualification: Json


class StageChange(Out):
    id: int
    lead_id: int
    from_stage: str | None
    to_stage: str
    at: datetime
    rule: str | None
    model_version: str | None


class Signal(Out):
    id: int
    name: str
    lead_id: int
    at: datetime
    data: Json | None = None


class StageHistory(Out):
    lead_id: int
    changes: list[StageChange]
    signals: list[Signal]


class StageName(Out):
    key: str
    en: str
    ko: str


class ModelVersion(Out):
    version: str
    content_hash: str
    active: bool


class ActiveModel(Out):
    version: str
    content_hash: str
    stages: list[StageName]
    source: str
    history: list[ModelVersion]


class StageRole(Out):
    role: str
    stage: str


class ModelCheck(Out):
    ok: bool
    version: str | None
    content_hash: str | None
    roles: list[StageRole]
    errors: list[str]


class Prediction(Out):
    lead_id: int
    version: str
    probability: float
    scored_at: datetime
    raised_by: list[Json]
    lowered_by: list[Json]


class PredictiveModel(Out):
    version: str
    created_at: datetime
    active: bool


# --------------------------------------------------------------------------- reports


class ReportPeriod(Out):
    start: str
    end: str


class FunnelReport(Out):
    report: str
    period: ReportPeriod
    slice_by: str | None
    stages: list[Json]
    sankey: list[Json]
    bottleneck: Json | None
    velocity: list[Json]
    definitions: dict[str, str]


class AttributionReport(Out):
    report: str
    period: ReportPeriod
    level: str
    touch: str
    to_stage: str
    allocation: str
    conversions: int
    conversion_value: float
    models: list[Json]
    credits: list[Json]
    definitions: dict[str, str]


class CampaignsReport(Out):
    report: str
    period: ReportPeriod
    email: list[Json]
    forms: list[Json]
    webinars: list[Json]
    content: list[Json]
    definitions: dict[str, str]


class KpisReport(Out):
    """The KPIs of one role: ``kpis`` (executive, department), or for ``campaign`` the
    sections of the campaigns report (``email``, ``forms``, ...)."""

    report: str
    role: str
    period: ReportPeriod
    kpis: dict[str, Any] | None = None
    definitions: dict[str, str]


class PipelineReport(Out):
    report: str
    as_of: str
    open_deals: int
    # Null when the deals are in several currencies and none was chosen (never summed).
    open_amount: float | None
    weighted_amount: float | None
    by_month: list[Json]
    win_rates: list[Json]
    backtest: Json
    definitions: dict[str, str]


# --------------------------------------------------------------------------- sales


class Rep(Out):
    key: str
    name: str
    email: str
    active: bool
    daily_capacity: int
    weight: float
    territories: list[Json]


class RepToday(Rep):
    today: int = Field(description="Leads handed to the rep today.")


class Reps(Out):
    reps: list[RepToday]


class QueuedLead(Out):
    lead_id: int
    priority: float
    queued_at: datetime


class ReadyQueue(Out):
    queue: list[QueuedLead]


class RouteResult(Out):
    routed: int
    waiting: int
    by_rep: dict[str, int]


class Assignment(Out):
    id: int
    lead_id: int
    rep_key: str
    status: str


class Assignments(Out):
    assignments: list[Assignment]


class ActionResult(Out):
    """What a sales action did (the same again with its ``action_id``: ``duplicate``)."""

    lead_id: int
    action: str
    stage: str
    duplicate: bool
    assignment_id: int | None
    opportunity_id: int | None
    qualification: float | None
    detail: str | None


class OpportunityContact(Out):
    lead_id: int
    role: str


class Opportunity(Out):
    id: int
    external_id: str | None
    account_id: int | None
    lead_id: int | None
    name: str
    amount: float | None
    currency: str
    expected_close: date | None
    stage: str
    owner: str | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class OpportunityDetail(Opportunity):
    contacts: list[OpportunityContact]


class Opportunities(Out):
    opportunities: list[Opportunity]


# --------------------------------------------------------------------------- crm


class CrmResult(Out):
    update_id: str
    external_id: str
    opportunity_id: int | None = None
    duplicate: bool = False


class CrmBatchItem(Out):
    index: int
    status: int = Field(description="200, or the status the update alone would have had.")
    result: CrmResult | None = None
    detail: Any = None


class CrmBatch(Out):
    applied: int
    refused: int
    results: list[CrmBatchItem]


# --------------------------------------------------------------------------- webhooks


class WebhookEndpoint(Out):
    id: int
    url: str
    description: str | None
    event_types: list[str]
    active: bool
    secret_hint: str
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(description="The signing secret, shown once.")


class WebhookEndpoints(Out):
    endpoints: list[WebhookEndpoint]


class WebhookDelivery(Out):
    id: int
    endpoint_id: int
    event_type: str
    status: str
    attempts: int
    payload: Json


class WebhookDeliveryDetail(WebhookDelivery):
    log: list[Json] = Field(description="Every attempt: time, status code, error.")


class WebhookDeliveries(Out):
    deliveries: list[WebhookDelivery]


# --------------------------------------------------------------------------- content


class Asset(Out):
    key: str
    title: str
    type: str
    stage: str
    gated: bool
    industries: list[str]
    url: str
    source: str
    active: bool


class Assets(Out):
    assets: list[Asset]


class Recommendation(Out):
    key: str
    title: str
    type: str
    url: str
    gated: bool


class Personalisation(Out):
    stage: str | None
    evaluation_stage: str
    industry: str | None
    recommendations: list[Recommendation]


# --------------------------------------------------------------------------- email


class EmailSend(Out):
    id: int
    lead_id: int | None
    status: str
    template: str | None
    planned_at: datetime | None


class EmailSends(Out):
    sends: list[EmailSend]


class BounceResult(Out):
    lead_id: int | None
    send_id: int | None
    type: str
    recorded: bool


class TestEmailResult(Out):
    to: str
    template: str
    message_id: str


# --------------------------------------------------------------------------- segments


class Segment(Out):
    id: int
    key: str
    name: str
    criteria: Json
    sync: bool
    member_count: int


class SegmentRefreshed(Segment):
    joined: int
    left: int


class Segments(Out):
    segments: list[Segment]


class SegmentMember(Out):
    lead_id: int
    joined_at: datetime


class SegmentMembers(Out):
    members: list[SegmentMember]
    total: int
    limit: int
    offset: int


class SegmentChange(Out):
    id: int
    lead_id: int
    change: str
    at: datetime


class SegmentChanges(Out):
    changes: list[SegmentChange]
    next_after: int | None


# --------------------------------------------------------------------------- seminars


class Seminar(Out):
    id: int
    key: str
    title: str
    kind: str
    starts_at: datetime
    status: str


class Seminars(Out):
    seminars: list[Seminar]


class SeminarFunnelRow(Out):
    key: str
    title: str
    invited: int
    registered: int
    attended: int


class SeminarFunnel(Out):
    seminars: list[SeminarFunnelRow]


class SeminarDetail(Seminar):
    funnel: SeminarFunnelRow


class Invited(Out):
    invited: int
    already: int
    blocked: dict[str, int]


class Registered(Out):
    lead_id: int
    registered_at: datetime
    new: bool


class Attendance(Out):
    attended: int
    new_attended: int
    no_show: int
    unknown_emails: list[str]


# --------------------------------------------------------------------------- programs


class Program(Out):
    key: str
    name: str
    stages: list[str]
    enrolled: int
    active: int
    completed: int
    exited: int
    steps: list[Json]


class Programs(Out):
    programs: list[Program]


class Enrolment(Out):
    id: int
    program_key: str
    lead_id: int
    status: str
    step_index: int
    enrolled_at: datetime


class Enrolments(Out):
    program: str
    enrolments: list[Enrolment]


# --------------------------------------------------------------------------- targets


class TargetAccount(Out):
    rank: int
    account_id: int
    name: str
    score: float
    is_target: bool
    reasons: list[str]


class TargetRanking(Out):
    top: int
    targets: list[TargetAccount]


class TargetsMarked(Out):
    top: int
    replace: bool
    marked: int
    cleared: int
    targets: list[TargetAccount]


# --------------------------------------------------------------------------- forms


class FormEmbed(Out):
    """What the embed script draws for this visitor (``GET /f/{key}/embed.json``);
    ``skip`` when the visitor has already given what the form asks (then only ``asset``)."""

    skip: bool
    asset: Json | None = None
    form: str | None = None
    lang: str | None = None
    title: str | None = None
    action: str | None = None
    anonymousId: str | None = None
    token: str | None = None
    fields: list[Json] | None = None
    consent: Json | None = None
    text: dict[str, str] | None = None


class FormSubmitted(Out):
    """A form posted as JSON (or asking for JSON) was stored."""

    success: Literal[True]
    asset: Json | None = Field(default=None, description="The content it unlocked, if any.")
    redirect: str | None = Field(default=None, description="Where to send the visitor next.")
