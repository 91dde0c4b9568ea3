"""Management API for CRM sync: inbound opportunity updates and CSV exports in HubSpot /
Salesforce column names. Refused transitions are 409 with the stage machine's reason;
unknown leads 404; bad input 422 naming the field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leadflow.adapters.csv_export import to_csv_string
from leadflow.core.errors import InvalidInput
from leadflow.entrypoints.api.contract import CSV_RESPONSE, declared_body, error_responses
from leadflow.entrypoints.api.deps import Moment, ServicesDep
from leadflow.entrypoints.api.errors import builtin_errors, error_body, status_of
from leadflow.entrypoints.api.responses import CrmBatch, CrmResult
from leadflow.services import crm

router = APIRouter(tags=["crm"])
MAX_UPDATES = 500
Text = Annotated[str, Field(min_length=1, max_length=255)]


class CrmUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Text
    """The CRM's opportunity id."""
    update_id: Text
    """Idempotency key: the same update again changes nothing."""
    lead_email: (
        Annotated[str, Field(pattern=r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$", max_length=320)]
        | None
    ) = None
    stage: Literal["open", "won", "lost"] | None = None
    amount: float | None = Field(default=None, gt=0, le=1e15)
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")] | None = None
    owner: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    lost_reason: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    created_at: Moment | None = None
    """When the deal opened (the CRM's create/engaged date)."""
    closed_at: Moment | None = None
    """The close date: a won/lost is recorded at it (not before ``created_at``)."""


class CrmUpdates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    updates: list[CrmUpdate] = Field(min_length=1, max_length=MAX_UPDATES)


def _apply_one(services: Any, update: CrmUpdate) -> dict[str, Any]:
    """One update in its own transaction; raises an application error on refusal."""
    with builtin_errors(), services.engine.begin() as conn:
        now = services.clock()
        model = services.models.active(conn, now)
        return crm.apply_update(conn, model, update.model_dump(exclude_none=True), now)


def _parse(body: Any) -> CrmUpdate | CrmUpdates:
    """Validate the body; 422 naming the first bad field (``updates[3].amount: ...``)."""
    if not isinstance(body, dict):
        raise InvalidInput("body: expected a JSON object", field="body")
    shape: type[CrmUpdate] | type[CrmUpdates] = CrmUpdates if "updates" in body else CrmUpdate
    try:
        return shape.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ""
        for part in first["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        field = loc or "body"
        message = f"{field}: {first['msg']}".replace("Value error, ", "")
        raise InvalidInput(message, field=field) from None


@router.post(
    "/crm/updates",
    operation_id="apply_crm_updates",
    responses=error_responses(404, 409),
    response_model=CrmResult | CrmBatch,
    openapi_extra=declared_body(
        CrmUpdate, CrmUpdates, description='One update, or `{"updates": [...]}` (at most 500).'
    ),
)
def apply_updates(services: ServicesDep, payload: Any = Body(...)) -> dict[str, Any]:
    """Apply one CRM update (fields of ``CrmUpdate``), or ``{"updates": [...]}`` (at most
    500). A batch applies each update in its own transaction and reports each one's status
    (200, 404, 409 or 422)."""
    body = _parse(payload)
    if isinstance(body, CrmUpdate):
        return _apply_one(services, body)
    results: list[dict[str, Any]] = []
    for i, update in enumerate(body.updates):
        try:
            results.append({"index": i, "status": 200, "result": _apply_one(services, update)})
        except Exception as exc:
            status = status_of(exc)
            if status is None:
                raise
            results.append({"index": i, "status": status, "detail": error_body(exc)["detail"]})
    return {
        "applied": sum(1 for r in results if r["status"] == 200),
        "refused": sum(1 for r in results if r["status"] != 200),
        "results": results,
    }


@router.get(
    "/crm/export", operation_id="export_crm_csv", response_class=Response, responses=CSV_RESPONSE
)
def export(
    services: ServicesDep,
    kind: Literal["leads", "opportunities"] = Query(...),
    flavour: Literal["hubspot", "salesforce"] = Query("hubspot"),
) -> Response:
    """Leads or opportunities as CSV in the CRM's import column names; cells a spreadsheet
    would run as formulas are neutralised."""
    with services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        columns, rows = crm.export_rows(conn, kind, flavour, model)
    return Response(
        content=to_csv_string(rows, columns),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{kind}-{flavour}.csv"'},
    )
