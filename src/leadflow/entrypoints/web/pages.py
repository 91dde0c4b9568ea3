"""Home, leads and accounts pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from leadflow.adapters.db.repositories import account_pages, dashboard, handoffs, lead_pages
from leadflow.bootstrap import Services
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.errors import NotFoundPage
from leadflow.entrypoints.web.rendering import render
from leadflow.entrypoints.web.state import cache_of, services_of
from leadflow.entrypoints.web.timeline import describe
from leadflow.services import lifecycle

router = APIRouter(include_in_schema=False)

HomeUser = Annotated[auth.WebUser, auth.require("home.view")]
LeadsUser = Annotated[auth.WebUser, auth.require("leads.view")]
AccountsUser = Annotated[auth.WebUser, auth.require("accounts.view")]


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


@router.get("/leads")
async def leads_list(
    request: Request,
    user: LeadsUser,
    q: Annotated[str, Query(max_length=200)] = "",
    source: Annotated[str, Query(max_length=100)] = "",
    owner: Annotated[str, Query(max_length=255)] = "",
    account: Annotated[str, Query(max_length=20)] = "",
    after: Annotated[str, Query(max_length=20)] = "",
) -> HTMLResponse:
    services = services_of(request)
    rep = user.rep_scope
    filters = lead_pages.LeadFilters(
        q=q.strip(),
        source=source,
        account_id=_int_or_none(account),
        owner=owner if rep is None else "",
    )
    cursor = _int_or_none(after)

    def load() -> dict[str, Any]:
        page = lead_pages.list_leads(services.engine, filters, rep=rep, after=cursor)
        cache, engine = cache_of(request), services.engine
        sources = cache.get(("sources",), lambda: lead_pages.lead_sources(engine))
        owners = (
            cache.get(("owners",), lambda: account_pages.account_owners(engine))
            if rep is None
            else []
        )
        account_label = (
            account_pages.account_name(services.engine, filters.account_id)
            if filters.account_id is not None
            else None
        )
        return {
            "page": page,
            "sources": sources,
            "owners": owners,
            "account_label": account_label,
        }

    data = await run_in_threadpool(load)
    data.update({"filters": filters, "after": cursor})
    template = "_leads_table.html" if request.headers.get("hx-request") else "leads.html"
    return render(request, template, data, active="leads")


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
