"""``build_app(services)``: the FastAPI application, used by the server and the tests."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request

from leadflow import __version__
from leadflow.bootstrap import Services
from leadflow.entrypoints.api import admin, contract, errors, forms, personalize, tracking
from leadflow.entrypoints.api import email as email_api
from leadflow.entrypoints.api.inputs import guard_inputs
from leadflow.entrypoints.api.responses import Health
from leadflow.entrypoints.web import mount_web


def _cors_for(request: Request) -> dict[str, str] | None:
    """The CORS headers an error answer needs (the public forms are called cross-origin)."""
    return forms.CORS if request.url.path.startswith("/f/") else None


def build_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="leadflow",
        version=__version__,
        description="B2B lead management: Segment-compatible tracking and management API.",
        # Every path/query parameter and body field is checked before the route runs
        # (text PostgreSQL cannot store, numbers and dates out of range): one door.
        dependencies=[Depends(guard_inputs)],
    )
    app.state.services = services
    app.include_router(tracking.router)
    app.include_router(personalize.router)
    app.include_router(forms.router)
    app.include_router(email_api.public_router)  # /e/o, /e/c, /u: email tracking links
    app.include_router(admin.router)
    mount_web(app)  # the dashboard: / (sign-in), pages, /static
    contract.install(app)  # error bodies, Segment message schemas, security schemes
    errors.install(app, cors_for=_cors_for)  # every error to its status and body, once

    @app.get("/healthz", operation_id="health", tags=["meta"], response_model=Health)
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
