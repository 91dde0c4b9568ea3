"""Management API under /api/ (admin token required). Routers per noun are included here."""

from __future__ import annotations

from fastapi import APIRouter

from leadflow.entrypoints.api import content as content_api
from leadflow.entrypoints.api import crm, leads, predictive, reports, sales, scoring
from leadflow.entrypoints.api import email as email_api
from leadflow.entrypoints.api import programs as programs_api
from leadflow.entrypoints.api import segments as segments_api
from leadflow.entrypoints.api import seminars as seminars_api
from leadflow.entrypoints.api import targets as targets_api
from leadflow.entrypoints.api import webhooks as webhooks_api
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import AdminDep

router = APIRouter(prefix="/api", dependencies=[AdminDep], responses=error_responses(401))
router.include_router(leads.router)
router.include_router(scoring.router)
router.include_router(reports.router)
router.include_router(sales.router)
router.include_router(webhooks_api.router)
router.include_router(crm.router)
router.include_router(predictive.router)
router.include_router(content_api.router)
router.include_router(email_api.router)
router.include_router(segments_api.router)
router.include_router(seminars_api.router)
router.include_router(programs_api.router)
router.include_router(targets_api.router)
