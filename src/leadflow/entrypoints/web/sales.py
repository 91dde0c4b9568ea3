"""The sales queue: a rep's open hand-offs (admin: everyone's, plus the waiting queue) with
the engagement summary, and the sales actions of :mod:`leadflow.services.handoff`.

Every action is a plain form POST (CSRF token, works without JavaScript: 303 back to the
queue with a notice); htmx enhances it by swapping only ``#queue`` from the answer. A
refusal by the stage machine is shown as a message (409 without htmx), never a 500. A
sales rep may act only on leads whose open hand-off is theirs (else 403).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from leadflow.adapters.db.repositories import handoffs, lead_pages
from leadflow.bootstrap import Services
from leadflow.core.config import LeadModel
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.errors import NotFoundPage
from leadflow.entrypoints.web.rendering import render
from leadflow.entrypoints.web.state import cache_of, services_of
from leadflow.services import handoff
from leadflow.services.lifecycle import ActionRefused

router = APIRouter(include_in_schema=False)
QueueUser = Annotated[auth.WebUser, auth.require("queue.view")]
LeadId = Path(..., ge=1, le=2**62)

ACTIONS = ("accept", "reject", "not_now", "qualify", "win", "lose")
BANT = ("budget", "authority", "need", "timeframe")
MAX_AMOUNT = 1e15


def _model(services: Services) -> LeadModel:
    return services.active_model()


def allowed_actions(model: LeadModel, stage: str | None) -> list[str]:
    """The queue's buttons for a lead in ``stage`` (the server still checks each one)."""
    spec = model.spec.actions
    shown = []
    for name in ACTIONS:
        action = spec.get(name)
        if action is not None and stage in action.from_:
            shown.append(name)
    if "reject" not in shown and stage in model.handoff_stages:
        shown.append("reject")
    return shown


async def _page_async(*args: Any, **kwargs: Any) -> HTMLResponse:
    """The page from an async route: its database reads run in the thread pool."""
    return await run_in_threadpool(lambda: _page(*args, **kwargs))


def _page(
    request: Request,
    user: auth.WebUser,
    *,
    error: str = "",
    error_lead: int | None = None,
    done: str = "",
    done_lead: int | None = None,
    status: int = 200,
) -> HTMLResponse:
    services = services_of(request)
    rep = user.rep_scope
    model = _model(services)
    rows = handoffs.sales_queue(services.engine, rep)
    locale = user.user.locale
    for row in rows:
        row["stage_label"] = (
            model.display_name(row["stage"], locale)
            if row["stage"] in model.spec.stages
            else row["stage"] or "–"
        )
        row["actions"] = allowed_actions(model, row["stage"])
    sales = handoff.sales_spec(model)
    return render(
        request,
        "queue.html",
        {
            "rows": rows,
            "reject_reasons": sales.reject_reasons,
            "lost_reasons": sales.lost_reasons,
            "levels": list(model.spec.qualification.levels),
            "bant": BANT,
            "threshold": model.spec.qualification.handoff_threshold,
            "error": error,
            "error_lead": error_lead,
            "done": done if done in ACTIONS else "",
            "done_lead": done_lead,
            "new_action_id": lambda: f"web:{uuid.uuid4()}",
            "everyone": rep is None,
        },
        status_code=status,
        active="queue",
    )


@router.get("/queue")
def queue_page(
    request: Request,
    user: QueueUser,
    done: Annotated[str, Query(max_length=20)] = "",
    lead: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> HTMLResponse:
    return _page(request, user, done=done, done_lead=lead)


def _amount(text: str) -> float | None:
    text = text.strip().replace(",", "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError("amount: not a number") from None
    if not 0 < value <= MAX_AMOUNT or value != value:
        raise ValueError("amount: must be greater than 0 and at most 10^15")
    return value


def _run_action(
    services: Services,
    action: str,
    lead_id: int,
    actor: str,
    action_id: str | None,
    form: dict[str, str],
) -> handoff.ActionResult:
    def call(conn: Connection, model: LeadModel, now: datetime) -> handoff.ActionResult:
        kw: dict[str, Any] = {"actor": actor, "action_id": action_id}
        if action == "accept":
            return handoff.accept(conn, model, lead_id, now, **kw)
        if action == "reject":
            return handoff.reject(conn, model, lead_id, form["reason"], now, **kw)
        if action == "not_now":
            return handoff.not_now(conn, model, lead_id, now, reason=form["reason"] or None, **kw)
        if action == "qualify":
            bant = {k: form[k] for k in BANT if form[k]}
            currency = form["currency"].strip().upper() or "KRW"
            if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
                raise ValueError("currency: expected a three-letter code such as KRW or USD")
            return handoff.qualify(
                conn, model, lead_id, now, bant=bant, amount=_amount(form["amount"]),
                currency=currency, **kw,
            )  # fmt: skip
        if action == "win":
            return handoff.win(conn, model, lead_id, now, amount=_amount(form["amount"]), **kw)
        return handoff.lose(conn, model, lead_id, form["reason"], now, **kw)

    with services.engine.begin() as conn:
        now = services.clock()
        return call(conn, services.models.active(conn, now), now)


@router.post("/queue/{lead_id}/{action}", dependencies=[auth.CsrfProtected])
async def act(
    request: Request,
    user: QueueUser,
    action: str,
    lead_id: int = LeadId,
    reason: str = Form("", max_length=64),
    budget: str = Form("", max_length=32),
    authority: str = Form("", max_length=32),
    need: str = Form("", max_length=32),
    timeframe: str = Form("", max_length=32),
    amount: str = Form("", max_length=32),
    currency: str = Form("KRW", max_length=8),
    action_id: str = Form("", max_length=200),
) -> Response:
    if action not in ACTIONS:
        raise NotFoundPage
    services = services_of(request)
    exists, _owner = await run_in_threadpool(lead_pages.lead_owner, services.engine, lead_id)
    if not exists:
        raise NotFoundPage
    rep = user.rep_scope
    if rep is not None:
        holder = await run_in_threadpool(handoffs.active_rep, services.engine, lead_id)
        if holder != rep:
            raise auth.Forbidden
    form = {
        "reason": reason.strip(),
        "budget": budget,
        "authority": authority,
        "need": need,
        "timeframe": timeframe,
        "amount": amount,
        "currency": currency,
    }
    clean_id = action_id if action_id.isascii() and action_id.isprintable() else ""
    actor = user.user.sales_rep_key or user.user.email
    htmx = bool(request.headers.get("hx-request"))
    try:
        await run_in_threadpool(
            _run_action, services, action, lead_id, actor, clean_id or None, form
        )
    except ActionRefused as exc:
        return await _page_async(
            request, user, error=str(exc), error_lead=lead_id, status=200 if htmx else 409
        )
    except LookupError as exc:
        return await _page_async(
            request, user, error=str(exc).strip("'\""), error_lead=lead_id,
            status=200 if htmx else 404,
        )  # fmt: skip
    except ValueError as exc:
        return await _page_async(
            request, user, error=str(exc), error_lead=lead_id, status=200 if htmx else 422
        )
    cache = cache_of(request)
    cache.invalidate("funnel")
    cache.invalidate("home")
    return RedirectResponse(f"/queue?done={action}&lead={lead_id}", status_code=303)
