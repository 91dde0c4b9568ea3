"""Segment-compatible HTTP Tracking API: /v1/identify, track, page, screen, group, alias, batch.

The body is read and size-checked before it is parsed, so an oversized request costs no
JSON decoding. Validation is :mod:`leadflow.core.tracking`; storage is
:func:`leadflow.services.ingest.ingest`, which commits before we answer 200.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from leadflow.bootstrap import Services
from leadflow.core.tracking import MessageError, parse_batch, parse_message
from leadflow.entrypoints.api.deps import basic_username
from leadflow.services.ingest import ingest

router = APIRouter(prefix="/v1", tags=["tracking"])


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise ValueError("body: not valid gzip data") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise _TooLarge
    return body


async def _handle(request: Request, type_hint: str | None) -> JSONResponse:
    services: Services = request.app.state.services
    settings = services.settings
    limit = settings.max_batch_bytes if type_hint is None else settings.max_message_bytes
    limit_text = "500 KB per batch" if type_hint is None else "32 KB per message"
    if type_hint is None and settings.max_batch_bytes != 500 * 1024:
        limit_text = f"{settings.max_batch_bytes} bytes per batch"
    if type_hint is not None and settings.max_message_bytes != 32 * 1024:
        limit_text = f"{settings.max_message_bytes} bytes per message"
    try:
        raw = await _read_body(request, limit)
    except _TooLarge:
        return _error(400, f"request body exceeds the limit of {limit_text}", "body")
    except ValueError as exc:
        return _error(400, str(exc), "body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"body: malformed JSON ({exc})", "body")
    write_key = basic_username(request)
    if write_key is None and isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        write_key = body["writeKey"]
    if not write_key:
        return _error(401, "missing write key: send it as the HTTP Basic auth username")
    kind = await run_in_threadpool(services.keys.kind_of, write_key)
    if kind != "write":
        return _error(401, "invalid write key")
    received_at = services.clock()
    try:
        if type_hint is None:
            messages = parse_batch(body, received_at=received_at)
            too_big = _oversized_message(body, settings.max_message_bytes)
            if too_big is not None:
                return _error(
                    400,
                    f"batch[{too_big}]: message exceeds the limit of 32 KB per message",
                    f"batch[{too_big}]",
                )
        else:
            messages = [parse_message(body, received_at=received_at, type_hint=type_hint)]
    except MessageError as exc:
        return _error(400, str(exc), exc.field)
    if messages:
        await run_in_threadpool(
            ingest, services.engine, messages, received_at, after=services.after_ingest
        )
    return JSONResponse({"success": True})


def _oversized_message(body: dict[str, Any], limit: int) -> int | None:
    for i, item in enumerate(body.get("batch") or []):
        if len(orjson.dumps(item)) > limit:
            return i
    return None


def _endpoint(type_hint: str | None) -> Any:
    async def endpoint(request: Request) -> JSONResponse:
        return await _handle(request, type_hint)

    endpoint.__name__ = f"tracking_{type_hint or 'batch'}"
    return endpoint


for _type in ("identify", "track", "page", "screen", "group", "alias"):
    router.add_api_route(
        f"/{_type}",
        _endpoint(_type),
        methods=["POST"],
        operation_id=f"tracking_{_type}",
        summary=f"Segment {_type} call",
    )
for _path, _op in (("/batch", "tracking_batch"), ("/import", "tracking_import")):
    router.add_api_route(
        _path,
        _endpoint(None),
        methods=["POST"],
        operation_id=_op,
        summary="Segment batch of calls (up to 500 KB)",
    )
