"""Every JSON route declares its success body, and errors map to HTTP in one place.

Walks the app's routes (no database needed): a route under /api, /v1, /f, /e, /u or
/healthz that answers JSON must have a pydantic ``response_model`` (so the OpenAPI
document, and the schemathesis contract test, know the body). Routes that answer
something else are listed in ``NOT_JSON`` with the reason.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from leadflow.bootstrap import build_services
from leadflow.core import errors
from leadflow.entrypoints.api import build_app
from leadflow.entrypoints.api import errors as http_errors
from leadflow.services import content, nurture, seminars
from leadflow.services import segments as segment_service
from leadflow.services.lifecycle import ActionRefused
from leadflow.settings import Settings

NOT_JSON: dict[tuple[str, str], str] = {
    ("GET", "/f/{form_key}"): "the hosted form: an HTML page (or a redirect to the content)",
    ("GET", "/f/{form_key}/embed.js"): "the embed script: JavaScript",
    ("GET", "/e/o/{token}"): "the e-mail open pixel: a GIF",
    ("GET", "/e/c/{token}"): "the e-mail click: a redirect",
    ("GET", "/u/{token}"): "the unsubscribe page: HTML",
    ("POST", "/u/{token}"): "unsubscribe: plain text (one-click) or the HTML page",
    ("GET", "/api/crm/export"): "CSV",
    ("GET", "/api/segments/{key}/export.csv"): "CSV",
    ("GET", "/api/leads/export.csv"): "CSV",
    ("DELETE", "/api/webhooks/{endpoint_id}"): "204, no body",
    ("DELETE", "/api/content/{key}"): "204, no body",
    ("DELETE", "/api/segments/{key}"): "204, no body",
}
PUBLIC_PREFIXES = ("/api/", "/v1/", "/f/", "/e/", "/u/", "/healthz")


@pytest.fixture(scope="module")
def app() -> Iterator[FastAPI]:
    services = build_services(Settings(database_url="sqlite:///never-opened.db"))
    try:
        yield build_app(services)
    finally:
        services.close()


def _routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path
        if not isinstance(route, APIRoute) or not path.startswith(PUBLIC_PREFIXES):
            continue
        if not route.include_in_schema:  # CORS pre-flights
            continue
        for method in sorted(context.methods or ()):
            found.append((method, path, route))
    return found


def _is_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_is_model(arg) for arg in typing.get_args(annotation))


def test_every_json_route_has_a_response_model(app: FastAPI) -> None:
    routes = _routes(app)
    assert len(routes) > 70  # the walk sees the included routers
    missing = [
        f"{method} {path}"
        for method, path, route in routes
        if (method, path) not in NOT_JSON and not _is_model(route.response_model)
    ]
    assert missing == []


def test_the_exceptions_are_real_routes_without_a_model(app: FastAPI) -> None:
    by_key = {(method, path): route for method, path, route in _routes(app)}
    for key in NOT_JSON:
        assert key in by_key, f"{key} is listed but is not a route"
        assert not _is_model(by_key[key].response_model), f"{key} has a model: unlist it"


def test_routes_raise_no_http_exception_themselves() -> None:
    from pathlib import Path

    api = Path(__file__).resolve().parents[2] / "src" / "leadflow" / "entrypoints" / "api"
    raising = [
        f"{path.name}:{n}"
        for path in sorted(api.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "HTTPException(" in line
    ]
    assert raising == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.BadRequest("limit: too big", field="limit"), 400),
        (errors.Unauthorized("no token"), 401),
        (errors.Forbidden("no"), 403),
        (errors.NotFound("lead_id: no lead 3"), 404),
        (errors.Conflict("taken"), 409),
        (ActionRefused("not in the hand-off stage"), 409),
        (errors.InvalidInput("criteria.score: expected a number"), 422),
        (errors.UpstreamFailed("not delivered: refused"), 502),
        (errors.Unavailable("database down"), 503),
        (content.AssetNotFound("no asset"), 404),
        (content.ConfigManaged("declared in leadflow.yaml"), 409),
        (nurture.EnrolNotFound("lead 3 not found"), 404),
        (nurture.EnrolRefused("lead 3 was erased"), 409),
        (seminars.CapacityFull("registered", "the seminar is full"), 409),
        (seminars.SeminarError("starts_at", "in the past"), 422),
        (segment_service.NotFound("no segment 'x'"), 404),
    ],
)
def test_one_table_maps_every_error_kind_to_a_status(error: Exception, status: int) -> None:
    assert http_errors.status_of(error) == status
    assert http_errors.error_response(error).status_code == status


def test_error_bodies_name_the_field_when_there_is_one() -> None:
    assert http_errors.error_body(errors.BadRequest("limit: too big", field="limit")) == {
        "detail": "limit: too big",
        "field": "limit",
    }
    assert http_errors.error_body(segment_service.NotFound("no segment 'x'")) == {
        "detail": "no segment 'x'"
    }
    assert seminars.SeminarError("starts_at", "in the past").field == "starts_at"


def test_a_bug_is_not_an_application_error() -> None:
    assert http_errors.status_of(KeyError("x")) is None
    assert http_errors.status_of(ValueError("x")) is None


def test_builtin_errors_become_application_errors() -> None:
    with pytest.raises(errors.NotFound) as found, http_errors.builtin_errors():
        raise LookupError("no lead with id 3")
    assert found.value.detail == "no lead with id 3"
    with pytest.raises(errors.InvalidInput), http_errors.builtin_errors():
        raise ValueError("amount: must be positive")
    # listed kinds pass unchanged
    with pytest.raises(ActionRefused), http_errors.builtin_errors():
        raise ActionRefused("refused")


def test_a_401_names_the_scheme() -> None:
    response = http_errors.error_response(errors.Unauthorized("missing admin token"))
    assert response.headers["www-authenticate"] == "Bearer"
