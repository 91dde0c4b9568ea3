"""The model page: the active leadflow.yaml (read-only), its validation status, the version
history, and (admin) a backtest of an uploaded candidate model, which is never applied.

The upload is refused before its body is parsed when it declares more than
:data:`MAX_UPLOAD` bytes; the file must be UTF-8 YAML; model errors are listed with their
key paths (``leadflow model check``'s messages).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from leadflow.adapters.db.repositories import models
from leadflow.bootstrap import Services
from leadflow.core.backtest import BacktestReport
from leadflow.core.config import LeadModel, ModelConfigError, check, load_model
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.rendering import render
from leadflow.entrypoints.web.state import services_of
from leadflow.services.backtest import run_backtest
from leadflow.services.lifecycle import model_history

router = APIRouter(include_in_schema=False)
ModelViewer = Annotated[auth.WebUser, auth.require("model.view")]
ModelAdmin = Annotated[auth.WebUser, auth.require("model.backtest")]

MAX_UPLOAD = 1024 * 1024
MULTIPART_OVERHEAD = 16 * 1024


class UploadRefused(Exception):
    """An upload refused before parsing (too large, no length): the model page with the
    reason, status 413/411."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def model_context(services: Services) -> dict[str, Any]:
    row = models.active_model_row(services.engine)
    if row is None:  # a fresh database: the shipped model becomes active on first use
        with services.engine.begin() as conn:
            services.models.active(conn, services.clock())
        row = models.active_model_row(services.engine)
    assert row is not None
    with services.engine.connect() as conn:
        history = model_history(conn)
    history.reverse()
    return {"active": row, "status": check(row["source"]), "history": history}


async def _page_async(*args: Any, **kwargs: Any) -> HTMLResponse:
    """The page from an async route: its database reads run in the thread pool."""
    return await run_in_threadpool(lambda: _page(*args, **kwargs))


def _page(
    request: Request,
    *,
    errors: list[str] | None = None,
    filename: str = "",
    report: BacktestReport | None = None,
    candidate: LeadModel | None = None,
    status: int = 200,
) -> HTMLResponse:
    services = services_of(request)
    data = model_context(services)
    web_user = auth.current_user(request)
    model = services.active_model()
    locale = web_user.user.locale
    data["stage_name"] = lambda s: (
        model.display_name(s, locale) if s in model.spec.stages else str(s)
    )
    data.update(
        {
            "errors": errors or [],
            "filename": filename,
            "report": report,
            "candidate": candidate,
            "weekly": _weekly(report) if report is not None else None,
            "changes": sorted(report.stage_changes.items(), key=lambda kv: -kv[1])
            if report is not None
            else [],
            "max_kb": MAX_UPLOAD // 1024,
        }
    )
    return render(request, "model.html", data, status_code=status, active="model")


def _weekly(report: BacktestReport) -> dict[str, Any]:
    rows = report.weekly.to_dicts()
    return {
        "weeks": [str(r["week"])[:10] for r in rows],
        "current": [int(r["current"] or 0) for r in rows],
        "candidate": [int(r["candidate"] or 0) for r in rows],
        "names": [report.current.version, report.candidate.version],
    }


def install(app: FastAPI) -> None:
    @app.exception_handler(UploadRefused)
    async def _refused(request: Request, exc: UploadRefused) -> Response:
        return await _page_async(request, errors=[str(exc)], status=exc.status)


@router.get("/model")
def model_page(request: Request, user: ModelViewer) -> HTMLResponse:
    return _page(request)


def limit_upload(request: Request, user: ModelAdmin) -> None:
    """Refuse an oversized or unsized upload before the body is read."""
    length = request.headers.get("content-length")
    if length is None or not (length.isdigit() and length.isascii()):
        raise UploadRefused("candidate: the upload must declare its length", 411)
    if int(length) > MAX_UPLOAD + MULTIPART_OVERHEAD:
        raise UploadRefused(
            f"candidate: the file is larger than {MAX_UPLOAD // 1024} KB (1 MB)", 413
        )


@router.post(
    "/model/backtest",
    dependencies=[Depends(limit_upload), auth.CsrfProtected],
)
async def backtest(request: Request, user: ModelAdmin) -> HTMLResponse:
    services = services_of(request)
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("candidate")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await _page_async(
            request, errors=["candidate: choose a leadflow.yaml file"], status=422
        )
    name = upload.filename[:200]
    raw = await upload.read(MAX_UPLOAD + 1)
    if len(raw) > MAX_UPLOAD:
        return await _page_async(
            request,
            errors=[f"candidate: the file is larger than {MAX_UPLOAD // 1024} KB (1 MB)"],
            filename=name,
            status=413,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return await _page_async(
            request,
            errors=[f"candidate: not UTF-8 text (invalid byte at offset {exc.start})"],
            filename=name,
            status=422,
        )
    if not text.strip():
        return await _page_async(
            request, errors=["candidate: the file is empty"], filename=name, status=422
        )
    try:
        candidate = load_model(text.removeprefix("\ufeff"))
    except ModelConfigError as exc:
        return await _page_async(request, errors=list(exc.messages), filename=name, status=422)
    report = await run_in_threadpool(
        run_backtest, services.engine, services.models, candidate, services.clock()
    )
    return await _page_async(request, filename=name, report=report, candidate=candidate)
