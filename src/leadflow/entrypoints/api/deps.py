"""Request dependencies shared by the routers: services, authentication."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Depends, Request
from pydantic import AfterValidator, Field

from leadflow.bootstrap import Services
from leadflow.core.errors import Unauthorized


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
        raise Unauthorized(
            "missing admin token: send 'Authorization: Bearer <token>' "
            "(create one with `leadflow keys create --kind admin`)"
        )
    kind = services.keys.kind_of(token)
    if kind != "admin":
        raise Unauthorized(
            "invalid admin token" if kind is None else "a write key cannot use /api/"
        )


AdminDep = Depends(require_admin)


# Dates and date-times given to the API stay far from the calendar's ends: the services add
# durations to them (a seminar's end, a report's comparison period) and convert them to
# UTC, which overflowed (a 500) for 0001-01-01T00:00+05:00 or 9999-12-31.
EARLIEST_DAY, LATEST_DAY = date(1970, 1, 1), date(2999, 12, 31)
RANGE_TEXT = f"between {EARLIEST_DAY} and {LATEST_DAY}"


def _day_in_range(value: date) -> date:
    if not EARLIEST_DAY <= value <= LATEST_DAY:
        raise ValueError(f"must be {RANGE_TEXT}")
    return value


def _moment_in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC) if value.tzinfo is not None else value
    except OverflowError:
        raise ValueError(f"must be {RANGE_TEXT} (UTC)") from None
    _day_in_range(utc.date())
    return value


Day = Annotated[date, AfterValidator(_day_in_range), Field(description=f"A date {RANGE_TEXT}.")]
Moment = Annotated[
    datetime,
    AfterValidator(_moment_in_range),
    Field(description=f"An ISO 8601 date-time {RANGE_TEXT} (UTC)."),
]
