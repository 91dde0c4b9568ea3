"""The web dashboard: server-rendered pages (FastAPI + Jinja2 + htmx), vendored assets.

``mount_web(app)`` adds the pages, the static files, the error pages and the security
headers to the application built by :func:`leadflow.entrypoints.api.build_app`.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from leadflow.entrypoints.web import (
    admin,
    analytics,
    errors,
    funnel,
    marketing,
    model,
    pages,
    sales,
    session_routes,
)
from leadflow.entrypoints.web.queries import TTLCache
from leadflow.entrypoints.web.rendering import STATIC
from leadflow.entrypoints.web.security import SecurityHeaders


def mount_web(app: FastAPI) -> None:
    app.state.web_cache = TTLCache(ttl=30.0)
    app.state.login_limits = session_routes.LoginLimits()
    app.include_router(session_routes.router)
    app.include_router(pages.router)
    app.include_router(admin.router)
    app.include_router(funnel.router)
    app.include_router(sales.router)
    app.include_router(model.router)
    app.include_router(analytics.router)
    app.include_router(marketing.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    errors.install(app)
    model.install(app)
    app.add_middleware(SecurityHeaders)


__all__ = ["mount_web"]
