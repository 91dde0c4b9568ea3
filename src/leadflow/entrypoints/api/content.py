"""Management API for the content library: ``/api/content`` (admin token).

Assets declared in leadflow.yaml (``nurture.content``) are listed with ``source: config``
and are changed there (PATCH / DELETE → 409); assets created here have ``source: api``.
Input is validated like ``ContentSpec``: a slug key, a known type and stage, a URL that is
``http(s)://`` or a site path (never ``javascript:``, ``data:`` or ``//host``). Bad input
is 422 naming the field; unknown keys 404; a taken key 409.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leadflow.core.config import ContentSpec, ContentType, EvaluationStage
from leadflow.core.errors import InvalidInput, NotFound
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.entrypoints.api.responses import Asset, Assets
from leadflow.services import content

router = APIRouter(prefix="/content", tags=["content"])
AssetKey = Annotated[str, Path(description="The asset's key.", examples=["what-is-mql"])]


class AssetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    type: ContentType | None = None
    stage: EvaluationStage | None = None
    gated: bool | None = None
    industries: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None, max_length=50
    )
    url: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    active: bool | None = None


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _sync(conn: Any, services: Any) -> None:
    now = services.clock()
    content.sync_from_model(conn, services.models.active(conn, now), now)


@router.get("", operation_id="list_content", response_model=Assets)
def list_content(
    services: ServicesDep,
    stage: Literal["early", "middle", "late"] | None = None,
    type: ContentType | None = None,
    industry: Annotated[str | None, Query(max_length=100)] = None,
    include_inactive: bool = False,
) -> dict[str, Any]:
    """The library; ``industry`` keeps assets made for it or for every industry."""
    with services.engine.begin() as conn:
        _sync(conn, services)
        rows = content.list_assets(conn, active_only=not include_inactive)
    return {"assets": content.filter_assets(rows, stage=stage, type=type, industry=industry)}


@router.post(
    "",
    status_code=201,
    operation_id="create_content",
    responses=error_responses(409),
    response_model=Asset,
)
def create_content(body: ContentSpec, services: ServicesDep) -> dict[str, Any]:
    with services.engine.begin() as conn:
        _sync(conn, services)
        return content.create_asset(conn, body, services.clock())


@router.get(
    "/{key}", operation_id="get_content", responses=error_responses(404), response_model=Asset
)
def get_content(key: AssetKey, services: ServicesDep) -> dict[str, Any]:
    with services.engine.begin() as conn:
        _sync(conn, services)
        rows = content.list_assets(conn, active_only=False)
    found = next((r for r in rows if r["key"] == key), None)
    if found is None:
        raise NotFound(f"no content asset {key[:64]!r}")
    return found


@router.patch(
    "/{key}",
    operation_id="update_content",
    responses=error_responses(404, 409),
    response_model=Asset,
)
def update_content(key: AssetKey, body: AssetUpdate, services: ServicesDep) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    try:
        with services.engine.begin() as conn:
            _sync(conn, services)
            return content.update_asset(conn, key, changes, services.clock())
    except ValidationError as exc:
        raise InvalidInput(str(exc), issues=_validation_detail(exc)) from None


@router.delete(
    "/{key}", status_code=204, operation_id="delete_content", responses=error_responses(404, 409)
)
def delete_content(key: AssetKey, services: ServicesDep) -> None:
    with services.engine.begin() as conn:
        _sync(conn, services)
        content.delete_asset(conn, key)
