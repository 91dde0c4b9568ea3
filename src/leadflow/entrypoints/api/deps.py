"""Request dependencies shared by the routers: services, authentication."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from leadflow.bootstrap import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def basic_username(request: Request) -> str | None:
    """The user part of an HTTP Basic Authorization header (Segment's write key)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return basic_username(request)


def require_admin(request: Request, services: ServicesDep) -> None:
    """Management API: a live admin token as ``Authorization: Bearer <token>``."""
    token = bearer_token(request)
    if token is None:
        raise HTTPException(
            status_code=401,
            detail="missing admin token: send 'Authorization: Bearer <token>' "
            "(create one with `leadflow keys create --kind admin`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    kind = services.keys.kind_of(token)
    if kind != "admin":
        raise HTTPException(
            status_code=401,
            detail="invalid admin token" if kind is None else "a write key cannot use /api/",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminDep = Depends(require_admin)
