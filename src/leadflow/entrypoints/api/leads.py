"""Management API for leads and privacy (mounted under /api/, admin token required).

- ``GET /api/leads``: the smart-list filters of :mod:`leadflow.core.lead_lists` (``q`` or
  ``search``, ``stage``, ``role``, score ranges, ``grade``, ``owner``, last activity,
  ``program``, ``segment``, ``form``, ``campaign``, ``source``, ``account`` (a domain, or an
  account id), ``f.<field>`` custom attributes), ``sort``, ``page`` and ``size`` (or
  ``limit``); keyset paging on the default order with ``cursor`` (the ``next_cursor`` of the
  previous page).
- ``GET /api/leads/export.csv``: the same filters, every matching lead as CSV.
- ``GET /api/leads/{id}``, ``GET /api/leads/{id}/events``.
- ``GET /api/privacy/export?email=``, ``POST /api/privacy/erase`` ``{"email": ...}``.

Errors name the field: ``{"detail": "limit: must be between 1 and 1000", "field": "limit"}``
(400) for filter values, FastAPI's 422 (``loc`` names the field) for wrong types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from starlette.concurrency import run_in_threadpool

from leadflow.core import lead_lists as list_spec
from leadflow.core.errors import BadRequest, NotFound
from leadflow.core.tracking import is_valid_email, normalise_email
from leadflow.entrypoints.api.contract import CSV_RESPONSE, error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.services import lead_lists, privacy
from leadflow.services import leads as lead_service

router = APIRouter(tags=["leads"])
# Ids and cursors are database ids: bounded so a larger number is a 422, not a 500 on the
# database's 64-bit integers.
MAX_ID = 2**62
LeadId = Path(..., ge=1, le=MAX_ID, description="The lead's id.")


class AccountPublic(BaseModel):
    id: int
    name: str
    domain: str | None
    industry: str | None
    employee_count: int | None
    country: str | None
    is_target: bool
    owner: str | None


class LeadSummary(BaseModel):
    id: int
    email: str | None
    first_name: str | None
    last_name: str | None
    title: str | None
    company: str | None
    domain: str | None
    source: str | None
    consent_status: str
    created_at: datetime
    updated_at: datetime
    account_id: int | None
    stage: str = Field(description="Stage id (the model's initial stage when never scored).")
    stage_label: str
    engagement: float | None
    fit: float | None
    fit_grade: str | None
    pause_until: datetime | None
    owner: str | None = Field(description="The sales rep who owns the lead's account.")
    last_activity: datetime | None = Field(description="Time of the lead's newest event.")
    program: str | None = Field(description="A nurture program the lead is active in.")


class LeadPage(BaseModel):
    items: list[LeadSummary]
    next_cursor: int | None = Field(
        description="Pass as `cursor` for the next page (default order only)."
    )
    page: int
    size: int
    has_previous: bool
    has_next: bool
    count: int = Field(description=f"Matching leads, at most {lead_lists.COUNT_CAP}.")
    count_capped: bool = Field(description="More leads match than `count`.")


class LeadDetail(BaseModel):
    id: int
    email: str | None
    user_id: str | None
    first_name: str | None
    last_name: str | None
    title: str | None
    phone: str | None
    source: str | None
    consent_status: str
    consent_at: datetime | None
    consent_method: str | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    erased: bool
    erased_at: datetime | None
    account: AccountPublic | None
    state: LeadStatePublic | None = Field(
        description="Stage, scores and pause (None before the lead is first scored)."
    )


class LeadStatePublic(BaseModel):
    stage: str
    stage_since: datetime | None
    engagement: float
    fit: float
    fit_grade: str | None
    qualification: float
    pause_until: datetime | None
    scored_at: datetime


class EventPublic(BaseModel):
    id: int
    occurred_at: datetime
    type: str
    name: str | None
    channel: str | None
    page_url: str | None
    referrer: str | None
    utm_campaign: str | None
    utm_source: str | None
    utm_medium: str | None
    message_id: str
    properties: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventPublic]
    next_cursor: int | None


class _ExportBase(BaseModel):
    exported_at: str
    email: str
    lead: dict[str, Any]
    account: dict[str, Any] | None


# One list of rows per table about a person (privacy.person_tables: derived from the schema).
PersonExport = create_model(  # type: ignore[call-overload]
    "PersonExport",
    __base__=_ExportBase,
    **{
        table.name: (list[dict[str, Any]], Field(description=f"Rows of `{table.name}`."))
        for table, _ in privacy.person_tables()
    },
)


class EraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, description="The person's e-mail address.")

    @field_validator("email")
    @classmethod
    def _valid(cls, value: str) -> str:
        email = normalise_email(value)
        if not is_valid_email(email):
            raise ValueError("not a valid e-mail address")
        return email


class ErasureResult(BaseModel):
    lead_id: int
    events_anonymised: int
    identities_removed: int
    rows_scrubbed: int = Field(description="Other rows about the person that were scrubbed.")
    suppressed: bool = True


_LIST_DOC = (
    "Custom attribute filters are `f.<field>=<text>` (equal) and `f.<field>.min` / "
    "`f.<field>.max` (numeric range). Errors name the parameter: "
    '`{"detail": "sort: unknown column ...", "field": "sort"}`.'
)
Text = Query(None, max_length=list_spec.MAX_TEXT)
Key = Query(None, max_length=64)
Score = Query(None, ge=-list_spec.SCORE_LIMIT, le=list_spec.SCORE_LIMIT)
Moment = Query(None, max_length=40, description="A date (YYYY-MM-DD) or ISO 8601 time.")
Many = Query(None, max_length=64)


def _list_query(request: Request, services: Any) -> list_spec.LeadQuery:
    """The smart-list query of the request (legacy names: ``search``, ``limit``, ``account``
    as a domain)."""
    pairs: list[tuple[str, str]] = []
    for key, value in request.query_params.multi_items():
        if key == "search":
            key = "q"
        elif key == "limit":
            key = "size"
        elif key == "account" and not (value.isascii() and value.isdigit()):
            key = "domain"
        pairs.append((key, value))
    return list_spec.parse(pairs, stages=services.active_model().stages)


def _filters(
    q: str | None = Text,
    search: str | None = Query(
        None, max_length=list_spec.MAX_TEXT, description="Same as `q`.", deprecated=True
    ),
    stage: list[str] | None = Many,
    role: list[str] | None = Many,
    engagement_min: float | None = Score,
    engagement_max: float | None = Score,
    fit_min: float | None = Score,
    fit_max: float | None = Score,
    grade: list[str] | None = Many,
    owner: str | None = Query(None, max_length=255),
    active_after: str | None = Moment,
    active_before: str | None = Moment,
    program: str | None = Key,
    segment: str | None = Key,
    form: str | None = Key,
    campaign: str | None = Key,
    source: str | None = Query(None, max_length=100),
    account: str | None = Query(None, max_length=255, description="Account domain or id."),
    domain: str | None = Query(None, max_length=255),
    sort: str | None = Query(None, max_length=40, description="A column; `-column` descends."),
    cols: str | None = Query(None, max_length=400),
) -> None:
    """The smart-list filters, declared for the OpenAPI document and checked by type here;
    :func:`_list_query` reads them (and ``f.<field>`` filters) from the query string."""


Filters = Depends(_filters)


@router.get(
    "/leads",
    operation_id="list_leads",
    responses=error_responses(400),
    response_model=LeadPage,
    description=_LIST_DOC,
)
async def list_leads(
    request: Request,
    services: ServicesDep,
    _: None = Filters,
    page: int = Query(1, ge=1, le=list_spec.MAX_OFFSET),
    size: int | None = Query(None, ge=1, le=list_spec.MAX_SIZE),
    limit: int = Query(50, ge=1, le=lead_service.MAX_LIMIT, description="Same as `size`."),
    cursor: int | None = Query(None, ge=0, le=MAX_ID),
) -> Any:
    if size is not None and "limit" in request.query_params:
        raise BadRequest("size: give size or limit, not both", field="size")
    query = _list_query(request, services)
    result = await run_in_threadpool(
        lead_lists.list_page, services.engine, query, services.active_model()
    )
    return {
        "items": result.rows,
        "next_cursor": result.next_cursor,
        "page": query.page,
        "size": query.size,
        "has_previous": result.has_previous,
        "has_next": result.has_next,
        "count": result.count,
        "count_capped": result.count_capped,
    }


@router.get(
    "/leads/export.csv",
    operation_id="export_leads_csv",
    response_class=StreamingResponse,
    responses={**CSV_RESPONSE, **error_responses(400)},
    description="Every lead the filters of `GET /api/leads` match (paging ignored), as CSV "
    f"(at most {lead_lists.EXPORT_LIMIT:,} rows); formula-like cells are neutralised.",
)
async def export_leads(
    request: Request,
    services: ServicesDep,
    _: None = Filters,
) -> StreamingResponse:
    query = _list_query(request, services)
    rows = lead_lists.export_rows(services.engine, query, services.active_model())
    return StreamingResponse(
        lead_lists.csv_chunks(rows, lead_lists.export_columns(query)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="leads.csv"'},
    )


@router.get(
    "/leads/{lead_id}",
    operation_id="get_lead",
    responses=error_responses(404),
    response_model=LeadDetail,
)
async def get_lead(services: ServicesDep, lead_id: int = LeadId) -> Any:
    lead = await run_in_threadpool(lead_service.get_lead, services.engine, lead_id)
    if lead is None:
        raise NotFound(f"lead_id: no lead {lead_id}", field="lead_id")
    return lead


@router.get(
    "/leads/{lead_id}/events",
    operation_id="list_lead_events",
    responses=error_responses(400, 404),
    response_model=EventPage,
)
async def list_lead_events(
    services: ServicesDep,
    lead_id: int = LeadId,
    limit: int = Query(100, ge=1, le=lead_service.MAX_LIMIT),
    cursor: int | None = Query(None, ge=0, le=MAX_ID),
) -> Any:
    lead = await run_in_threadpool(lead_service.get_lead, services.engine, lead_id)
    if lead is None:
        raise NotFound(f"lead_id: no lead {lead_id}", field="lead_id")
    rows, next_cursor = await run_in_threadpool(
        lambda: lead_service.lead_events(services.engine, lead_id, limit=limit, cursor=cursor)
    )
    return {"items": rows, "next_cursor": next_cursor}


@router.get(
    "/privacy/export",
    operation_id="export_person",
    responses=error_responses(400, 404),
    response_model=PersonExport,
    tags=["privacy"],
)
async def export_person(services: ServicesDep, email: str = Query(..., max_length=320)) -> Any:
    address = normalise_email(email)
    if not is_valid_email(address):
        raise BadRequest("email: not a valid e-mail address", field="email")
    try:
        return await run_in_threadpool(
            lambda: privacy.export_person(services.engine, address, now=services.clock())
        )
    except privacy.PersonNotFound as exc:
        raise NotFound(f"email: {exc}", field="email") from exc


@router.post(
    "/privacy/erase",
    operation_id="erase_person",
    responses=error_responses(404),
    response_model=ErasureResult,
    tags=["privacy"],
)
async def erase_person(body: EraseRequest, services: ServicesDep) -> Any:
    try:
        result = await run_in_threadpool(
            lambda: privacy.erase_person(services.engine, body.email, now=services.clock())
        )
    except privacy.PersonNotFound as exc:
        raise NotFound(f"email: {exc}", field="email") from exc
    return {
        "lead_id": result.lead_id,
        "events_anonymised": result.events_anonymised,
        "identities_removed": result.identities_removed,
        "rows_scrubbed": result.rows_scrubbed,
    }
