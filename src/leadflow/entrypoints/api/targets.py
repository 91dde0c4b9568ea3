"""Management API for target-account discovery (under /api/, admin token).

``GET /api/accounts/targets?top=N`` ranks accounts by likeness to the won ones (read-only);
``POST /api/accounts/targets {"top": N, "replace": true}`` marks the top N as target
accounts (see :mod:`leadflow.services.targets`). Bad input is 422 naming the field; no won
accounts is 409 and nothing changes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from leadflow.core.errors import Conflict
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.entrypoints.api.responses import TargetRanking, TargetsMarked
from leadflow.services import targets as svc

router = APIRouter(prefix="/accounts", tags=["accounts"])
Top = Annotated[int, Query(ge=1, le=svc.MAX_TOP, description="How many accounts.")]
MinDeals = Annotated[int, Query(ge=1, le=1000, description="Won deals a segment needs.")]
Traits = Annotated[
    list[str] | None, Query(max_length=20, description="Categorical account traits.")
]


class MarkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top: Annotated[StrictInt, Field(ge=1, le=svc.MAX_TOP)]
    replace: bool = True
    traits: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=20)
    ] = []
    min_deals: Annotated[StrictInt, Field(ge=1, le=1000)] = 3


def _nothing_changed(exc: svc.NoWonAccounts) -> Conflict:
    return Conflict(f"{exc}; nothing was changed")


@router.get(
    "/targets",
    operation_id="rank_target_accounts",
    responses=error_responses(409),
    response_model=TargetRanking,
)
def rank(
    services: ServicesDep, top: Top = 50, min_deals: MinDeals = 3, trait: Traits = None
) -> dict[str, Any]:
    """The ``top`` accounts most like the won customers, with the features that made each
    similar and its value (average won deal of its segment, with the basis used)."""
    try:
        rows = svc.rank_targets(
            services.engine,
            services.clock(),
            top,
            traits=trait or (),
            min_deals=min_deals,
            models=services.models,
        )
    except svc.NoWonAccounts as exc:
        raise _nothing_changed(exc) from exc
    return {"top": top, "targets": rows}


@router.post(
    "/targets",
    operation_id="mark_target_accounts",
    responses=error_responses(409),
    response_model=TargetsMarked,
)
def mark(body: MarkBody, services: ServicesDep) -> dict[str, Any]:
    """Mark the top N look-alike accounts as target accounts and recompute their leads."""
    try:
        return svc.mark_targets(
            services.engine,
            services.clock(),
            body.top,
            replace=body.replace,
            traits=body.traits,
            min_deals=body.min_deals,
            models=services.models,
        )
    except svc.NoWonAccounts as exc:
        raise _nothing_changed(exc) from exc
