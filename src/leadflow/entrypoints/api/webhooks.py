"""Management API for outbound webhooks: subscriptions, secret rotation, the delivery log
and replays. Bad input is 422 naming the field; unknown ids 404."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from leadflow.core.errors import NotFound
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.entrypoints.api.errors import builtin_errors
from leadflow.entrypoints.api.responses import (
    WebhookDeliveries,
    WebhookDeliveryDetail,
    WebhookEndpoint,
    WebhookEndpoints,
    WebhookEndpointWithSecret,
)
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


@router.get("", operation_id="list_webhooks", response_model=WebhookEndpoints)
def list_endpoints(services: ServicesDep) -> dict[str, Any]:
    with services.engine.connect() as conn:
        return {"endpoints": webhooks.list_endpoints(conn)}


@router.post(
    "",
    status_code=201,
    operation_id="create_webhook",
    responses=error_responses(422),
    response_model=WebhookEndpointWithSecret,
)
def create_endpoint(body: EndpointCreate, services: ServicesDep) -> dict[str, Any]:
    allow = services.settings.webhooks_allow_private_targets
    with builtin_errors(), services.engine.begin() as conn:
        return webhooks.create_endpoint(
            conn,
            body.url,
            body.event_types,
            services.clock(),
            allow_private=allow,
            description=body.description,
        )


@router.get("/deliveries", operation_id="list_webhook_deliveries", response_model=WebhookDeliveries)
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
    "/deliveries/{delivery_id}",
    operation_id="get_webhook_delivery",
    responses=error_responses(404),
    response_model=WebhookDeliveryDetail,
)
def get_delivery(
    services: ServicesDep, delivery_id: int = Path(..., ge=1, le=2**62)
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        found = webhooks.get_delivery(conn, delivery_id)
    if found is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    return found


@router.post(
    "/deliveries/{delivery_id}/replay",
    operation_id="replay_webhook_delivery",
    responses=error_responses(404),
    response_model=WebhookDeliveryDetail,
)
def replay(services: ServicesDep, delivery_id: int = Path(..., ge=1, le=2**62)) -> dict[str, Any]:
    with services.engine.begin() as conn:
        return webhooks.replay(conn, delivery_id, services.clock())


@router.get(
    "/{endpoint_id}",
    operation_id="get_webhook",
    responses=error_responses(404),
    response_model=WebhookEndpoint,
)
def get_endpoint(
    services: ServicesDep, endpoint_id: int = Path(..., ge=1, le=2**62)
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        found = webhooks.get_endpoint(conn, endpoint_id)
    if found is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return found


@router.patch(
    "/{endpoint_id}",
    operation_id="update_webhook",
    responses=error_responses(404, 422),
    response_model=WebhookEndpoint,
)
def update_endpoint(
    body: EndpointUpdate, services: ServicesDep, endpoint_id: int = Path(..., ge=1, le=2**62)
) -> dict[str, Any]:
    allow = services.settings.webhooks_allow_private_targets
    with builtin_errors(), services.engine.begin() as conn:
        return webhooks.update_endpoint(
            conn,
            endpoint_id,
            body.model_dump(exclude_unset=True),
            services.clock(),
            allow_private=allow,
        )


@router.delete(
    "/{endpoint_id}", status_code=204, operation_id="delete_webhook", responses=error_responses(404)
)
def delete_endpoint(services: ServicesDep, endpoint_id: int = Path(..., ge=1, le=2**62)) -> None:
    with services.engine.begin() as conn:
        if not webhooks.delete_endpoint(conn, endpoint_id):
            raise NotFound(f"no webhook endpoint {endpoint_id}")


@router.post(
    "/{endpoint_id}/rotate",
    operation_id="rotate_webhook_secret",
    responses=error_responses(404),
    response_model=WebhookEndpointWithSecret,
)
def rotate(services: ServicesDep, endpoint_id: int = Path(..., ge=1, le=2**62)) -> dict[str, Any]:
    with services.engine.begin() as conn:
        return webhooks.rotate_secret(conn, endpoint_id, services.clock())
