"""Administration pages: users and API keys (admin role only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.errors import NotFoundPage
from leadflow.entrypoints.web.rendering import render
from leadflow.entrypoints.web.state import services_of
from leadflow.services import keys as key_service
from leadflow.services import users as user_service

router = APIRouter(prefix="/settings", include_in_schema=False)

KeysAdmin = Annotated[auth.WebUser, auth.require("keys.manage")]
UsersAdmin = Annotated[auth.WebUser, auth.require("users.manage")]


def _keys_page(
    request: Request,
    *,
    created: key_service.CreatedKey | None = None,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    rows = key_service.list_keys(services_of(request).engine)
    rows.reverse()
    return render(
        request,
        "keys.html",
        {"keys": rows, "created": created, "error": error},
        status_code=status,
        active="keys",
    )


@router.get("/keys")
def keys_page(request: Request, user: KeysAdmin) -> HTMLResponse:
    return _keys_page(request)


@router.post("/keys", dependencies=[auth.CsrfProtected])
def create_key(
    request: Request,
    user: KeysAdmin,
    name: str = Form("", max_length=400),
    kind: str = Form("write", max_length=20),
) -> HTMLResponse:
    services = services_of(request)
    try:
        created = key_service.create_key(
            services.engine, kind=kind, name=name, now=services.clock()
        )
    except ValueError as exc:
        return _keys_page(request, error=str(exc), status=400)
    return _keys_page(request, created=created)


@router.post("/keys/{key_id}/revoke", dependencies=[auth.CsrfProtected])
def revoke_key(request: Request, user: KeysAdmin, key_id: int) -> RedirectResponse:
    services = services_of(request)
    key_service.revoke_key(services.engine, key_id, services.clock())
    return RedirectResponse("/settings/keys", status_code=303)


def _users_page(
    request: Request,
    *,
    error: str = "",
    notice: str = "",
    status: int = 200,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    rows = user_service.list_users(services_of(request).engine)
    return render(
        request,
        "users.html",
        {
            "users": rows,
            "roles": user_service.ROLES,
            "error": error,
            "notice": notice,
            "form": form or {},
        },
        status_code=status,
        active="users",
    )


@router.get("/users")
def users_page(request: Request, user: UsersAdmin) -> HTMLResponse:
    return _users_page(request)


@router.post("/users", dependencies=[auth.CsrfProtected])
async def create_user(
    request: Request,
    user: UsersAdmin,
    email: str = Form("", max_length=400),
    name: str = Form("", max_length=400),
    role: str = Form("marketer", max_length=20),
    locale: str = Form("en", max_length=8),
    password: str = Form("", max_length=2000),
    sales_rep_key: str = Form("", max_length=400),
) -> HTMLResponse:
    services = services_of(request)
    form = {
        "email": email,
        "name": name,
        "role": role,
        "locale": locale,
        "sales_rep_key": sales_rep_key,
    }
    try:
        created = await run_in_threadpool(
            lambda: user_service.create_user(
                services.engine,
                email=email,
                password=password,
                role=role,
                name=name or None,
                locale=locale,
                sales_rep_key=sales_rep_key or None,
                now=services.clock(),
            )
        )
    except user_service.UserError as exc:
        return _users_page(request, error=str(exc), status=400, form=form)
    return _users_page(request, notice=created.email)


@router.post("/users/{user_id}/active", dependencies=[auth.CsrfProtected])
def set_active(
    request: Request, user: UsersAdmin, user_id: int, active: str = Form(..., max_length=5)
) -> Response:
    if user_id == user.user.id:
        raise auth.Forbidden  # an admin cannot lock themselves out
    if not user_service.set_active(services_of(request).engine, user_id, active == "true"):
        raise NotFoundPage
    return RedirectResponse("/settings/users", status_code=303)
