"""Management API under /api/ (admin token required). Routers per noun are included here."""

from __future__ import annotations

from fastapi import APIRouter

from leadflow.entrypoints.api import crm, leads, reports, sales, scoring
from leadflow.entrypoints.api import webhooks as webhooks_api
from leadflow.entrypoints.api.deps import AdminDep

router = APIRouter(prefix="/api", dependencies=[AdminDep])
router.include_router(leads.router)
router.include_router(scoring.router)
router.include_router(reports.router)
router.include_router(sales.router)
router.include_router(webhooks_api.router)
router.include_router(crm.router)
