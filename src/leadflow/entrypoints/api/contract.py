"""The OpenAPI contract: the error bodies, the Segment message schemas, the security schemes.

Every route declares the error statuses it can send with :func:`error_responses`, and the
body of each is what is actually sent:

- :class:`ErrorBody` for the management API (/api), the forms and e-mail pages and
  /v1/personalize: ``{"detail": "<field>: <reason>"}`` (an application error mapped by
  :mod:`leadflow.entrypoints.api.errors`), or
  FastAPI's request validation list ``{"detail": [{"loc": [...], "msg", "type"}]}`` for a
  parameter or body of the wrong type; some routes add ``field`` (the field named) or
  ``errors`` (the forms: the reason per field).
- :class:`TrackingError` for the Segment tracking calls (/v1/identify ... /v1/batch) and
  the 401 of /v1/personalize: ``{"success": false, "code", "message", "field"}``, the shape
  Segment's SDKs read.

The tracking routes read and size-check the raw body themselves (gzip, 32 KB per message,
500 KB per batch) before any parsing, so their request bodies are declared here as JSON
Schema (``openapi_extra``) rather than as pydantic models: the document says what
:mod:`leadflow.core.tracking` accepts without changing how the body is read.

:func:`install` finishes the generated document: FastAPI's default 422 body
(``HTTPValidationError``, a list only) is replaced by :class:`ErrorBody` (an explicit 422
from a route carries a string), every operation lists the 400 of the input door
(:mod:`leadflow.entrypoints.api.inputs`) and of a body FastAPI cannot decode, and the
admin token / write key security schemes are declared on the operations that need them.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from leadflow.core.tracking import MAX_ID_LENGTH, MAX_NAME_LENGTH, MESSAGE_TYPES


class ValidationIssue(BaseModel):
    """One problem FastAPI found in a parameter or body (``loc`` is the field's path)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The error body of every route except the Segment tracking calls."""

    detail: str | list[ValidationIssue] = Field(
        description="`<field>: <reason>`, or FastAPI's list of validation issues."
    )
    field: str | None = Field(default=None, description="The field at fault, when one is.")
    errors: dict[str, str] | None = Field(
        default=None, description="Forms: the reason for each refused field."
    )


class TrackingError(BaseModel):
    """The error body of the Segment tracking calls (what Segment's SDKs read)."""

    success: Literal[False]
    code: str = Field(description="`invalid_request` or `unauthorized`.")
    message: str = Field(description="`<field>: <reason>`.")
    field: str | None = Field(default=None, description="The field at fault, when one is.")


class TrackingOk(BaseModel):
    success: Literal[True]


DESCRIPTIONS = {
    400: "Bad request: a value is refused (the body names the field).",
    401: "Missing or invalid credentials.",
    403: "Forbidden.",
    404: "Not found (the body names what).",
    409: "Conflict: the current state refuses the change (the body says why).",
    413: "Request body too large.",
    415: "Unsupported Content-Type.",
    422: "Invalid input (the body names the field).",
    502: "An upstream service (the mail server) refused or failed.",
}


def error_responses(*codes: int, model: type[BaseModel] = ErrorBody) -> dict[int | str, Any]:
    """``responses=`` for a route or router: each status with the error body sent."""
    # JSON whatever the route's own response class is (an HTML page's 404 is JSON too).
    return {
        code: {"description": DESCRIPTIONS[code], "content": json_content(model.__name__)}
        for code in codes
    }


CSV_RESPONSE: dict[int | str, Any] = {
    200: {"description": "CSV.", "content": {"text/csv": {"schema": {"type": "string"}}}}
}


def json_content(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


# Models of bodies a route reads itself (its own validation, its own error messages):
# declared in the document by :func:`declared_body`, added to the components by install().
_BODY_MODELS: dict[str, type[BaseModel]] = {}


def declared_body(*models: type[BaseModel], description: str) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body that is any of ``models``."""
    for model in models:
        _BODY_MODELS[model.__name__] = model
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


# --------------------------------------------------------------------------- messages
# Segment's message spec, as leadflow.core.tracking validates it. Unknown keys are kept
# (Segment's libraries send more than leadflow reads).

_ID = {
    "anyOf": [
        {"type": "string", "maxLength": MAX_ID_LENGTH, "pattern": "^[^\\x00]*$"},
        {"type": "integer"},
    ]
}
_TIME = {"type": "string", "format": "date-time"}
_OBJECT = {"type": "object", "additionalProperties": True}
_NAME = {"type": "string", "maxLength": MAX_NAME_LENGTH, "pattern": "^[^\\x00]*$"}
_COMMON: dict[str, Any] = {
    "userId": _ID,
    "anonymousId": _ID,
    "messageId": _ID,
    "timestamp": _TIME,
    "sentAt": _TIME,
    "context": _OBJECT,
    "integrations": _OBJECT,
    "writeKey": {
        "type": "string",
        "description": "The write key, when it is not sent as HTTP Basic auth.",
    },
}
_WHO = [{"required": ["userId"]}, {"required": ["anonymousId"]}]
_TRAITS = {
    "type": "object",
    "additionalProperties": True,
    "properties": {"email": {"type": ["string", "null"], "format": "email"}},
}


def _message(kind: str, extra: dict[str, Any], required: list[str], who: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": True,
        "properties": {"type": {"type": "string", "enum": [kind]}, **_COMMON, **extra},
        "required": required,
        "description": f"A Segment `{kind}` call.",
    }
    if who:
        schema["anyOf"] = _WHO
    return schema


MESSAGE_SCHEMAS: dict[str, dict[str, Any]] = {
    "IdentifyMessage": _message("identify", {"traits": _TRAITS}, [], who=True),
    "TrackMessage": _message(
        "track",
        {
            "event": {**_NAME, "minLength": 1, "pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$"},
            "properties": _OBJECT,
        },
        ["event"],
        who=True,
    ),
    "PageMessage": _message("page", {"name": _NAME, "properties": _OBJECT}, [], who=True),
    "ScreenMessage": _message("screen", {"name": _NAME, "properties": _OBJECT}, [], who=True),
    "GroupMessage": _message("group", {"groupId": _ID, "traits": _OBJECT}, ["groupId"], who=True),
    "AliasMessage": _message("alias", {"previousId": _ID}, ["userId", "previousId"], who=False),
}
MESSAGE_SCHEMAS["BatchRequest"] = {
    "type": "object",
    "additionalProperties": True,
    "required": ["batch"],
    "properties": {
        "batch": {
            "type": "array",
            "description": "Messages, each with its `type`; one bad message refuses the batch.",
            "items": {
                "anyOf": [
                    {
                        "allOf": [
                            {"$ref": f"#/components/schemas/{kind.capitalize()}Message"},
                            {"required": ["type"]},
                        ]
                    }
                    for kind in MESSAGE_TYPES
                ]
            },
        },
        "sentAt": _TIME,
        "context": {**_OBJECT, "description": "Merged under each message's own context."},
        "writeKey": _COMMON["writeKey"],
    },
}


def tracking_operation(schema_name: str, limit: str) -> dict[str, Any]:
    """``openapi_extra`` of a tracking route: its body and its responses."""
    return {
        "requestBody": {
            "required": True,
            "description": f"JSON ({limit}; `Content-Encoding: gzip` is accepted, the limit "
            "applies to the inflated body); the write key may be in the body as `writeKey`.",
            "content": json_content(schema_name),
        },
        "responses": {
            "200": {"description": "Stored.", "content": json_content("TrackingOk")},
            "400": {
                "description": "The request or a message is refused (nothing is stored).",
                "content": json_content("TrackingError"),
            },
            "401": {"description": DESCRIPTIONS[401], "content": json_content("TrackingError")},
        },
        "security": [{"writeKey": []}],
    }


# --------------------------------------------------------------------------- install

SECURITY_SCHEMES = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An admin token: `leadflow keys create --kind admin`.",
    },
    "writeKey": {
        "type": "http",
        "scheme": "basic",
        "description": "A write key as the Basic auth username (empty password).",
    },
}


def _replace_refs(node: Any, old: str, new: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and value == old:
                node[key] = new
            else:
                _replace_refs(value, old, new)
    elif isinstance(node, list):
        for item in node:
            _replace_refs(item, old, new)


def _finish(spec: dict[str, Any]) -> dict[str, Any]:
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: tuple[type[BaseModel], ...] = (
        ErrorBody,
        TrackingError,
        TrackingOk,
        *_BODY_MODELS.values(),
    )
    for model in models:
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    schemas.update(MESSAGE_SCHEMAS)
    _replace_refs(
        spec["paths"],
        "#/components/schemas/HTTPValidationError",
        "#/components/schemas/ErrorBody",
    )
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if path.startswith("/api/"):
                operation.setdefault("security", [{"adminToken": []}])
            # Every request passes the input door (entrypoints/api/inputs.py) first: a
            # parameter, field or body value no backend can store is a 400 naming it; and
            # FastAPI answers 400 to a body it cannot decode (not UTF-8).
            operation["responses"].setdefault(
                "400",
                {
                    "description": "A value is refused at the door (NUL, out of range, too "
                    "deeply nested), or the body could not be decoded; the body names the field.",
                    "content": json_content("ErrorBody"),
                },
            )
    return spec


def install(app: FastAPI) -> None:
    """Finish the app's generated OpenAPI document (see the module docstring)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _finish(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
