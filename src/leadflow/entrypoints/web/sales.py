"""The sales queue as a rep's day: the leads waiting for a rep and the rep's own open
hand-offs (admin: everyone's), each section counted, ranked by priority with the reason in
words (:func:`leadflow.core.queue.rank`), with SLA timers and overdue markers, filters
(status, overdue, owner), sorts and pages (:mod:`leadflow.services.handoff.board`).

Actions are plain form POSTs (CSRF token; work without JavaScript: 303 back to the queue
with a notice that says what changed); htmx enhances them by swapping only ``#queue``.

- A rep claims a waiting lead within today's capacity; an admin assigns a waiting lead or
  reassigns an open hand-off to a rep (:mod:`leadflow.services.handoff.claiming`); an
  admin accepting a waiting lead chooses the rep who gets it. A refused claim says why.
- Reject, close won and close lost ask first: the first POST answers with a confirmation
  (what will change) carrying a signed token; only the second POST with that token acts.
- Qualify says what changed and what is still needed ("Qualification 50 of 75: add
  budget to hand off"), also when the stage machine refuses it.
- Notes, calls and tasks are logged on the lead (:mod:`leadflow.services.handoff.notes`),
  shown on its card and, through ``/queue/{id}/notes``, on the lead page.

A refusal by the stage machine is shown as a message (409 without htmx), never a 500. A
sales rep may act only on leads whose open hand-off is theirs, or claim waiting ones (else
403).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime, time, tzinfo
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.repositories import handoffs, lead_pages
from leadflow.bootstrap import Services
from leadflow.core import queue as core_queue
from leadflow.core.config import LeadModel
from leadflow.core.routing import check_lost_reason, reject_action
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.errors import NotFoundPage
from leadflow.entrypoints.web.i18n import Translator
from leadflow.entrypoints.web.rendering import display_name, render, translator_for
from leadflow.entrypoints.web.state import cache_of, services_of
from leadflow.services import handoff
from leadflow.services.handoff import board as board_service
from leadflow.services.handoff import claiming, notes
from leadflow.services.lifecycle import ActionRefused

router = APIRouter(include_in_schema=False)
QueueUser = Annotated[auth.WebUser, auth.require("queue.view")]
LeadsUser = Annotated[auth.WebUser, auth.require("leads.view")]
LeadId = Path(..., ge=1, le=2**62)

ACTIONS = ("accept", "reject", "not_now", "qualify", "win", "lose")
CONFIRM = ("reject", "win", "lose")
"""Destructive actions: asked once more before they run."""
EXTRA = ("claim", "assign", "note", "task_done")
BANT = core_queue.BANT_FIELDS
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


def _stage_label(model: LeadModel, stage: str | None, locale: str) -> str:
    if stage and stage in model.spec.stages:
        return model.display_name(stage, locale)
    return stage or "–"


# ---------------------------------------------------------------- words


def when_words(t: Translator, at: datetime | None, now: datetime) -> str:
    """'today', 'yesterday', a weekday within the week ('Tue'), else the date."""
    if at is None:
        return "–"
    day = at.astimezone(t.zone).date()
    today = now.astimezone(t.zone).date()
    delta = (today - day).days
    if delta == 0:
        return t("queue.day.today")
    if delta == 1:
        return t("queue.day.yesterday")
    if 1 < delta < 7:
        return t(f"queue.day.{day.weekday()}")
    return t.date(at)


def highlight_words(t: Translator, h: core_queue.Highlight, now: datetime) -> str:
    """'downloaded 'Price list' · 3×, last Tue'."""
    key = f"queue.hl.{h.verb}"
    text = t(key if t.has(key) else "queue.hl.other", subject=h.subject or "")
    if h.subject and h.verb != "page":
        text = f"{text} “{h.subject}”"
    last = when_words(t, h.last_at, now)
    if h.count > 1:
        return t("queue.hl.repeated", what=text, n=h.count, when=last)
    return t("queue.hl.once", what=text, when=last)


def reason_words(t: Translator, reason: core_queue.Reason) -> str:
    values = dict(reason.values)
    if reason.key == "intent":
        event = str(values.get("event", ""))
        values["event"] = t(f"queue.intent.{event}") if t.has(f"queue.intent.{event}") else event
    for name in ("hours", "sla"):
        if isinstance(values.get(name), int | float):
            values[name] = t.number(values[name])
    return t(f"queue.why.{reason.key}", **values)


def sla_words(t: Translator, sla: core_queue.Sla) -> str:
    hours = t.number(round(sla.hours, 1) if sla.hours < 10 else round(sla.hours))
    return t(f"queue.sla.{sla.state}", hours=hours)


def claim_words(t: Translator, reason: core_queue.Reason) -> str:
    return t(f"queue.claim.{reason.key}", **dict(reason.values))


def fields_words(t: Translator, fields: tuple[str, ...] | list[str]) -> str:
    return t("queue.list_sep").join(t(f"bant.{f}").lower() for f in fields)


def qualify_words(t: Translator, outcome: core_queue.QualifyOutcome) -> str:
    """'Qualification 50 of 75: add budget to hand off.'"""
    score = t.number(round(outcome.score, 1))
    threshold = t.number(outcome.threshold)
    if outcome.ready:
        return t("queue.qualify.ready", score=score, threshold=threshold)
    return t(
        "queue.qualify.add",
        score=score,
        threshold=threshold,
        fields=fields_words(t, outcome.missing),
    )


# ---------------------------------------------------------------- page


def _lead_bant(conn: Connection, lead_id: int) -> dict[str, Any]:
    return board_service.lead_bant(conn, lead_id)


def _outcome(
    model: LeadModel, before: dict[str, Any], after: dict[str, Any]
) -> core_queue.QualifyOutcome:
    q = model.spec.qualification
    return core_queue.qualify_outcome(
        before,
        after,
        weights=q.weights.model_dump(),
        levels=dict(q.levels),
        threshold=q.handoff_threshold,
    )


def _notice(
    services: Services,
    model: LeadModel,
    t: Translator,
    done: str,
    lead_id: int | None,
    changed: str,
    extra: dict[str, str],
) -> str:
    """The message after an action: what changed, in the reader's language."""
    if not done or lead_id is None:
        return ""
    with read_only(services.engine).connect() as conn:
        row = board_service.lead_brief(conn, lead_id)
        if row is None:
            return ""
        who = f"{display_name(row, t)} (#{lead_id})"
        stage = _stage_label(model, row["stage"], t.locale)
        bant = row["bant"]
    if done == "qualify":
        fields = core_queue.sequence_fields(changed.split(",")) if changed else ()
        outcome = _outcome(model, bant, bant)
        if extra.get("opp"):
            head = t("queue.done.qualify_opp", lead=who, stage=stage)
        elif not fields:
            head = t("queue.qualify.nothing", lead=who)
        else:
            head = t("queue.qualify.recorded", lead=who, fields=fields_words(t, fields))
        return f"{head} {qualify_words(t, outcome)}"
    if done in ("claim", "assign"):
        return t(
            f"queue.done.{done}",
            lead=who,
            rep=extra.get("rep", ""),
            n=extra.get("n", ""),
            capacity=extra.get("cap", ""),
        )
    if done in ("reject", "not_now", "win", "lose"):
        return t(f"queue.moved.{done}", lead=who, stage=stage)
    if done in ACTIONS or done in ("note", "task_done"):
        return t(f"queue.done.{done}", lead=who, stage=stage)
    return ""


def _page(
    request: Request,
    user: auth.WebUser,
    *,
    filters: board_service.Filters | None = None,
    error: str = "",
    error_lead: int | None = None,
    notice: str = "",
    done_lead: int | None = None,
    confirm: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    services = services_of(request)
    rep = user.rep_scope
    model = _model(services)
    t = translator_for(request, user)
    filters = filters or board_service.Filters()
    now = services.clock()
    with read_only(services.engine).connect() as conn:
        board = board_service.load_board(conn, model, now, rep=rep, filters=filters)
    for card in board.pool.cards + board.mine.cards:
        card["stage_label"] = _stage_label(model, card["stage"], t.locale)
        card["actions"] = (
            allowed_actions(model, card["stage"]) if card["status"] != "waiting" else []
        )
        card["why"] = [reason_words(t, r) for r in card["reasons"]]
        card["sla_text"] = sla_words(t, card["sla"])
        card["hl_text"] = [highlight_words(t, h, now) for h in card["highlights"]]
        if card.get("claim") is not None:
            card["claim_text"] = claim_words(t, card["claim"].reason)
    if confirm is not None:
        shown = {c["lead_id"] for c in board.pool.cards + board.mine.cards}
        confirm["in_card"] = confirm["lead_id"] in shown
    sales = handoff.sales_spec(model)
    return render(
        request,
        "queue.html",
        {
            "board": board,
            "filters": filters,
            "reject_reasons": sales.reject_reasons,
            "lost_reasons": sales.lost_reasons,
            "levels": list(model.spec.qualification.levels),
            "bant": BANT,
            "threshold": model.spec.qualification.handoff_threshold,
            "error": error,
            "error_lead": error_lead,
            "notice": notice,
            "done_lead": done_lead,
            "confirm": confirm,
            "new_action_id": lambda: f"web:{uuid.uuid4()}",
            "everyone": rep is None,
            "statuses": board_service.STATUSES,
            "sorts": board_service.SORTS,
            "sla_hours": sales.sla_hours,
            "when": lambda at: when_words(t, at, now),
        },
        status_code=status,
        active="queue",
    )


async def _page_async(*args: Any, **kwargs: Any) -> HTMLResponse:
    """The page from an async route: its database reads run in the thread pool."""
    return await run_in_threadpool(lambda: _page(*args, **kwargs))


@router.get("/queue")
async def queue_page(
    request: Request,
    user: QueueUser,
    done: Annotated[str, Query(max_length=20)] = "",
    lead: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    changed: Annotated[str, Query(max_length=60)] = "",
    opp: Annotated[str, Query(max_length=2)] = "",
    rep: Annotated[str, Query(max_length=64)] = "",
    n: Annotated[str, Query(max_length=8)] = "",
    cap: Annotated[str, Query(max_length=8)] = "",
    status: Annotated[str, Query(max_length=16)] = "all",
    overdue: Annotated[str, Query(max_length=2)] = "",
    owner: Annotated[str, Query(max_length=64)] = "",
    sort: Annotated[str, Query(max_length=16)] = "priority",
    pool_page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    mine_page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    filters = board_service.Filters.of(
        status=status,
        overdue=overdue == "1",
        owner=owner if user.rep_scope is None else None,
        sort=sort,
        pool_page=pool_page,
        mine_page=mine_page,
    )
    services = services_of(request)
    t = translator_for(request, user)
    extra = {
        "opp": opp,
        "rep": rep,
        "n": n if n.isdigit() else "",
        "cap": cap if cap.isdigit() else "",
    }
    notice = await run_in_threadpool(
        _notice, services, _model(services), t, done, lead, changed, extra
    )
    return await _page_async(request, user, filters=filters, notice=notice, done_lead=lead)


# ---------------------------------------------------------------- actions


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


def _due(text: str, zone: tzinfo) -> datetime | None:
    """A task's due date from the form (``YYYY-MM-DD`` is 18:00 that day, or
    ``YYYY-MM-DDTHH:MM``) in the user's time zone."""
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            day = datetime.fromisoformat(text).date()
            return datetime.combine(day, time(18, 0), tzinfo=zone)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("due: expected a date such as 2026-12-31") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def _run_action(
    services: Services,
    action: str,
    lead_id: int,
    actor: str,
    action_id: str | None,
    form: dict[str, str],
    user: auth.WebUser,
    zone: tzinfo,
) -> dict[str, str]:
    """Run one action in one unit of work; returns what the notice needs."""

    def call(conn: Connection, model: LeadModel, now: datetime) -> dict[str, str]:
        kw: dict[str, Any] = {"actor": actor, "action_id": action_id}
        if action == "claim":
            rep = user.user.sales_rep_key
            if not rep:
                raise ValueError("rep: your user has no sales rep key; ask an admin")
            res = claiming.claim(conn, model, lead_id, rep, now, actor=actor)
            return {"rep": rep, "n": str(res.used), "cap": str(res.capacity)}
        if action == "assign":
            if not form["rep"]:
                raise ValueError("rep: choose a rep")
            res = claiming.assign(conn, model, lead_id, form["rep"], now, actor=actor)
            return {"rep": form["rep"], "n": str(res.used), "cap": str(res.capacity)}
        if action == "note":
            due = _due(form["due"], zone)
            notes.add_note(conn, lead_id, form["kind"], form["body"], now, author=actor, due_at=due)
            return {}
        if action == "task_done":
            if not form["note"].isdigit() or not notes.complete_task(
                conn, lead_id, int(form["note"]), now
            ):
                raise LookupError("note: no open task with that id on this lead")
            return {}
        if action == "accept":
            if user.rep_scope is None and handoff.active_assignment(conn, lead_id) is None:
                # An admin taking a lead from the pool gives it to a rep: never to themself.
                if not form["rep"]:
                    raise ValueError("rep: choose the rep who takes this lead")
                claiming.assign(conn, model, lead_id, form["rep"], now, actor=actor)
            handoff.accept(conn, model, lead_id, now, **kw)
            return {}
        if action == "reject":
            handoff.reject(conn, model, lead_id, form["reason"], now, **kw)
            return {}
        if action == "not_now":
            handoff.not_now(conn, model, lead_id, now, reason=form["reason"] or None, **kw)
            return {}
        if action == "qualify":
            bant = {k: form[k] for k in BANT if form[k]}
            currency = form["currency"].strip().upper() or "KRW"
            if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
                raise ValueError("currency: expected a three-letter code such as KRW or USD")
            before = _lead_bant(conn, lead_id)
            qualified = handoff.qualify(
                conn, model, lead_id, now, bant=bant, amount=_amount(form["amount"]),
                currency=currency, **kw,
            )  # fmt: skip
            after = _lead_bant(conn, lead_id)
            changed = _outcome(model, before, after).changed
            return {"changed": ",".join(changed), "opp": "1" if qualified.opportunity_id else ""}
        if action == "win":
            handoff.win(conn, model, lead_id, now, amount=_amount(form["amount"]), **kw)
            return {}
        handoff.lose(conn, model, lead_id, form["reason"], now, **kw)
        return {}

    with services.engine.begin() as conn:
        now = services.clock()
        return call(conn, services.models.active(conn, now), now)


def _confirm_token(
    services: Services, user: auth.WebUser, lead_id: int, form: dict[str, str]
) -> str:
    """Binds a confirmation to this session, lead, action and its inputs."""
    parts = [str(user.session_id), str(lead_id), form["action"], form["reason"], form["amount"],
             form["action_id"]]  # fmt: skip
    mac = hmac.new(auth.secret_for(services), "\x1f".join(parts).encode(), hashlib.sha256)
    return mac.hexdigest()[:40]


def _needs_confirm(
    services: Services, lead_id: int, action: str, form: dict[str, str], locale: str
) -> dict[str, Any] | None:
    """What the confirmation shows, or None when the stage machine will refuse the action
    anyway (its refusal is the answer then) or the input is bad (its error is)."""
    model = _model(services)
    spec = handoff.sales_spec(model)
    if action == "reject":
        name = reject_action(spec, form["reason"])  # ValueError: unknown reason
        reasons = {r.key: r for r in spec.reject_reasons}
    elif action == "lose":
        name = "lose"
        check_lost_reason(spec, form["reason"])
        reasons = {r.key: r for r in spec.lost_reasons}
    else:
        name = "win"
        reasons = {}
        _amount(form["amount"])
    with read_only(services.engine).connect() as conn:
        brief = board_service.lead_brief(conn, lead_id)
    stage = brief["stage"] if brief is not None else None
    act = model.spec.actions.get(name)
    if act is None or stage not in act.from_:
        return None
    reason = reasons.get(form["reason"])
    return {
        "lead_id": lead_id,
        "action": action,
        "from": _stage_label(model, stage, locale),
        "to": _stage_label(model, act.to, locale),
        "reason": form["reason"],
        "reason_label": (reason.label or reason.key) if reason else "",
        "dead_end": name == "disqualify",
        "amount": form["amount"],
        "action_id": form["action_id"],
    }


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
    confirm: str = Form("", max_length=64),
    rep: str = Form("", max_length=64),
    kind: str = Form("note", max_length=8),
    body: str = Form("", max_length=4000),
    due: str = Form("", max_length=32),
    note: str = Form("", max_length=20),
    back: str = Form("", max_length=8),
) -> Response:
    if action not in ACTIONS and action not in EXTRA:
        raise NotFoundPage
    services = services_of(request)
    exists, _owner = await run_in_threadpool(lead_pages.lead_owner, services.engine, lead_id)
    if not exists:
        raise NotFoundPage
    scope = user.rep_scope
    if action == "assign" and scope is not None:
        raise auth.Forbidden  # admins assign; a rep claims
    if scope is not None and action != "claim":
        holder = await run_in_threadpool(handoffs.active_rep, services.engine, lead_id)
        if holder != scope:
            raise auth.Forbidden
    clean_id = action_id if action_id.isascii() and action_id.isprintable() else ""
    form = {
        "action": action,
        "reason": reason.strip(),
        "budget": budget,
        "authority": authority,
        "need": need,
        "timeframe": timeframe,
        "amount": amount,
        "currency": currency,
        "action_id": clean_id,
        "rep": rep.strip(),
        "kind": kind,
        "body": body,
        "due": due,
        "note": note,
    }
    actor = user.user.sales_rep_key or user.user.email
    htmx = bool(request.headers.get("hx-request"))
    t = translator_for(request, user)
    try:
        if action in CONFIRM:
            expected = _confirm_token(services, user, lead_id, form)
            if not (confirm and hmac.compare_digest(confirm, expected)):
                asked = await run_in_threadpool(
                    _needs_confirm, services, lead_id, action, form, t.locale
                )
                if asked is not None:
                    asked["token"] = expected
                    return await _page_async(request, user, confirm=asked, done_lead=lead_id)
        extra = await run_in_threadpool(
            _run_action, services, action, lead_id, actor, clean_id or None, form, user, t.zone
        )
    except claiming.ClaimRefused as exc:
        text = t("queue.claim.refused", lead=lead_id, why=claim_words(t, exc.reason))
        return await _page_async(
            request, user, error=text, error_lead=lead_id, status=200 if htmx else 409
        )
    except ActionRefused as exc:
        text = f"{t('queue.refused', lead=lead_id)} {exc}"
        if action == "qualify":
            hint = await run_in_threadpool(_qualify_hint, services, lead_id, form, t)
            text = f"{text.rstrip('. ')}. {hint}"
        return await _page_async(
            request, user, error=text, error_lead=lead_id, status=200 if htmx else 409
        )
    except LookupError as exc:
        text = f"{t('queue.refused', lead=lead_id)} {str(exc).strip(chr(39) + chr(34))}"
        return await _page_async(
            request, user, error=text, error_lead=lead_id, status=200 if htmx else 404
        )
    except ValueError as exc:
        text = f"{t('queue.refused', lead=lead_id)} {exc}"
        return await _page_async(
            request, user, error=text, error_lead=lead_id, status=200 if htmx else 422
        )
    cache = cache_of(request)
    cache.invalidate("funnel")
    cache.invalidate("home")
    if back == "lead" and action in ("note", "task_done"):
        return RedirectResponse(f"/leads/{lead_id}#lead-notes", status_code=303)
    query = "&".join(f"{k}={v}" for k, v in extra.items() if v and _safe(v))
    target = f"/queue?done={action}&lead={lead_id}" + (f"&{query}" if query else "")
    return RedirectResponse(target, status_code=303)


def _safe(value: str) -> bool:
    return all(c.isalnum() or c in "_,.-@" for c in value)


def _qualify_hint(services: Services, lead_id: int, form: dict[str, str], t: Translator) -> str:
    """Why a qualify was refused, in BANT terms: the score it would have had and the
    fields still needed (nothing was stored)."""
    model = _model(services)
    with read_only(services.engine).connect() as conn:
        before = _lead_bant(conn, lead_id)
    after = core_queue.merge_bant(before, {k: form[k] for k in BANT if form[k]})
    return qualify_words(t, _outcome(model, before, after))


# ---------------------------------------------------------------- notes on the lead page


@router.get("/queue/{lead_id}/notes")
async def lead_notes(request: Request, user: LeadsUser, lead_id: int = LeadId) -> HTMLResponse:
    """The lead's notes, calls and tasks (a fragment the lead page loads)."""
    services = services_of(request)
    exists, owner = await run_in_threadpool(lead_pages.lead_owner, services.engine, lead_id)
    if not exists:
        raise NotFoundPage
    rep = user.rep_scope
    if (
        rep is not None
        and owner != rep
        and not await run_in_threadpool(handoffs.assigned_to, services.engine, lead_id, rep)
    ):
        raise auth.Forbidden

    def load() -> tuple[list[dict[str, Any]], bool]:
        with read_only(services.engine).connect() as conn:
            found = notes.notes_for(conn, [lead_id])[lead_id]
        holder = handoffs.active_rep(services.engine, lead_id)
        can = user.can("queue.view") and (rep is None or holder == rep)
        return found, can

    items, can_write = await run_in_threadpool(load)
    return render(
        request,
        "_lead_notes.html",
        {"lead_id": lead_id, "notes": items, "can_write": can_write, "back": "lead"},
    )
