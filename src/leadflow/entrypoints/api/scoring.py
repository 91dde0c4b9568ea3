"""Management API for scores, stages and the lead model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Path

from leadflow.adapters.db.repositories.models import model_source
from leadflow.core.config import check
from leadflow.core.errors import NotFound
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.entrypoints.api.responses import (
    ActiveModel,
    ModelCheck,
    ScoreExplanation,
    StageHistory,
)
from leadflow.services import lifecycle
from leadflow.services.leads import lead_exists

router = APIRouter(tags=["scoring"])
LeadId = Path(..., ge=1, le=2**62, description="The lead's id.")
MAX_MODEL_BYTES = 1024 * 1024


def _require_lead(conn: Any, lead_id: int) -> None:
    if not lead_exists(conn, lead_id):
        raise NotFound(f"lead_id: no lead with id {lead_id}", field="lead_id")


@router.get(
    "/leads/{lead_id}/score",
    operation_id="explain_lead_score",
    responses=error_responses(404),
    response_model=ScoreExplanation,
)
def explain_score(services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    """Engagement, fit and BANT scores with every rule that contributed (points before and
    after decay) and the model version."""
    with services.engine.begin() as conn:
        _require_lead(conn, lead_id)
        now = services.clock()
        return lifecycle.explain(conn, lead_id, services.models.active(conn, now), now)


@router.get(
    "/leads/{lead_id}/stages",
    operation_id="list_lead_stage_changes",
    responses=error_responses(404),
    response_model=StageHistory,
)
def stage_history(services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    """The lead's stage-history log and its signals (e.g. lead.returning)."""
    with services.engine.connect() as conn:
        _require_lead(conn, lead_id)
        return {
            "lead_id": lead_id,
            "changes": lifecycle.lead_history(conn, lead_id),
            "signals": lifecycle.lead_signals(conn, lead_id),
        }


@router.get("/model", operation_id="get_active_model", response_model=ActiveModel)
def active_model(services: ServicesDep) -> dict[str, Any]:
    """The active lead model (its YAML source), and every version applied so far."""
    with services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        source = model_source(conn, model.content_hash)
        return {
            "version": model.version,
            "content_hash": model.content_hash,
            "stages": [
                {"key": s, "en": model.display_name(s, "en"), "ko": model.display_name(s, "ko")}
                for s in model.stages
            ],
            "source": source,
            "history": lifecycle.model_history(conn),
        }


@router.post("/model/check", operation_id="check_model", response_model=ModelCheck)
def check_model(
    source: str = Body(..., media_type="text/plain", max_length=MAX_MODEL_BYTES),
) -> dict[str, Any]:
    """Validate a candidate leadflow.yaml, sent as the text body, without applying it. The
    body is always parsed as YAML: a file name in it is never opened on the server."""
    report = check(source)
    return {
        "ok": report.ok,
        "version": report.version,
        "content_hash": report.content_hash,
        "roles": [{"role": role, "stage": stage} for role, stage in report.roles],
        "errors": list(report.errors),
    }
