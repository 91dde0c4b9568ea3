"""The one place errors become HTTP responses.

Routes raise the application's errors (:mod:`leadflow.core.errors`, or a domain exception
that subclasses one) and never build an error response themselves; :func:`install`
registers the handlers once on the app. The body is the contract's ``ErrorBody``:
``{"detail": "<field>: <reason>"}``, with ``"field"`` when the error names one.

``STATUS`` is the whole mapping: an error's status is that of the first class of its MRO
listed here. Two domain exceptions live in modules other work is reshaping and are listed
by name instead of being given a base class: ``ActionRefused`` (a sales action the stage
machine refuses, a ``ValueError``) is a conflict.

Services that still signal with the built-in ``LookupError`` / ``ValueError`` (the
hand-off and CRM services) are wrapped by :func:`builtin_errors`, which re-raises them as
:class:`~leadflow.core.errors.NotFound` / :class:`~leadflow.core.errors.InvalidInput`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from leadflow.core import errors
from leadflow.entrypoints.api.inputs import InputRefused, refusal_response
from leadflow.services.lifecycle import ActionRefused

STATUS: dict[type[Exception], int] = {
    errors.BadRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    ActionRefused: 409,
    errors.InvalidInput: 422,
    errors.UpstreamFailed: 502,
    errors.Unavailable: 503,
    errors.LeadflowError: 400,
}
# What a 401 asks for (RFC 9110: a 401 names the scheme to use).
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an application error, or None for anything else (a bug: 500)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return None


def error_body(exc: BaseException) -> dict[str, Any]:
    """``{"detail", "field"?}`` of an application error."""
    if isinstance(exc, errors.LeadflowError):
        detail: Any = exc.issues if isinstance(exc, errors.InvalidInput) and exc.issues else None
        body: dict[str, Any] = {"detail": detail if detail is not None else exc.detail}
        if exc.field is not None:
            body["field"] = exc.field
        return body
    return {"detail": str(exc.args[0]) if len(exc.args) == 1 else str(exc)}


def error_response(exc: BaseException, headers: dict[str, str] | None = None) -> JSONResponse:
    status = status_of(exc)
    if status is None:
        raise TypeError(f"{type(exc).__name__} is not an application error")
    if status == 401:
        headers = {**_CHALLENGE, **(headers or {})}
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


@contextmanager
def builtin_errors() -> Iterator[None]:
    """Re-raise a service's built-in ``LookupError`` as NotFound and ``ValueError`` as
    InvalidInput; application errors (and listed domain exceptions) pass unchanged."""
    try:
        yield
    except Exception as exc:
        if status_of(exc) is not None:
            raise
        if isinstance(exc, LookupError):
            raise errors.NotFound(str(exc).strip("'\"")) from exc
        if isinstance(exc, ValueError):
            raise errors.InvalidInput(str(exc)) from exc
        raise


def install(app: FastAPI, *, cors_for: Any = None) -> None:
    """Register the handlers: application errors, and the input door's refusals."""

    async def application_error(request: Request, exc: Exception) -> Response:
        return error_response(exc, cors_for(request) if cors_for is not None else None)

    for cls in STATUS:
        app.add_exception_handler(cls, application_error)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InputRefused)
        route = request.scope.get("route")
        page = getattr(request.app.state, "input_error_page", None)
        if page is not None and route is not None and not route.include_in_schema:
            return page(request, exc)  # the dashboard's error page, same message
        return refusal_response(exc, cors_for(request) if cors_for is not None else None)

    app.add_exception_handler(InputRefused, refused)
