"""Sign-in, sign-out and the language switch."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from leadflow.core.ratelimit import FailureLimiter
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.i18n import LOCALES
from leadflow.entrypoints.web.rendering import render
from leadflow.entrypoints.web.state import services_of
from leadflow.services import users as user_service

router = APIRouter(include_in_schema=False)

# Failed sign-ins: 5 per address and 30 per client address in 15 minutes, then wait.
LOGIN_WINDOW = 15 * 60.0


@dataclass
class LoginLimits:
    by_email: FailureLimiter = field(default_factory=lambda: FailureLimiter(5, LOGIN_WINDOW))
    by_client: FailureLimiter = field(default_factory=lambda: FailureLimiter(30, LOGIN_WINDOW))


def _limits(request: Request) -> LoginLimits:
    limits: LoginLimits = request.app.state.login_limits
    return limits


@router.get("/")
def root(request: Request) -> RedirectResponse:
    target = "/home" if auth.optional_user(request) is not None else "/login"
    return RedirectResponse(target, status_code=303)


def _login_page(
    request: Request,
    *,
    next_url: str,
    error: str = "",
    email: str = "",
    status: int = 200,
    wait_minutes: int = 0,
) -> HTMLResponse:
    services = services_of(request)
    token = auth.login_csrf_token(request, services)
    response = render(
        request,
        "login.html",
        {
            "next_url": next_url,
            "error": error,
            "email": email,
            "login_csrf": token,
            "wait_minutes": wait_minutes,
        },
        status_code=status,
    )
    if wait_minutes:
        response.headers["Retry-After"] = str(wait_minutes * 60)
    auth.set_login_csrf_cookie(request, response, services, token)
    return response


@router.get("/login")
def login_form(request: Request, next: str = "", lang: str = "") -> Response:
    if auth.optional_user(request) is not None:
        return RedirectResponse(auth.safe_next(next), status_code=303)
    if lang in LOCALES:
        # Switch the sign-in page's language (a cookie; the user's own choice wins later).
        target = "/login" + (f"?next={quote(auth.safe_next(next), safe='/')}" if next else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            auth.LOCALE_COOKIE, lang, max_age=365 * 86400, samesite="lax", httponly=True
        )
        return response
    return _login_page(request, next_url=auth.safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    email: str = Form("", max_length=320),
    password: str = Form("", max_length=user_service.MAX_PASSWORD),
    csrf_token: str = Form("", max_length=200),
    next: str = Form("", max_length=2000),
) -> Response:
    services = services_of(request)
    next_url = auth.safe_next(next)
    if not auth.login_csrf_ok(request, services, csrf_token):
        return _login_page(
            request, next_url=next_url, error="login.expired", email=email, status=403
        )
    limits = _limits(request)
    now = services.clock().timestamp()
    email_key = email.strip().lower()
    client_key = request.client.host if request.client else "unknown"
    wait = max(
        limits.by_email.retry_after(email_key, now), limits.by_client.retry_after(client_key, now)
    )
    if wait > 0:
        return _login_page(
            request,
            next_url=next_url,
            error="login.throttled",
            email=email,
            status=429,
            wait_minutes=max(1, math.ceil(wait / 60)),
        )
    user = await run_in_threadpool(
        user_service.authenticate, services.engine, email, password, services.clock()
    )
    if user is None:
        limits.by_email.failed(email_key, now)
        limits.by_client.failed(client_key, now)
        return _login_page(
            request, next_url=next_url, error="login.failed", email=email, status=401
        )
    limits.by_email.succeeded(email_key)
    response = RedirectResponse(next_url, status_code=303)
    await run_in_threadpool(auth.start_session, services, request, response, user, services.clock())
    return response


@router.post("/logout", dependencies=[auth.CsrfProtected])
def logout(request: Request) -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    auth.end_session(services_of(request), request, response)
    return response


@router.post("/locale", dependencies=[auth.CsrfProtected])
def switch_locale(
    request: Request,
    user: auth.CurrentUser,
    locale: str = Form(..., max_length=8),
    next: str = Form("", max_length=2000),
) -> RedirectResponse:
    if locale in LOCALES:
        user_service.set_locale(services_of(request).engine, user.user.id, locale)
    return RedirectResponse(auth.safe_next(next), status_code=303)


@router.post("/timezone", dependencies=[auth.CsrfProtected])
def switch_timezone(
    request: Request,
    user: auth.CurrentUser,
    timezone: str = Form(..., max_length=64),
    next: str = Form("", max_length=2000),
) -> Response:
    try:
        user_service.set_timezone(
            services_of(request).engine, user.user.id, None if timezone == "UTC" else timezone
        )
    except user_service.UserError as exc:
        return HTMLResponse(html.escape(str(exc)), status_code=400)
    return RedirectResponse(auth.safe_next(next), status_code=303)
