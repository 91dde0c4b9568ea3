"""Management API for outbound webhooks: subscriptions, secret rotation, the delivery log
and replays. Bad input is 422 naming the field; unknown ids 404."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from leadflow.core.webhooks import InvalidTarget
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.services import webhooks

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

Url = Annotated[str, Field(min_length=1, max_length=2048)]
EventName = Annotated[str, Field(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_Body):
    url: Url
    event_types: list[EventName] = Field(default_factory=lambda: ["*"], max_length=50)
    description: Annotated[str, Field(max_length=255)] | None = None


class EndpointUpdate(_Body):
    url: Url | None = None
    event_types: list[EventName] | None = Field(default=None, max_length=50)
    description: Annotated[str, Field(max_length=255)] | None = None
    active: bool | None = None


def _refused(exc: ValueError) -> HTTPException:
    return HTTPException(status_code=422, detail=str(exc))


@router.get("", operation_id="list_webhooks")
def list_endpoints(services: ServicesDep) -> dict[str, Any]:
    with services.engine.connect() as conn:
        return {"endpoints": webhooks.list_endpoints(conn)}


@router.post("", status_code=201, operation_id="create_webhook")
def create_endpoint(body: EndpointCreate, services: ServicesDep) -> dict[str, Any]:
    allow = services.settings.webhooks_allow_private_targets
    try:
        with services.engine.begin() as conn:
            return webhooks.create_endpoint(
                conn,
                body.url,
                body.event_types,
                services.clock(),
                allow_private=allow,
                description=body.description,
            )
    except (InvalidTarget, ValueError) as exc:
        raise _refused(exc) from None


@router.get("/deliveries", operation_id="list_webhook_deliveries")
def list_deliveries(
    services: ServicesDep,
    status: Literal["pending", "delivered", "dead"] | None = Query(default=None),
    endpoint_id: int | None = Query(default=None, ge=1, le=2**62),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        rows = webhooks.list_deliveries(conn, status=status, endpoint_id=endpoint_id, limit=limit)
    return {"deliveries": rows}


@router.get(
    "/deliveries/{delivery_id}", operation_id="get_webhook_delivery", responses=error_responses(404)
)
def get_delivery(
    services: ServicesDep, delivery_id: int = Path(..., ge=1, le=2**62)
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        found = webhooks.get_delivery(conn, delivery_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no webhook delivery {delivery_id}")
    return found


@router.post(
    "/deliveries/{delivery_id}/replay",
    operation_id="replay_webhook_delivery",
    responses=error_responses(404),
)
def replay(services: ServicesDep, delivery_id: int = Path(..., ge=1, le=2**62)) -> dict[str, Any]:
    try:
        with services.engine.begin() as conn:
            return webhooks.replay(conn, delivery_id, services.clock())
    except webhooks.NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


@router.get("/{endpoint_id}", operation_id="get_webhook", responses=error_responses(404))
def get_endpoint(
    services: ServicesDep, endpoint_id: int = Path(..., ge=1, le=2**62)
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        found = webhooks.get_endpoint(conn, endpoint_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no webhook endpoint {endpoint_id}")
    return found


@router.patch("/{endpoint_id}", operation_id="update_webhook", responses=error_responses(404))
def update_endpoint(
    body: EndpointUpdate, services: ServicesDep, endpoint_id: int = Path(..., ge=1, le=2**62)
) -> dict[str, Any]:
    allow = services.settings.webhooks_allow_private_targets
    try:
        with services.engine.begin() as conn:
            return webhooks.update_endpoint(
                conn,
                endpoint_id,
                body.model_dump(exclude_unset=True),
                services.clock(),
                allow_private=allow,
            )
    except webhooks.NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except (InvalidTarget, ValueError) as exc:
        raise _refused(exc) from None


@router.delete(
    "/{endpoint_id}", status_code=204, operation_id="delete_webhook", responses=error_responses(404)
)
def delete_endpoint(services: ServicesDep, endpoint_id: int = Path(..., ge=1, le=2**62)) -> None:
    with services.engine.begin() as conn:
        if not webhooks.delete_endpoint(conn, endpoint_id):
            raise HTTPException(status_code=404, detail=f"no webhook endpoint {endpoint_id}")


@router.post(
    "/{endpoint_id}/rotate", operation_id="rotate_webhook_secret", responses=error_responses(404)
)
def rotate(services: ServicesDep, endpoint_id: int = Path(..., ge=1, le=2**62)) -> dict[str, Any]:
    try:
        with services.engine.begin() as conn:
            return webhooks.rotate_secret(conn, endpoint_id, services.clock())
    except webhooks.NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
