"""``build_app(services)``: the FastAPI application, used by the server and the tests."""

from __future__ import annotations

from fastapi import FastAPI

from leadflow import __version__
from leadflow.bootstrap import Services
from leadflow.entrypoints.api import admin, contract, forms, personalize, tracking
from leadflow.entrypoints.api import email as email_api
from leadflow.entrypoints.web import mount_web


def build_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="leadflow",
        version=__version__,
        description="B2B lead management: Segment-compatible tracking and management API.",
    )
    app.state.services = services
    app.include_router(tracking.router)
    app.include_router(personalize.router)
    app.include_router(forms.router)
    app.include_router(email_api.public_router)  # /e/o, /e/c, /u: email tracking links
    app.include_router(admin.router)
    mount_web(app)  # the dashboard: / (sign-in), pages, /static
    contract.install(app)  # error bodies, Segment message schemas, security schemes

    @app.get("/healthz", operation_id="health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
