"""The HTTP door of the management API, the dashboard and the public pages.

One app-wide dependency checks every request before its route runs (and before FastAPI's
own validation, whose 422 answer could not even encode a lone surrogate): path and query
parameters, JSON bodies and form fields, against :mod:`leadflow.core.inputs`:

- text PostgreSQL cannot store (NUL, lone surrogates), anywhere, keys included;
- integers beyond 64 bits and non-finite numbers in JSON, and in integer parameters;
- dates: date and date-time parameters (and date fields of a JSON body) given as ISO 8601
  need a year from 1900 to 2999; numbers (Unix time) are refused; other text is left to
  FastAPI's validation (422);
- JSON nested more than 32 levels.

A refusal is ``400`` naming the field: ``{"detail": "name: contains a NUL character",
"field": "name"}`` (the dashboard shows its error page with the same message). The
tracking API (``/v1``) checks its own messages in :mod:`leadflow.core.tracking`.
"""

from __future__ import annotations

import datetime as dt
import json
import types
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from leadflow.core.inputs import (
    MAX_JSON_DEPTH,
    InputError,
    check_json,
    declared_length_over,
    int_problem,
    iso_date_problem,
    text_problem,
)

MAX_CHECKED_BODY = 10 * 1024 * 1024
"""Bodies larger than this are refused (413) before they are decoded."""

_JSON_TYPES = ("application/json",)
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class InputRefused(Exception):
    """A request parameter or body field is refused (400, or 413 for ``body`` size)."""

    def __init__(self, field: str, reason: str, status: int = 400) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


def refusal_response(exc: InputRefused, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"detail": str(exc), "field": exc.field}, status_code=exc.status, headers=headers
    )


async def guard_inputs(request: Request) -> None:
    """App-wide dependency: raise :class:`InputRefused` for the first bad value."""
    if request.method == "POST" and request.url.path.startswith("/v1/"):
        return  # the tracking calls validate their messages themselves (core.tracking)
    kinds, body_dates = _kinds(request.scope.get("route"))
    for name, value in request.path_params.items():
        _check_param(name, value, kinds.get(name))
    for name, value in request.query_params.multi_items():
        if (problem := text_problem(name)) is not None:
            raise InputRefused("query", f"a parameter name {problem}")
        _check_param(name, value, kinds.get(name))
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in _JSON_TYPES or media.endswith("+json"):
        await _check_json_body(request, body_dates)
    elif media in _FORM_TYPES:
        await _check_form_body(request, media)


def _check_param(name: str, value: str, kind: str | None) -> None:
    if (problem := text_problem(value)) is not None:
        raise InputRefused(name, problem)
    if kind == "int":
        text = value.strip()
        digits = text.lstrip("+-")
        if digits.isdigit() and digits.isascii():
            # Longer than any 64-bit integer: no need to convert (or to hit int() limits).
            problem = int_problem(int(text) if len(digits) <= 20 else 2**64)
            if problem is not None:
                raise InputRefused(name, problem)
    elif kind == "date" and value.strip() and (problem := iso_date_problem(value)) is not None:
        raise InputRefused(name, problem)


async def _body(request: Request) -> bytes:
    if declared_length_over(request.headers.get("content-length"), MAX_CHECKED_BODY):
        raise InputRefused("body", f"larger than {MAX_CHECKED_BODY // (1024 * 1024)} MB", 413)
    return await request.body()


async def _check_json_body(request: Request, body_dates: frozenset[str]) -> None:
    raw = await _body(request)
    if not raw.strip():
        return
    try:
        data = json.loads(raw)
    except RecursionError:
        raise InputRefused("body", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        return  # malformed JSON: the route answers it (400/422) as it always did
    try:
        check_json(data)
    except InputError as exc:
        raise InputRefused(exc.field, exc.reason) from None
    if isinstance(data, dict):
        for name in body_dates & data.keys():
            value = data[name]
            if isinstance(value, str) and (problem := iso_date_problem(value)) is not None:
                raise InputRefused(name, problem)
            if isinstance(value, int | float) and not isinstance(value, bool):
                raise InputRefused(name, "expected an ISO 8601 date (YYYY-MM-DD), not a number")


async def _check_form_body(request: Request, media: str) -> None:
    # Read through body(), which keeps the bytes: a route that reads the body itself
    # (request.stream(), request.form()) still gets it. Unless FastAPI already parsed the
    # form for the route's Form parameters: the stream is gone, the parsed form is kept.
    raw = await _body(request) if request._form is None else b""
    if request._form is not None or media == "multipart/form-data":
        form = await request.form()
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]  # files aside
    else:
        pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    for name, value in pairs:
        if (problem := text_problem(name)) is not None:
            raise InputRefused("body", f"a field name {problem}")
        if (problem := text_problem(value)) is not None:
            raise InputRefused(name, problem)


_KINDS_ATTR = "_leadflow_input_kinds"


def _kinds(route: Any) -> tuple[dict[str, str], frozenset[str]]:
    """The route's integer and date parameters (by name), and the date fields of its JSON
    body model; worked out once per route (kept on the route object)."""
    if route is None or not hasattr(route, "dependant"):
        return {}, frozenset()
    found: tuple[dict[str, str], frozenset[str]] | None = getattr(route, _KINDS_ATTR, None)
    if found is None:
        params: dict[str, str] = {}
        scalars, bodies = _fields(route.dependant)
        for field in scalars:
            kind = _kind(field.field_info.annotation)
            if kind is not None:
                params[field.alias] = kind
        dates: set[str] = set()
        for field in bodies:
            model = _model(field.field_info.annotation)
            if model is not None:
                for name, info in model.model_fields.items():
                    if _kind(info.annotation) == "date":
                        dates.add(info.alias or name)
        found = (params, frozenset(dates))
        setattr(route, _KINDS_ATTR, found)
    return found


def _fields(dependant: Any) -> tuple[list[Any], list[Any]]:
    """Path and query fields, and body fields, of a dependant and its dependencies."""
    scalars = [*dependant.path_params, *dependant.query_params]
    bodies = list(dependant.body_params)
    for sub in dependant.dependencies:
        more, more_bodies = _fields(sub)
        scalars += more
        bodies += more_bodies
    return scalars, bodies


def _unwrap(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _kind(annotation: Any) -> str | None:
    for option in _unwrap(annotation):
        if option is int:
            return "int"
        if option in (dt.date, dt.datetime):
            return "date"
    return None


def _model(annotation: Any) -> type[BaseModel] | None:
    for option in _unwrap(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None
