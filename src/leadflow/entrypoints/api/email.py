"""Email routes.

Public (no authentication, links in the emails themselves; the signed token is the only
credential): ``GET /e/o/{token}`` open pixel, ``GET /e/c/{token}`` click redirect (to the
signed destination only: a tampered, foreign or unsigned token is 400, never a redirect),
``GET /u/{token}`` an unsubscribe page and ``POST /u/{token}`` the unsubscribe itself
(RFC 8058 one-click from a mail client, or the page's button). Tracking never breaks the
reader's click: if recording fails, the redirect still happens.

Admin (``/api/email/...``, admin token): the send log, a bounce feed from the mail
provider, and a test message.
"""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from leadflow.adapters.email import DeliveryError
from leadflow.core import email_tokens
from leadflow.core.errors import NotFound, UpstreamFailed
from leadflow.entrypoints.api.contract import error_responses, json_content
from leadflow.entrypoints.api.deps import ServicesDep
from leadflow.entrypoints.api.errors import builtin_errors
from leadflow.entrypoints.api.responses import BounceResult, EmailSend, EmailSends, TestEmailResult
from leadflow.services import mailing

log = logging.getLogger(__name__)

public_router = APIRouter(tags=["email tracking"], include_in_schema=True)
router = APIRouter(prefix="/email", tags=["email"])

# A 1x1 transparent GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0"}
PAGE_HEADERS = {
    **NO_STORE,
    "X-Robots-Tag": "noindex",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}
INVALID_LINK = "invalid or damaged link"

Token = Annotated[str, Path(min_length=1, max_length=email_tokens.MAX_TOKEN_CHARS)]


def _verified(services: Any, token: str, kind: email_tokens.Kind) -> email_tokens.EmailToken:
    """The token's content if any signing key valid now (the current one, or the previous
    one during a rotation window) made it; :class:`email_tokens.InvalidToken` otherwise."""

    def check(key: bytes) -> email_tokens.EmailToken | None:
        try:
            return email_tokens.verify(key, token, kind)
        except email_tokens.InvalidToken:
            return None

    found = services.signing.verify(check, services.clock())
    if found is None:
        raise email_tokens.InvalidToken("no signing key verifies this token")
    return found


def _plain_400() -> PlainTextResponse:
    return PlainTextResponse(INVALID_LINK, status_code=400, headers=NO_STORE)


_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_BAD_LINK = {"description": "A tampered, foreign or unsigned link."}
_ONE_CLICK = {"type": "object", "properties": {"List-Unsubscribe": {"type": "string"}}}


@public_router.get(
    "/e/o/{token}",
    operation_id="email_open_pixel",
    response_class=Response,
    responses={
        200: {"content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}}},
        400: {**_BAD_LINK, "content": _TEXT},
    },
)
def open_pixel(token: Token, services: ServicesDep) -> Response:
    try:
        parsed = _verified(services, token, "o")
    except email_tokens.InvalidToken:
        return _plain_400()
    try:
        mailing.record_open(services, parsed.send_id, services.clock())
    except Exception:  # the image must load anyway
        log.exception("recording an email open failed")
    return Response(content=PIXEL, media_type="image/gif", headers=NO_STORE)


@public_router.get(
    "/e/c/{token}",
    operation_id="email_click",
    response_class=Response,
    responses={
        302: {"description": "To the signed destination."},
        400: {**_BAD_LINK, "content": _TEXT},
    },
)
def click(token: Token, services: ServicesDep) -> Response:
    try:
        parsed = _verified(services, token, "c")
    except email_tokens.InvalidToken:
        return _plain_400()
    assert parsed.url is not None  # verify() guarantees a safe absolute http(s) URL
    try:
        mailing.record_click(services, parsed.send_id, parsed.url, services.clock())
    except Exception:  # the reader still gets where they clicked
        log.exception("recording an email click failed")
    return RedirectResponse(
        parsed.url, status_code=302, headers={**NO_STORE, "Referrer-Policy": "no-referrer"}
    )


def _page(
    services: Any, state: str, *, email: str | None = None, action: str = "", status: int = 200
) -> HTMLResponse:
    html = (
        mailing.template_env()
        .get_template("page_unsubscribe.html")
        .render(
            state=state,
            email=email,
            action=action,
            brand=mailing.brand_name(services.settings),
        )
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


@public_router.get(
    "/u/{token}",
    operation_id="email_unsubscribe_page",
    response_class=HTMLResponse,
    responses={400: {**_BAD_LINK, "content": _HTML}},
)
def unsubscribe_page(token: Token, services: ServicesDep) -> HTMLResponse:
    """Asks for confirmation (a GET must not unsubscribe: link scanners follow links)."""
    try:
        parsed = _verified(services, token, "u")
    except email_tokens.InvalidToken:
        return _page(services, "invalid", status=400)
    with services.engine.connect() as conn:
        address = mailing.send_address(conn, parsed.send_id)
    return _page(services, "confirm", email=address, action=f"/u/{token}")


@public_router.post(
    "/u/{token}",
    operation_id="email_unsubscribe",
    response_class=Response,
    responses={
        200: {"description": "Unsubscribed.", "content": {**_TEXT, **_HTML}},
        400: {
            "description": "A tampered, foreign or unsigned link (text or page); a body that "
            "is not form data (JSON).",
            "content": {**_TEXT, **_HTML, **json_content("ErrorBody")},
        },
    },
    openapi_extra={
        "requestBody": {
            "required": False,
            "description": "`List-Unsubscribe=One-Click` (RFC 8058, either encoding) answers "
            "in plain text; otherwise the confirmation page.",
            "content": {
                media: {"schema": _ONE_CLICK}
                for media in ("application/x-www-form-urlencoded", "multipart/form-data")
            },
        }
    },
)
async def unsubscribe(token: Token, request: Request) -> Response:
    services = request.app.state.services
    form = await request.form()
    one_click = form.get("List-Unsubscribe") == "One-Click"
    try:
        parsed = _verified(services, token, "u")
    except email_tokens.InvalidToken:
        return _plain_400() if one_click else _page(services, "invalid", status=400)
    address = mailing.unsubscribe(
        services,
        parsed.send_id,
        services.clock(),
        method="one_click" if one_click else "page",
    )
    if one_click:
        return PlainTextResponse("unsubscribed", headers=NO_STORE)
    return _page(services, "done", email=address)


# --- admin ------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BounceIn(_Body):
    message_id: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    email: EmailStr | None = None
    type: Literal["hard", "soft"]
    reason: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="after")
    def _exactly_one(self) -> BounceIn:
        if (self.message_id is None) == (self.email is None):
            raise ValueError("give exactly one of message_id and email")
        return self


class TestIn(_Body):
    to: EmailStr
    template: Annotated[str, Field(min_length=1, max_length=64)] = "nurture"


@router.get("/sends", operation_id="list_email_sends", response_model=EmailSends)
def list_sends(
    services: ServicesDep,
    lead_id: int | None = Query(default=None, ge=1, le=2**62),
    status: Literal["planned", "sending", "sent", "failed", "skipped"] | None = Query(default=None),
    program: str | None = Query(default=None, min_length=1, max_length=64),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        rows = mailing.list_sends(
            conn, lead_id=lead_id, status=status, program=program, limit=limit
        )
    return {"sends": rows}


@router.get(
    "/sends/{send_id}",
    operation_id="get_email_send",
    responses=error_responses(404),
    response_model=EmailSend,
)
def get_send(services: ServicesDep, send_id: int = Path(..., ge=1, le=2**62)) -> dict[str, Any]:
    with services.engine.connect() as conn:
        found = mailing.get_send(conn, send_id)
    if found is None:
        raise NotFound(f"no email send {send_id}")
    return found


@router.post(
    "/bounces",
    operation_id="record_email_bounce",
    responses=error_responses(404),
    response_model=BounceResult,
)
def record_bounce(body: BounceIn, services: ServicesDep) -> dict[str, Any]:
    with builtin_errors():
        return mailing.record_bounce(
            services,
            bounce_type=body.type,
            now=services.clock(),
            message_id=body.message_id,
            email=str(body.email) if body.email is not None else None,
            reason=body.reason,
        )


@router.post(
    "/test",
    operation_id="send_test_email",
    responses=error_responses(409, 502),
    response_model=TestEmailResult,
)
def send_test(body: TestIn, services: ServicesDep) -> dict[str, Any]:
    try:
        with builtin_errors():  # a template the service does not know: ValueError, 422
            message_id = mailing.send_test(
                services.settings,
                str(body.to),
                body.template,
                services.clock(),
                engine=services.engine,
            )
    except DeliveryError as exc:
        raise UpstreamFailed(f"not delivered: {exc}") from exc
    return {"to": str(body.to), "template": body.template, "message_id": message_id}
