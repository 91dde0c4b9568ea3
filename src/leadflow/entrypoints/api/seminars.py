"""Management API for seminars and webinars (under /api/, admin token).

``GET/POST /api/seminars``, ``GET /api/seminars/{key}`` (with its funnel),
``POST /api/seminars/{key}/invite`` ``{"lead_ids": [...]}`` or ``{"segment": key}``,
``POST /api/seminars/{key}/register`` ``{"lead_id": n}`` or ``{"email": ...}``,
``POST /api/seminars/{key}/attendance`` ``{"attended": [lead ids or emails]}`` or a CSV
upload (``text/csv`` body with an ``email`` column), ``GET /api/seminars/funnel``.
Bad input is 422 naming the field; unknown keys 404; a full seminar 409.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from leadflow.core.tracking import is_valid_email
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import Moment, ServicesDep
from leadflow.entrypoints.api.responses import (
    Attendance,
    Invited,
    Registered,
    Seminar,
    SeminarDetail,
    SeminarFunnel,
    Seminars,
)
from leadflow.services import seminars as sem

router = APIRouter(prefix="/seminars", tags=["seminars"])

SeminarKey = Annotated[str, Path(min_length=1, max_length=64)]
LeadId = Annotated[int, Field(ge=1, le=2**62)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeminarCreate(_Body):
    key: Annotated[str, Field(min_length=1, max_length=64)]
    title: Annotated[str, Field(min_length=1, max_length=255)]
    kind: Literal["seminar", "webinar"] = "webinar"
    starts_at: Moment
    ends_at: Moment | None = None
    location: Annotated[str, Field(max_length=2048)] | None = None
    asset_key: Annotated[str, Field(max_length=64)] | None = None
    capacity: Annotated[int, Field(ge=1, le=1_000_000)] | None = None


class InviteBody(_Body):
    lead_ids: list[LeadId] | None = Field(default=None, max_length=100_000)
    segment: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _one(self) -> InviteBody:
        if (self.lead_ids is None) == (self.segment is None):
            raise ValueError("give exactly one of lead_ids, segment")
        return self


class RegisterBody(_Body):
    lead_id: LeadId | None = None
    email: Annotated[str, Field(max_length=320)] | None = None

    @model_validator(mode="after")
    def _one(self) -> RegisterBody:
        if (self.lead_id is None) == (self.email is None):
            raise ValueError("give exactly one of lead_id, email")
        return self


class AttendanceBody(_Body):
    attended: list[LeadId | Annotated[str, Field(max_length=320)]] = Field(max_length=100_000)


def _model(services: Any, conn: Any, now: datetime) -> Any:
    return services.models.active(conn, now)


@router.get("", operation_id="list_seminars", response_model=Seminars)
def list_seminars(services: ServicesDep) -> dict[str, Any]:
    with services.engine.connect() as conn:
        return {"seminars": sem.list_seminars(conn)}


@router.post(
    "",
    status_code=201,
    operation_id="create_seminar",
    responses=error_responses(404, 409),
    response_model=Seminar,
)
def create_seminar(body: SeminarCreate, services: ServicesDep) -> dict[str, Any]:
    with services.engine.begin() as conn:
        return sem.create(conn, now=services.clock(), **body.model_dump())


@router.get("/funnel", operation_id="seminar_funnel", response_model=SeminarFunnel)
def funnel(services: ServicesDep) -> dict[str, Any]:
    with services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        return {"seminars": sem.funnel(conn, model)}


@router.get(
    "/{key}",
    operation_id="get_seminar",
    responses=error_responses(404),
    response_model=SeminarDetail,
)
def get_seminar(key: SeminarKey, services: ServicesDep) -> dict[str, Any]:
    with services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        row = sem.get(conn, key)
        return {**row, "funnel": sem.funnel(conn, model, key)[0]}


@router.post(
    "/{key}/invite",
    operation_id="invite_to_seminar",
    responses=error_responses(404, 409),
    response_model=Invited,
)
def invite(key: SeminarKey, body: InviteBody, services: ServicesDep) -> dict[str, Any]:
    now = services.clock()
    audience: list[int] | str = body.segment if body.segment is not None else body.lead_ids or []
    with services.engine.begin() as conn:
        return sem.invite(conn, key, audience, _model(services, conn, now), now)


@router.post(
    "/{key}/register",
    operation_id="register_for_seminar",
    responses=error_responses(404, 409),
    response_model=Registered,
)
def register(key: SeminarKey, body: RegisterBody, services: ServicesDep) -> dict[str, Any]:
    now = services.clock()
    with services.engine.begin() as conn:
        lead_id = body.lead_id
        if lead_id is None:
            found, _ = sem.lead_ids_for_emails(conn, [body.email or ""])
            if not found:
                raise sem.NotFound("email: no lead with this address")
            lead_id = found[0]
        return sem.register(conn, key, lead_id, now, after=services.after_ingest)


_ATTENDANCE_BODY = {
    "requestBody": {
        "required": True,
        "description": '`{"attended": [lead ids or e-mails]}`, or a CSV with an `email` column.',
        "content": {
            "application/json": {"schema": AttendanceBody.model_json_schema()},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "/{key}/attendance",
    operation_id="mark_seminar_attendance",
    responses=error_responses(404, 409),
    response_model=Attendance,
    openapi_extra=_ATTENDANCE_BODY,
)
async def attendance(key: SeminarKey, request: Request, services: ServicesDep) -> dict[str, Any]:
    from starlette.concurrency import run_in_threadpool

    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("text/csv", "text/plain"):
        emails, ids = sem.emails_from_csv(raw), []
    else:
        try:
            body = AttendanceBody.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "body"
            raise sem.SeminarError(loc, first["msg"]) from None
        ids = [v for v in body.attended if isinstance(v, int)]
        emails = [v for v in body.attended if isinstance(v, str)]
        for e in emails:
            if not is_valid_email(e.strip()):
                raise sem.SeminarError("attended", f"not a lead id or an email: {e[:80]!r}")
    return await run_in_threadpool(_mark, services, key, ids, emails)


def _mark(services: Any, key: str, ids: list[int], emails: list[str]) -> dict[str, Any]:
    now = services.clock()
    with services.engine.begin() as conn:
        found, unknown = sem.lead_ids_for_emails(conn, emails)
        result = sem.mark_attendance(conn, key, ids + found, now, after=services.after_ingest)
    return {**result, "unknown_emails": unknown}
