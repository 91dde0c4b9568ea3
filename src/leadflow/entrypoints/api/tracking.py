"""Segment-compatible HTTP Tracking API: /v1/identify, track, page, screen, group, alias, batch.

The body is read and size-checked before it is parsed, so an oversized request costs no
JSON decoding. Validation is :mod:`leadflow.core.tracking`; storage is
:class:`leadflow.services.ingest.IngestQueue` (group commit: requests arriving while a
transaction commits are stored together in the next one), which resolves a request's future
only after its transaction committed, so a 200 still means "stored".

Hot path: validation runs on the event loop (microseconds per message; large bodies go to
a thread), a cached write key is checked without leaving the loop, and the only thread hop
is the hand-over to the writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from leadflow.bootstrap import Services
from leadflow.core.inputs import declared_length_over
from leadflow.core.tracking import MessageError, TrackedMessage, parse_batch, parse_message
from leadflow.entrypoints.api.contract import TrackingOk, tracking_operation
from leadflow.entrypoints.api.deps import basic_username
from leadflow.services.ingest import IngestQueue
from leadflow.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["tracking"])


def _error(
    status: int, message: str, field: str | None = None, code: str = "invalid_request"
) -> JSONResponse:
    # ``code`` and ``message`` are what Segment's SDKs read from an error response.
    body: dict[str, Any] = {"success": False, "code": code, "message": message}
    if field is not None:
        body["field"] = field
    headers = {"WWW-Authenticate": 'Basic realm="leadflow tracking"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    if declared_length_over(request.headers.get("content-length"), limit):
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise ValueError("body: not valid gzip data") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise ValueError("body: truncated gzip data (the stream does not end)")
        if inflater.unused_data:
            raise ValueError("body: unexpected data after the end of the gzip stream")
    elif encoding not in ("", "identity"):
        raise ValueError(f"Content-Encoding: {encoding[:40]!r} is not supported (use gzip)")
    return body


def _limit_text(settings: Settings, batch: bool) -> str:
    if batch:
        size = settings.max_batch_bytes
        return "500 KB per batch" if size == 500 * 1024 else f"{size} bytes per batch"
    size = settings.max_message_bytes
    return "32 KB per message" if size == 32 * 1024 else f"{size} bytes per message"


async def _check_key(services: Services, key: str | None) -> JSONResponse | None:
    if not key:
        return _error(
            401,
            "missing write key: send it as the HTTP Basic auth username",
            code="unauthorized",
        )
    known, kind = services.keys.peek(key)
    if not known:
        kind = await run_in_threadpool(services.keys.kind_of, key)
    if kind == "write":
        return None
    if kind == "admin":
        return _error(
            401, "an admin token cannot send tracking calls; use a write key", code="unauthorized"
        )
    return _error(401, "invalid write key", code="unauthorized")


async def _handle(state: Any, request: Request, type_hint: str | None) -> Response:
    """One tracking call; ``state`` is the app's state (services, the ingest queue)."""
    services: Services = state.services
    settings = services.settings
    is_batch = type_hint is None
    limit = settings.max_batch_bytes if is_batch else settings.max_message_bytes
    # A key in the Authorization header is checked before the body is read; Segment also
    # accepts it as ``writeKey`` in the body, checked once the body is decoded.
    header_key = basic_username(request)
    if header_key is not None and (refused := await _check_key(services, header_key)):
        return refused
    try:
        raw = await _read_body(request, limit)
    except _TooLarge:
        return _error(
            400, f"request body exceeds the limit of {_limit_text(settings, is_batch)}", "body"
        )
    except ValueError as exc:
        return _error(400, str(exc), "body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"body: malformed JSON ({exc})", "body")
    if header_key is None:
        body_key = body.get("writeKey") if isinstance(body, dict) else None
        if refused := await _check_key(services, body_key if isinstance(body_key, str) else None):
            return refused
    received_at = services.clock()
    try:
        if len(raw) > _PARSE_INLINE_BYTES:
            # Validating a large batch takes milliseconds: keep the event loop free.
            messages = await run_in_threadpool(_parse, body, received_at, type_hint, settings)
        else:
            messages = _parse(body, received_at, type_hint, settings)
    except MessageError as exc:
        return _error(400, str(exc), exc.field)
    if messages:
        await asyncio.wrap_future(_ingest_queue(state).submit(messages, received_at))
    return Response(_OK, media_type="application/json")


_OK = b'{"success":true}'
_PARSE_INLINE_BYTES = 64 * 1024


def _parse(
    body: Any, received_at: Any, type_hint: str | None, settings: Settings
) -> list[TrackedMessage]:
    if type_hint is not None:
        return [parse_message(body, received_at=received_at, type_hint=type_hint)]
    too_big = _oversized_message(body, settings.max_message_bytes)
    if too_big is not None:
        raise MessageError(
            f"batch[{too_big}]",
            f"message exceeds the limit of {_limit_text(settings, batch=False)}",
        )
    return parse_batch(body, received_at=received_at)


def _ingest_queue(state: Any) -> IngestQueue:
    """The app's writer (one per process), built on first use."""
    writer: IngestQueue | None = getattr(state, "ingest_queue", None)
    if writer is None:
        services: Services = state.services
        writer = state.ingest_queue = IngestQueue(services.engine, services.after_ingest)
    return writer


def _oversized_message(body: Any, limit: int) -> int | None:
    batch = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(batch, list):
        return None
    for i, item in enumerate(batch):
        if len(orjson.dumps(item)) > limit:
            return i
    return None


def _endpoint(type_hint: str | None) -> Any:
    async def endpoint(request: Request) -> Response:
        return await _handle(request.app.state, request, type_hint)

    endpoint.__name__ = f"tracking_{type_hint or 'batch'}"
    return endpoint


# The body is read raw (above), so it is declared for the OpenAPI document only.
for _type in ("identify", "track", "page", "screen", "group", "alias"):
    router.add_api_route(
        f"/{_type}",
        _endpoint(_type),
        methods=["POST"],
        operation_id=f"tracking_{_type}",
        summary=f"Segment {_type} call",
        response_model=TrackingOk,
        openapi_extra=tracking_operation(f"{_type.capitalize()}Message", "32 KB"),
    )
for _path, _op in (("/batch", "tracking_batch"), ("/import", "tracking_import")):
    router.add_api_route(
        _path,
        _endpoint(None),
        methods=["POST"],
        operation_id=_op,
        summary="Segment batch of calls (up to 500 KB)",
        response_model=TrackingOk,
        openapi_extra=tracking_operation("BatchRequest", "500 KB, 32 KB per message"),
    )


_FAST_ROUTES: dict[str, str | None] = {
    **{f"/v1/{t}": t for t in ("identify", "track", "page", "screen", "group", "alias")},
    "/v1/batch": None,
    "/v1/import": None,
}


class TrackingFastPath:
    """ASGI wrapper for the server: ``POST /v1/<call>`` goes straight to the same handler
    as the routes above, skipping FastAPI's routing, dependency and middleware layers
    (about half of the CPU time of a single-event request). Everything else, including
    ``OPTIONS`` and other methods on /v1/, goes to the wrapped app unchanged."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            type_hint = _FAST_ROUTES.get(scope["path"], _NOT_TRACKING)
            if type_hint is not _NOT_TRACKING:
                try:
                    response = await _handle(self.state, Request(scope, receive), type_hint)
                except Exception:
                    log.exception("tracking call failed")
                    response = PlainTextResponse("Internal Server Error", status_code=500)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


_NOT_TRACKING = "not a tracking path"
