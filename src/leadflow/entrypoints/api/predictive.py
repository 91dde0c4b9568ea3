"""Management API for predictive scoring: a lead's prediction and the model versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from leadflow.core.errors import NotFound
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.entrypoints.api.responses import Prediction, PredictiveModel
from leadflow.services import predictive_store
from leadflow.services.leads import lead_exists

router = APIRouter(tags=["predictive"])
LeadId = Path(..., ge=1, le=2**62, description="The lead's id.")


@router.get(
    "/leads/{lead_id}/prediction",
    operation_id="explain_lead_prediction",
    responses=error_responses(404),
    response_model=Prediction,
)
def lead_prediction(services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    """The active model's conversion probability for the lead (the fourth score) with the
    features that raised and lowered it (signed log-odds contributions)."""
    with services.engine.connect() as conn:
        if not lead_exists(conn, lead_id):
            raise NotFound(f"lead_id: no lead with id {lead_id}", field="lead_id")
        found = predictive_store.prediction_for(conn, lead_id)
    if found is None:
        raise NotFound(
            f"lead_id: lead {lead_id} has no prediction (no active model or not refreshed yet)",
            field="lead_id",
        )
    return found


@router.get(
    "/predictive/models",
    operation_id="list_predictive_models",
    response_model=list[PredictiveModel],
)
def list_models(services: ServicesDep) -> list[dict[str, Any]]:
    """Every stored model version, newest first."""
    with services.engine.connect() as conn:
        return predictive_store.list_versions(conn)
