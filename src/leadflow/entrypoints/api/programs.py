"""Management API for nurture programs: per-step results, enrolments, manual enrolment.

Programs are defined in the active model (``nurture.programs`` of leadflow.yaml); this API
reads them with their live counts. Unknown programs or leads are 404; an enrolment the
rules refuse (already enrolled, dead end, erased, wrong stage) is 409.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from leadflow.core.errors import NotFound
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.entrypoints.api.responses import Enrolment, Enrolments, Program, Programs
from leadflow.services import nurture

router = APIRouter(prefix="/programs", tags=["programs"])

ProgramKey = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$", examples=["education"]),
]


class EnrolBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lead_id: Annotated[int, Field(ge=1, le=2**62)]


def _program(services: ServicesDep, key: str) -> dict[str, Any]:
    with services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        programs = nurture.program_stats(conn, model)
    for program in programs:
        if program["key"] == key:
            return program
    raise NotFound(f"program {key!r} not found in the active model")


@router.get("", operation_id="list_programs", response_model=Programs)
def list_programs(services: ServicesDep) -> dict[str, Any]:
    """Every program with enrolment counts and per-step sends, skips, opens and clicks."""
    with services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        return {"programs": nurture.program_stats(conn, model)}


@router.get(
    "/{key}", operation_id="get_program", responses=error_responses(404), response_model=Program
)
def get_program(key: ProgramKey, services: ServicesDep) -> dict[str, Any]:
    return _program(services, key)


@router.get(
    "/{key}/enrolments",
    operation_id="list_program_enrolments",
    responses=error_responses(404),
    response_model=Enrolments,
)
def list_enrolments(
    key: ProgramKey,
    services: ServicesDep,
    status: Literal["active", "completed", "exited"] | None = Query(None),
    limit: int = Query(100, ge=1, le=10_000),
) -> dict[str, Any]:
    _program(services, key)
    with services.engine.connect() as conn:
        rows = nurture.list_enrolments(conn, key, status=status, limit=limit)
    return {"program": key, "enrolments": rows}


@router.post(
    "/{key}/enrol",
    status_code=201,
    operation_id="enrol_in_program",
    responses=error_responses(404, 409),
    response_model=Enrolment,
)
def enrol(key: ProgramKey, body: EnrolBody, services: ServicesDep) -> dict[str, Any]:
    """Enrol one lead now (its first step is scheduled as due work)."""
    now = services.clock()
    with services.engine.begin() as conn:
        model = services.models.active(conn, now)
        return nurture.enrol(conn, model, key, body.lead_id, now)
