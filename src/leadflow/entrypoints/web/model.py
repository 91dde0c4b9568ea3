"""The model page: the active leadflow.yaml (read-only), its validation status, the version
history, (admin) a backtest of an uploaded candidate model, which is never applied, and a
calibration of points and MQL threshold from the stored outcomes, which an admin may apply.

The upload is refused before its body is parsed when it declares more than
:data:`MAX_UPLOAD` bytes; the file must be UTF-8 YAML; model errors are listed with their
key paths (``leadflow model check``'s messages).

Calibrate (everyone who sees the page): ``services.calibration.calibrate`` in the thread
pool (it reads the whole store); the page shows the proposal, the YAML diff and the
backtest of the proposed model. Apply (admin): the form carries the proposed YAML
(base64, so a browser's newline normalisation cannot change it), its SHA-256, the content
hash of the model that was active when it was proposed and an HMAC of both hashes under
the signing key. The apply refuses a proposal whose YAML, hashes or HMAC do not match
(tampered) or whose active model is no longer active (stale), and applies nothing then.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from leadflow.adapters.db.repositories import models
from leadflow.bootstrap import Services
from leadflow.core.backtest import BacktestReport
from leadflow.core.calibrate_points import CalibrationError
from leadflow.core.config import LeadModel, ModelConfigError, check, load_model
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.rendering import render
from leadflow.entrypoints.web.state import services_of
from leadflow.services.backtest import run_backtest
from leadflow.services.calibration import OUTCOMES, Calibration, calibrate
from leadflow.services.lifecycle import ApplyReport, apply_model, model_history
from leadflow.services.lifecycle.bulk import StaleModel

router = APIRouter(include_in_schema=False)
ModelViewer = Annotated[auth.WebUser, auth.require("model.view")]
ModelAdmin = Annotated[auth.WebUser, auth.require("model.backtest")]

MAX_UPLOAD = 1024 * 1024
MULTIPART_OVERHEAD = 16 * 1024
MIN_SUPPORT_DEFAULT = 10
MAX_MIN_SUPPORT = 1_000_000


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
    extra: dict[str, Any] | None = None,
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
            "changes": _changes(report) if report is not None else [],
            "max_kb": MAX_UPLOAD // 1024,
            "outcomes": OUTCOMES,
            "calib_form": {"outcome": "won", "min_support": str(MIN_SUPPORT_DEFAULT)},
            "field_errors": {},
            "calibration": None,
            "calib_error": None,
            "apply_errors": [],
            "applied": None,
        }
    )
    data.update(extra or {})
    return render(request, "model.html", data, status_code=status, active="model")


def _changes(report: BacktestReport) -> list[tuple[tuple[str, str], int]]:
    return sorted(report.stage_changes.items(), key=lambda kv: -kv[1])


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


# ---------------------------------------------------------------- calibrate from outcomes


@dataclass(frozen=True, slots=True)
class ProposalToken:
    """What the apply form carries: the proposed YAML and what binds it to this page."""

    source_b64: str
    proposed_hash: str
    active_hash: str
    signature: str


def _mac(key: bytes, proposed_hash: str, active_hash: str) -> str:
    message = f"model.calibrate:{proposed_hash}:{active_hash}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def proposal_token(services: Services, result: Calibration) -> ProposalToken:
    proposed_hash = hashlib.sha256(result.proposed_source.encode("utf-8")).hexdigest()
    active_hash = load_model(result.source).content_hash
    return ProposalToken(
        source_b64=base64.b64encode(result.proposed_source.encode("utf-8")).decode("ascii"),
        proposed_hash=proposed_hash,
        active_hash=active_hash,
        signature=_mac(services.signing.current(), proposed_hash, active_hash),
    )


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, line) per line of a unified diff, for a readable, escaped rendering."""
    out: list[tuple[str, str]] = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "diff-file"
        elif line.startswith("@@"):
            kind = "diff-hunk"
        elif line.startswith("+"):
            kind = "diff-add"
        elif line.startswith("-"):
            kind = "diff-del"
        else:
            kind = "diff-ctx"
        out.append((kind, line))
    return out


def _calibration_view(services: Services, result: Calibration, min_support: int) -> dict[str, Any]:
    shown = [r for r in result.proposal.rows if r.support]
    return {
        "calibration": result,
        "cal_rows": shown,
        "cal_hidden": len(result.proposal.rows) - len(shown),
        "cal_min_support": min_support,
        "cal_diff": diff_lines(result.diff),
        "cal_weekly": _weekly(result.backtest),
        "cal_changes": _changes(result.backtest),
        "proposal": proposal_token(services, result),
        "inf": math.inf,
    }


def _form_text(form: Any, name: str, limit: int = 200) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


@router.post("/model/calibrate", dependencies=[auth.CsrfProtected])
async def calibrate_form(request: Request, user: ModelViewer) -> HTMLResponse:
    services = services_of(request)
    form = await request.form(max_files=0, max_fields=8)
    outcome = _form_text(form, "outcome").strip()
    raw_support = _form_text(form, "min_support").strip()
    shown_form = {"outcome": outcome, "min_support": raw_support}
    field_errors: dict[str, tuple[str, dict[str, str]]] = {}
    if outcome not in OUTCOMES:
        field_errors["outcome"] = (
            "calib.bad_outcome",
            {"value": outcome[:40], "allowed": ", ".join(OUTCOMES)},
        )
    min_support = 0
    if raw_support.isascii() and raw_support.isdigit() and len(raw_support) <= 7:
        min_support = int(raw_support)
    if not 1 <= min_support <= MAX_MIN_SUPPORT:
        field_errors["min_support"] = (
            "calib.bad_min_support",
            {"value": raw_support[:40], "max": f"{MAX_MIN_SUPPORT:,}"},
        )
    if field_errors:
        return await _page_async(
            request,
            status=422,
            extra={"calib_form": shown_form, "field_errors": field_errors},
        )
    try:
        result = await run_in_threadpool(
            calibrate,
            services.engine,
            services.models,
            outcome,
            services.clock(),
            min_support=min_support,
        )
    except (CalibrationError, ModelConfigError) as exc:
        return await _page_async(
            request, status=422, extra={"calib_form": shown_form, "calib_error": str(exc)}
        )
    view = await run_in_threadpool(_calibration_view, services, result, min_support)
    return await _page_async(request, extra={"calib_form": shown_form, **view})


Problems = list[tuple[str, dict[str, str]]]


@dataclass(frozen=True, slots=True)
class PostedProposal:
    source: str
    active_hash: str


def _decode_proposal(services: Services, form: Any) -> PostedProposal | Problems:
    """The proposed YAML the apply form carries and the model it was proposed against, or
    why it is refused (message keys and values): not this dashboard's proposal."""
    raw = _form_text(form, "proposed_source", limit=2 * MAX_UPLOAD)
    proposed_hash = _form_text(form, "proposed_hash", limit=100)
    active_hash = _form_text(form, "active_hash", limit=100)
    signature = _form_text(form, "signature", limit=100)
    try:
        source = base64.b64decode(raw.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return [("calib.apply_bad_source", {})]
    actual = hashlib.sha256(source.encode("utf-8")).hexdigest()
    if not hmac.compare_digest(actual.encode(), proposed_hash.encode()):
        return [("calib.apply_bad_hash", {})]

    def verified(key: bytes) -> bool | None:
        expected = _mac(key, proposed_hash, active_hash).encode()
        return hmac.compare_digest(expected, signature.encode()) or None

    if not signature or services.signing.verify(verified, services.clock()) is None:
        return [("calib.apply_bad_signature", {})]
    return PostedProposal(source=source, active_hash=active_hash)


@router.post("/model/calibrate/apply", dependencies=[auth.CsrfProtected])
async def apply_calibration(request: Request, user: ModelAdmin) -> HTMLResponse:
    """Apply the shown proposal, only while the model it was proposed against is active
    (checked under a lock in the switch's transaction)."""
    services = services_of(request)
    form = await request.form(max_files=0, max_fields=8, max_part_size=3 * MAX_UPLOAD)
    posted = _decode_proposal(services, form)
    if not isinstance(posted, PostedProposal):
        return await _page_async(request, status=422, extra={"apply_errors": posted})
    try:
        model = load_model(posted.source)
    except ModelConfigError as exc:
        problems = [("calib.apply_invalid", {"reason": m}) for m in exc.messages]
        return await _page_async(request, status=422, extra={"apply_errors": problems})
    try:
        report: ApplyReport = await run_in_threadpool(
            lambda: apply_model(
                services.engine,
                services.models,
                model,
                posted.source,
                services.clock(),
                expected_active=posted.active_hash,
            )
        )
    except StaleModel as exc:
        stale = {"then": exc.expected[:12], "now": (exc.active or "none")[:12]}
        problems = [("calib.apply_stale", stale)]
        return await _page_async(request, status=409, extra={"apply_errors": problems})
    return await _page_async(request, extra={"applied": report})
