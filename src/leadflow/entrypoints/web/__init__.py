"""The web dashboard: server-rendered pages (FastAPI + Jinja2 + htmx), vendored assets.

``mount_web(app)`` adds the pages, the static files, the error pages and the security
headers to the application built by :func:`leadflow.entrypoints.api.build_app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from leadflow.entrypoints.web import (
    admin,
    analytics,
    deals,
    errors,
    funnel,
    marketing,
    model,
    pages,
    sales,
    session_routes,
)
from leadflow.entrypoints.web.cache import TTLCache
from leadflow.entrypoints.web.rendering import STATIC
from leadflow.entrypoints.web.security import SecurityHeaders


def _on_startup(app: FastAPI, start: Callable[[], None]) -> None:
    """Run ``start`` when the server starts (before its own lifespan, if any)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        start()
        async with inner(application) as state:
            yield state

    app.router.lifespan_context = lifespan


def mount_web(app: FastAPI) -> None:
    app.state.web_cache = TTLCache(ttl=30.0)
    app.state.login_limits = session_routes.LoginLimits()
    _on_startup(app, lambda: funnel.warm(app))
    app.include_router(session_routes.router)
    app.include_router(pages.router)
    app.include_router(admin.router)
    app.include_router(funnel.router)
    app.include_router(sales.router)
    app.include_router(model.router)
    app.include_router(analytics.router)
    app.include_router(marketing.router)
    app.include_router(deals.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    errors.install(app)
    model.install(app)
    app.add_middleware(SecurityHeaders)


__all__ = ["mount_web"]
