"""Web personalisation: ``GET /v1/personalize?anonymousId=…`` (or ``userId``).

Public, for a website's JavaScript: authenticated with the tracking write key like the
other /v1 calls (HTTP Basic username, or ``?writeKey=``). CORS: any origin may call it;
``OPTIONS`` answers the pre-flight a Basic-auth header causes.

Returns ``{stage, evaluation_stage, industry, recommendations: [{key, title, type, url,
gated}]}``: the content for the visitor's stage and industry they have not consumed yet
(an unknown visitor: early content; ``?industry=`` is a hint used when the lead's own
industry is not known). Nothing else about the person is returned.

The real server (``leadflow.entrypoints.asgi``) short-cuts only ``POST /v1/<tracking
call>``; a GET on /v1/personalize reaches this router unchanged.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from leadflow.bootstrap import Services
from leadflow.entrypoints.api.contract import TrackingError, error_responses
from leadflow.entrypoints.api.deps import basic_username
from leadflow.entrypoints.api.responses import Personalisation
from leadflow.entrypoints.api.tracking import _check_key
from leadflow.services import content

router = APIRouter(prefix="/v1", tags=["personalisation"])

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}
MAX_ID = 255


@router.options("/personalize", include_in_schema=False)
async def personalize_preflight() -> Response:
    return Response(status_code=204, headers=CORS)


_QUERY = [
    {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
    for name, schema, text in (
        ("anonymousId", {"type": "string", "maxLength": MAX_ID}, "analytics.js anonymous id."),
        ("userId", {"type": "string", "maxLength": MAX_ID}, "The visitor's user id."),
        ("industry", {"type": "string", "maxLength": MAX_ID}, "Industry hint."),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 20, "default": 5}, "1 to 20."),
        ("writeKey", {"type": "string"}, "The write key, when not sent as Basic auth."),
    )
]


@router.get(
    "/personalize",
    operation_id="personalize",
    response_model=Personalisation,
    responses={
        **error_responses(400),
        **error_responses(401, model=TrackingError),
    },
    openapi_extra={"parameters": _QUERY, "security": [{"writeKey": []}, {}]},
)
async def personalize(request: Request) -> Response:
    services: Services = request.app.state.services
    key = basic_username(request) or request.query_params.get("writeKey")
    refused = await _check_key(services, key)
    if refused is not None:
        refused.headers.update(CORS)
        return refused
    params = request.query_params
    ids: dict[str, str | None] = {}
    for name in ("anonymousId", "userId", "industry"):
        value = params.get(name)
        value = value.strip() if value else None
        if value and (len(value) > MAX_ID or "\x00" in value):
            return JSONResponse(
                {"detail": f"{name}: longer than {MAX_ID} characters or contains NUL"},
                status_code=400,
                headers=CORS,
            )
        ids[name] = value or None
    limit_text = params.get("limit", "5")
    whole = limit_text.isdigit() and limit_text.isascii() and len(limit_text) <= 2
    if not whole or not 1 <= int(limit_text) <= 20:
        return JSONResponse(
            {"detail": "limit: a whole number from 1 to 20"}, status_code=400, headers=CORS
        )

    def run() -> dict[str, Any]:
        with services.engine.begin() as conn:  # a fresh database installs the model
            model = services.models.active(conn, services.clock())
            return content.personalize(
                conn,
                model,
                anonymous_id=ids["anonymousId"],
                user_id=ids["userId"],
                industry_hint=ids["industry"],
                limit=int(limit_text),
            )

    body = await run_in_threadpool(run)
    return JSONResponse(body, headers={**CORS, "Cache-Control": "private, no-store"})
