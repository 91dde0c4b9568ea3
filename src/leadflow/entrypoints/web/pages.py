"""Home, leads and accounts pages."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from leadflow.adapters.db.repositories import account_pages, dashboard, handoffs, lead_pages
from leadflow.bootstrap import Services
from leadflow.core import lead_lists as lead_list_spec
from leadflow.core.config.roles import STAGE_ROLES
from leadflow.core.errors import BadRequest
from leadflow.core.errors import Forbidden as CoreForbidden
from leadflow.core.errors import NotFound as CoreNotFound
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.errors import NotFoundPage
from leadflow.entrypoints.web.rendering import render
from leadflow.entrypoints.web.state import cache_of, services_of
from leadflow.entrypoints.web.timeline import describe
from leadflow.services import lead_lists, lifecycle

router = APIRouter(include_in_schema=False)

HomeUser = Annotated[auth.WebUser, auth.require("home.view")]
LeadsUser = Annotated[auth.WebUser, auth.require("leads.view")]
AccountsUser = Annotated[auth.WebUser, auth.require("accounts.view")]
BulkUser = Annotated[auth.WebUser, auth.require("leads.bulk")]


@router.get("/home")
async def home(request: Request, user: HomeUser) -> HTMLResponse:
    services = services_of(request)
    rep = user.rep_scope
    now = services.clock()

    def load() -> tuple[dashboard.HomeFigures, list[dict[str, Any]]]:
        figures = cache_of(request).get(
            ("home", rep), lambda: dashboard.home_figures(services.engine, now, rep)
        )
        recent = dashboard.recent_leads(services.engine, rep)
        return figures, recent

    figures, recent = await run_in_threadpool(load)
    visitors = figures.identified_30d + figures.anonymous_30d
    share = figures.identified_30d / visitors if visitors else None
    return render(
        request,
        "home.html",
        {"f": figures, "recent": recent, "identified_share": share},
        active="home",
    )


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    return int(value) if value.isdigit() and value.isascii() and len(value) < 19 else None


PAGE_SIZES = (25, 50, 100, 200)
BULK_ACTIONS = ("assign", "enrol", "export")


def _list_pairs(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The dashboard's query string as smart-list parameters: the column chooser's ``col``
    boxes become ``cols``; the old ``after`` is ``cursor``; unreadable ids are dropped."""
    pairs: list[tuple[str, str]] = []
    chosen: list[str] = []
    for key, value in params:
        if key == "col":
            chosen.append(value)
            continue
        if key in ("after", "cursor", "account"):
            if _int_or_none(value) is None:
                continue
            key = "cursor" if key == "after" else key
        pairs.append((key, value))
    # The form always sends its boxes: the default set is no choice (exports keep every column).
    if chosen and tuple(chosen) != lead_list_spec.DEFAULT_COLUMNS:
        pairs.append(("cols", ",".join(chosen)))
    return pairs


def _parse_list(services: Services, params: list[tuple[str, str]]) -> lead_list_spec.LeadQuery:
    model = services.active_model()
    return lead_list_spec.parse(
        _list_pairs(params),
        stages=model.stages,
        grades=tuple(model.spec.fit.grades),
        max_size=PAGE_SIZES[-1],
        ignore={"csrf_token"},
    )


def _choices(request: Request, rep: str | None, locale: str) -> dict[str, Any]:
    """What the filter form offers: stages, roles, grades, programs, segments, owners..."""
    services = services_of(request)
    model = services.active_model()
    cache, engine = cache_of(request), services.engine
    nurture = model.spec.nurture
    return {
        "stages": [(s, model.display_name(s, locale)) for s in model.stages],
        "roles": [r for r in STAGE_ROLES if model.roles.get(r)],
        "grades": list(model.spec.fit.grades),
        "programs": [p.key for p in nurture.programs] if nurture is not None else [],
        "segments": cache.get(("segments",), lambda: lead_lists.segment_keys(engine)),
        "sources": cache.get(("sources",), lambda: lead_pages.lead_sources(engine)),
        "owners": cache.get(("owners",), lambda: account_pages.account_owners(engine))
        if rep is None
        else [],
    }


@router.get("/leads")
async def leads_list(request: Request, user: LeadsUser) -> HTMLResponse:
    services = services_of(request)
    rep = user.rep_scope
    locale = user.user.locale
    try:
        query = _parse_list(services, request.query_params.multi_items())
        error = ""
    except lead_list_spec.ListQueryError as exc:
        query, error = lead_list_spec.LeadQuery(), str(exc)

    def load() -> dict[str, Any]:
        model = services.active_model()
        page = lead_lists.list_page(services.engine, query, model, rep=rep, locale=locale)
        account_label = (
            account_pages.account_name(services.engine, query.account_id)
            if query.account_id is not None
            else None
        )
        return {
            "page": page,
            "account_label": account_label,
            "views": lead_lists.views_for(services.engine, user.user.id),
            "reps": lead_lists.rep_choices(services.engine) if user.can("leads.bulk") else [],
            **_choices(request, rep, locale),
        }

    data = await run_in_threadpool(load)
    data.update(_list_context(query, user, error))
    template = "_leads_table.html" if request.headers.get("hx-request") else "leads.html"
    return render(request, template, data, active="leads", status_code=400 if error else 200)


def _list_context(
    query: lead_list_spec.LeadQuery, user: auth.WebUser, error: str
) -> dict[str, Any]:
    def link(**changes: Any) -> str:
        """This list's URL with some of its query changed (page back to 1 unless given)."""
        changes.setdefault("page", 1)
        changed = dataclasses.replace(query, **changes)
        text = changed.query_string()
        return "/leads" + ("?" + text if text else "")

    def sort_link(column: str) -> str:
        descending = not (query.sort == column and query.descending)
        if query.sort != column:
            descending = column in lead_lists.DESCENDING_FIRST
        return link(sort=column, descending=descending, cursor=None)

    return {
        "q": query,
        "error": error,
        "columns": lead_list_spec.COLUMNS,
        "visible": query.columns,
        "sortable": lead_list_spec.SORTABLE,
        "link": link,
        "sort_link": sort_link,
        "page_sizes": PAGE_SIZES,
        "export_url": "/leads/export.csv"
        + ("?" + query.query_string(paging=False) if query.query_string(paging=False) else ""),
        "view_query": query.query_string(paging=False),
        "can_bulk": user.can("leads.bulk"),
        "bulk_actions": BULK_ACTIONS,
    }


@router.get("/leads/export.csv")
async def leads_export(request: Request, user: LeadsUser) -> Response:
    services = services_of(request)
    try:
        query = _parse_list(services, request.query_params.multi_items())
    except lead_list_spec.ListQueryError as exc:
        return render(
            request, "error.html", {"code": 400, "kind": "400", "detail": str(exc)}, status_code=400
        )
    rows = lead_lists.export_rows(
        services.engine, query, services.active_model(), rep=user.rep_scope
    )
    return StreamingResponse(
        lead_lists.csv_chunks(rows, lead_lists.export_columns(query)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="leads.csv"'},
    )


@router.post("/leads/views", dependencies=[auth.CsrfProtected])
async def save_view(
    request: Request,
    user: LeadsUser,
    name: Annotated[str, Form(max_length=400)] = "",
    query: Annotated[str, Form(max_length=lead_list_spec.MAX_QUERY_STRING)] = "",
    shared: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    services = services_of(request)
    try:
        parsed = _parse_list(services, parse_qsl(query, keep_blank_values=True))
        await run_in_threadpool(
            lambda: lead_lists.save_view(
                services.engine,
                user_id=user.user.id,
                name=name,
                query=parsed,
                shared=bool(shared),
                now=services.clock(),
            )
        )
    except BadRequest as exc:
        return render(
            request, "error.html", {"code": 400, "kind": "400", "detail": str(exc)}, status_code=400
        )
    text = parsed.query_string(paging=False)
    return RedirectResponse("/leads" + ("?" + text if text else ""), status_code=303)


@router.post("/leads/views/{view_id}/delete", dependencies=[auth.CsrfProtected])
async def delete_view(request: Request, user: LeadsUser, view_id: int) -> Response:
    services = services_of(request)
    await run_in_threadpool(
        lambda: _view_change(
            lambda: lead_lists.delete_view(
                services.engine, view_id, user_id=user.user.id, admin=user.user.role == "admin"
            )
        )
    )
    return RedirectResponse("/leads", status_code=303)


@router.post("/leads/views/{view_id}/share", dependencies=[auth.CsrfProtected])
async def share_view(
    request: Request,
    user: LeadsUser,
    view_id: int,
    shared: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    services = services_of(request)
    await run_in_threadpool(
        lambda: _view_change(
            lambda: lead_lists.share_view(
                services.engine,
                view_id,
                bool(shared),
                user_id=user.user.id,
                now=services.clock(),
            )
        )
    )
    return RedirectResponse("/leads", status_code=303)


def _view_change(change: Callable[[], object]) -> None:
    try:
        change()
    except CoreNotFound as exc:
        raise NotFoundPage from exc
    except CoreForbidden as exc:
        raise auth.Forbidden from exc


# ---------------------------------------------------------------- bulk actions


@router.post("/leads/bulk", dependencies=[auth.CsrfProtected])
async def bulk_confirm(
    request: Request,
    user: BulkUser,
    action: Annotated[str, Form(max_length=20)] = "",
    rep: Annotated[str, Form(max_length=255)] = "",
    program: Annotated[str, Form(max_length=64)] = "",
    query: Annotated[str, Form(max_length=lead_list_spec.MAX_QUERY_STRING)] = "",
) -> Response:
    """Step one of a bulk action: what it would change, with a button to confirm."""
    services = services_of(request)
    try:
        parsed = _parse_list(services, parse_qsl(query, keep_blank_values=True))
        if action not in BULK_ACTIONS:
            raise BadRequest(f"action: unknown action {action[:20]!r}", field="action")
    except BadRequest as exc:
        return _bad(request, exc)
    text = parsed.query_string(paging=False)
    if action == "export":
        return RedirectResponse("/leads/export.csv" + ("?" + text if text else ""), status_code=303)
    model = services.active_model()
    if action == "enrol":
        nurture = model.spec.nurture
        if nurture is None or program not in {p.key for p in nurture.programs}:
            return _bad(
                request, BadRequest(f"program: no program {program[:64]!r}", field="program")
            )
        ids = await run_in_threadpool(
            lambda: lead_lists.lead_ids(services.engine, parsed, model, rep=user.rep_scope)
        )
        return render(
            request,
            "leads_bulk.html",
            {"action": action, "program": program, "count": len(ids), "query": text},
            active="leads",
        )

    def load() -> dict[str, Any]:
        ids = lead_lists.lead_ids(services.engine, parsed, model, rep=user.rep_scope)
        return {"plan": lead_lists.plan_assign(services.engine, ids, rep), "reps": _reps(request)}

    data = await run_in_threadpool(load)
    if rep not in data["reps"]:
        return _bad(request, BadRequest(f"rep: unknown sales rep {rep[:80]!r}", field="rep"))
    return render(
        request,
        "leads_bulk.html",
        {**data, "action": action, "rep": rep, "query": text, "done": None},
        active="leads",
    )


@router.post("/leads/bulk/apply", dependencies=[auth.CsrfProtected])
async def bulk_apply(
    request: Request,
    user: BulkUser,
    rep: Annotated[str, Form(max_length=255)] = "",
    query: Annotated[str, Form(max_length=lead_list_spec.MAX_QUERY_STRING)] = "",
) -> Response:
    """Step two: assign the accounts of every lead the list matches to ``rep``."""
    services = services_of(request)
    try:
        parsed = _parse_list(services, parse_qsl(query, keep_blank_values=True))
    except BadRequest as exc:
        return _bad(request, exc)
    if rep not in await run_in_threadpool(_reps, request):
        return _bad(request, BadRequest(f"rep: unknown sales rep {rep[:80]!r}", field="rep"))
    model = services.active_model()

    def run() -> lead_lists.AssignResult:
        ids = lead_lists.lead_ids(services.engine, parsed, model, rep=user.rep_scope)
        return lead_lists.assign_owner(services.engine, ids, rep, now=services.clock())

    done = await run_in_threadpool(run)
    cache_of(request).invalidate("owners")
    return render(
        request,
        "leads_bulk.html",
        {
            "action": "assign",
            "rep": rep,
            "query": parsed.query_string(paging=False),
            "done": done,
            "undo": lead_lists.undo_token(done, user.csrf_token),
            "plan": None,
            "reps": [],
        },
        active="leads",
    )


@router.post("/leads/bulk/enrol", dependencies=[auth.CsrfProtected])
async def bulk_enrol(
    request: Request,
    user: BulkUser,
    program: Annotated[str, Form(max_length=64)] = "",
    query: Annotated[str, Form(max_length=lead_list_spec.MAX_QUERY_STRING)] = "",
) -> Response:
    """Step two of "enrol in a program": enrol every lead of the list the program takes.
    There is no undo (the enrolments' first steps are scheduled); each refusal is counted
    with its reason."""
    services = services_of(request)
    model = services.active_model()
    try:
        parsed = _parse_list(services, parse_qsl(query, keep_blank_values=True))

        def run() -> lead_lists.EnrolResult:
            ids = lead_lists.lead_ids(services.engine, parsed, model, rep=user.rep_scope)
            return lead_lists.enrol_all(services.engine, model, program, ids, now=services.clock())

        done = await run_in_threadpool(run)
    except BadRequest as exc:
        return _bad(request, exc)
    return render(
        request,
        "leads_bulk.html",
        {
            "action": "enrol",
            "program": program,
            "enrolled": done,
            "query": parsed.query_string(paging=False),
        },
        active="leads",
    )


@router.post("/leads/bulk/undo", dependencies=[auth.CsrfProtected])
async def bulk_undo(
    request: Request,
    user: BulkUser,
    undo: Annotated[str, Form(max_length=2_000_000)] = "",
    query: Annotated[str, Form(max_length=lead_list_spec.MAX_QUERY_STRING)] = "",
) -> Response:
    """Give the accounts back to their previous owners (those still owned by the rep the
    action assigned: a later change is kept)."""
    services = services_of(request)
    try:
        restored = await run_in_threadpool(
            lambda: lead_lists.undo_assign(
                services.engine, undo, user.csrf_token, now=services.clock()
            )
        )
    except BadRequest as exc:
        return _bad(request, exc)
    cache_of(request).invalidate("owners")
    parsed = parse_qsl(query, keep_blank_values=True)
    target = "/leads?" + urlencode([*parsed, ("undone", str(restored))])
    return RedirectResponse(target, status_code=303)


def _reps(request: Request) -> list[str]:
    services = services_of(request)
    return lead_lists.rep_choices(services.engine)


def _bad(request: Request, exc: Exception) -> HTMLResponse:
    return render(
        request, "error.html", {"code": 400, "kind": "400", "detail": str(exc)}, status_code=400
    )


@router.get("/leads/{lead_id}")
async def lead_page(request: Request, user: LeadsUser, lead_id: int) -> HTMLResponse:
    services = services_of(request)
    exists, owner = await run_in_threadpool(lead_pages.lead_owner, services.engine, lead_id)
    if not exists:
        raise NotFoundPage
    rep = user.rep_scope
    # A rep also opens the leads handed to them (routing is by territory, not owner).
    if (
        rep is not None
        and owner != rep
        and not await run_in_threadpool(handoffs.assigned_to, services.engine, lead_id, rep)
    ):
        raise auth.Forbidden
    detail = await run_in_threadpool(lead_pages.lead_detail, services.engine, lead_id)
    if detail is None:
        raise NotFoundPage
    timeline = [describe(e) for e in detail.timeline]
    scoring = await run_in_threadpool(_lead_scoring, services, lead_id, user.user.locale)
    return render(
        request,
        "lead.html",
        {"d": detail, "timeline": timeline, **scoring},
        active="leads",
    )


def _lead_scoring(services: Services, lead_id: int, locale: str) -> dict[str, Any]:
    """The lead's stage, scores with the rules that made them, and its stage history."""
    now = services.clock()
    model = services.active_model()
    with services.reader.connect() as conn:
        explained = lifecycle.explain(conn, lead_id, model, now)
        history = lifecycle.lead_history(conn, lead_id)
    state = lead_pages.lead_stage(services.engine, lead_id)

    def name(stage: str | None) -> str:
        if stage is None:
            return "–"
        return model.display_name(stage, locale) if stage in model.spec.stages else stage

    rules = sorted(explained["engagement"]["rules"], key=lambda r: -abs(r["points_after_decay"]))
    history.reverse()
    return {
        "stage_label": name(explained["stage"]),
        "stage_since": state["stage_since"] if state else None,
        "x": explained,
        "score_rules": rules,
        "history": [
            {**h, "from_label": name(h["from_stage"]), "to_label": name(h["to_stage"])}
            for h in history
        ],
    }


@router.get("/accounts")
async def accounts_list(
    request: Request,
    user: AccountsUser,
    q: Annotated[str, Query(max_length=200)] = "",
    owner: Annotated[str, Query(max_length=255)] = "",
    after: Annotated[str, Query(max_length=20)] = "",
) -> HTMLResponse:
    services = services_of(request)
    rep = user.rep_scope
    cursor = _int_or_none(after)

    def load() -> dict[str, Any]:
        page = account_pages.list_accounts(
            services.engine, q=q, owner=owner if rep is None else "", rep=rep, after=cursor
        )
        engine = services.engine
        owners = (
            cache_of(request).get(("owners",), lambda: account_pages.account_owners(engine))
            if rep is None
            else []
        )
        return {"page": page, "owners": owners}

    data = await run_in_threadpool(load)
    data.update({"q": q, "owner": owner, "after": cursor})
    template = "_accounts_table.html" if request.headers.get("hx-request") else "accounts.html"
    return render(request, template, data, active="accounts")


@router.get("/accounts/{account_id}")
async def account_page(request: Request, user: AccountsUser, account_id: int) -> HTMLResponse:
    services = services_of(request)
    detail = await run_in_threadpool(account_pages.account_detail, services.engine, account_id)
    if detail is None:
        raise NotFoundPage
    rep = user.rep_scope
    if rep is not None and detail.account["owner"] != rep:
        raise auth.Forbidden
    activity = [describe(e) for e in detail.activity]
    return render(
        request,
        "account.html",
        {"d": detail, "activity": activity, "can_open_leads": user.can("leads.view")},
        active="accounts",
    )
