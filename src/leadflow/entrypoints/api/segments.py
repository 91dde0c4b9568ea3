"""Management API for segments (under /api/, admin token).

``GET/POST /api/segments``, ``GET/PATCH/DELETE /api/segments/{key}``,
``GET /api/segments/{key}/members?limit=&offset=``, ``GET /api/segments/{key}/export.csv``
(the audience upload: email, its SHA-256, names, company, stage; formula cells
neutralised), ``GET /api/segments/{key}/changes?after=ID`` (joins and leaves, oldest
first) and ``POST /api/segments/{key}/refresh``. Bad criteria are 422 naming the path,
e.g. ``{"detail": "criteria.score.min: expected a number"}``; unknown keys 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from leadflow.adapters.csv_export import to_csv_string
from leadflow.entrypoints.api.contract import CSV_RESPONSE, error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.entrypoints.api.responses import (
    Segment,
    SegmentChanges,
    SegmentMembers,
    SegmentRefreshed,
    Segments,
)
from leadflow.services import segments as seg

router = APIRouter(prefix="/segments", tags=["segments"])

SegmentKey = Annotated[str, Path(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentCreate(_Body):
    key: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(min_length=1, max_length=255)]
    criteria: dict[str, Any]
    sync: bool = False


class SegmentUpdate(_Body):
    name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    criteria: dict[str, Any] | None = None
    sync: bool | None = None


@router.get("", operation_id="list_segments", response_model=Segments)
def list_segments(services: ServicesDep) -> dict[str, Any]:
    with services.engine.connect() as conn:
        return {"segments": seg.list_segments(conn)}


@router.post(
    "",
    status_code=201,
    operation_id="create_segment",
    responses=error_responses(409),
    response_model=SegmentRefreshed,
)
def create_segment(body: SegmentCreate, services: ServicesDep) -> dict[str, Any]:
    now = services.clock()
    with services.engine.begin() as conn:
        seg.create(conn, body.key, body.name, body.criteria, now, sync=body.sync)
        joined, left = seg.refresh(conn, body.key, now)
        return {**seg.get(conn, body.key), "joined": joined, "left": left}


@router.get(
    "/{key}", operation_id="get_segment", responses=error_responses(404), response_model=Segment
)
def get_segment(key: SegmentKey, services: ServicesDep) -> dict[str, Any]:
    with services.engine.connect() as conn:
        return seg.get(conn, key)


@router.patch(
    "/{key}",
    operation_id="update_segment",
    responses=error_responses(404),
    response_model=SegmentRefreshed,
)
def update_segment(key: SegmentKey, body: SegmentUpdate, services: ServicesDep) -> dict[str, Any]:
    now = services.clock()
    with services.engine.begin() as conn:
        seg.update_segment(conn, key, now, name=body.name, criteria=body.criteria, sync=body.sync)
        joined, left = seg.refresh(conn, key, now)
        return {**seg.get(conn, key), "joined": joined, "left": left}


@router.delete(
    "/{key}", status_code=204, operation_id="delete_segment", responses=error_responses(404)
)
def delete_segment(key: SegmentKey, services: ServicesDep) -> Response:
    with services.engine.begin() as conn:
        seg.delete_segment(conn, key)
    return Response(status_code=204)


@router.post(
    "/{key}/refresh",
    operation_id="refresh_segment",
    responses=error_responses(404),
    response_model=SegmentRefreshed,
)
def refresh_segment(key: SegmentKey, services: ServicesDep) -> dict[str, Any]:
    with services.engine.begin() as conn:
        joined, left = seg.refresh(conn, key, services.clock())
        return {**seg.get(conn, key), "joined": joined, "left": left}


@router.get(
    "/{key}/members",
    operation_id="list_segment_members",
    responses=error_responses(404),
    response_model=SegmentMembers,
)
def list_members(
    key: SegmentKey,
    services: ServicesDep,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=10_000_000),
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        rows, total = seg.members(conn, key, limit=limit, offset=offset)
    return {"members": rows, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/{key}/changes",
    operation_id="list_segment_changes",
    responses=error_responses(404),
    response_model=SegmentChanges,
)
def list_changes(
    key: SegmentKey,
    services: ServicesDep,
    after: int = Query(default=0, ge=0, le=2**62),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        rows = seg.changes(conn, key, after=after, limit=limit)
    return {"changes": rows, "next_after": rows[-1]["id"] if rows else after}


@router.get(
    "/{key}/export.csv",
    operation_id="export_segment_csv",
    response_class=Response,
    responses={**CSV_RESPONSE, **error_responses(404)},
)
def export_csv(key: SegmentKey, services: ServicesDep) -> Response:
    with services.engine.connect() as conn:
        rows = seg.audience_rows(conn, key)
    return Response(
        content=to_csv_string(rows, seg.AUDIENCE_COLUMNS),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="segment-{key}.csv"'},
    )
