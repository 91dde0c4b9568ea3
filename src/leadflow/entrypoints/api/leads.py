"""Management API for leads and privacy (mounted under /api/, admin token required).

- ``GET /api/leads``: filters ``search``, ``source``, ``account`` (domain); keyset paging with
  ``limit`` and ``cursor`` (the ``next_cursor`` of the previous page).
- ``GET /api/leads/{id}``, ``GET /api/leads/{id}/events``.
- ``GET /api/privacy/export?email=``, ``POST /api/privacy/erase`` ``{"email": ...}``.

Errors name the field: ``{"detail": "limit: must be between 1 and 1000", "field": "limit"}``
(400) for filter values, FastAPI's 422 (``loc`` names the field) for wrong types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from starlette.concurrency import run_in_threadpool

from leadflow.core.errors import BadRequest, NotFound
from leadflow.core.tracking import is_valid_email, normalise_email
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.services import leads as lead_service
from leadflow.services import privacy

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


class LeadPage(BaseModel):
    items: list[LeadSummary]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page.")


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


@router.get(
    "/leads", operation_id="list_leads", responses=error_responses(400), response_model=LeadPage
)
async def list_leads(
    services: ServicesDep,
    search: str | None = Query(None, max_length=lead_service.MAX_SEARCH_LENGTH),
    source: str | None = Query(None, max_length=100),
    account: str | None = Query(None, max_length=255, description="Account domain."),
    limit: int = Query(50, ge=1, le=lead_service.MAX_LIMIT),
    cursor: int | None = Query(None, ge=0, le=MAX_ID),
) -> Any:
    query = lead_service.LeadFilter(
        search=search, source=source, account_domain=account, limit=limit, cursor=cursor
    )
    rows, next_cursor = await run_in_threadpool(lead_service.list_leads, services.engine, query)
    return {"items": rows, "next_cursor": next_cursor}


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
