"""``build_app(services)``: the FastAPI application, used by the server and the tests."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from leadflow import __version__
from leadflow.bootstrap import Services
from leadflow.entrypoints.api import admin, contract, forms, personalize, tracking
from leadflow.entrypoints.api import email as email_api
from leadflow.entrypoints.api.inputs import InputRefused, guard_inputs, refusal_response
from leadflow.entrypoints.web import mount_web


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

    @app.exception_handler(InputRefused)
    async def refused(request: Request, exc: InputRefused) -> Response:
        route = request.scope.get("route")
        page = getattr(request.app.state, "input_error_page", None)
        if page is not None and route is not None and not route.include_in_schema:
            return page(request, exc)  # the dashboard's error page, same message
        public_form = request.url.path.startswith("/f/")
        return refusal_response(exc, forms.CORS if public_form else None)

    @app.get("/healthz", operation_id="health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
