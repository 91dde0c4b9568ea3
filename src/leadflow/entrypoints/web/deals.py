"""The deal list (``/deals``): what the deal figures of the funnel and KPI pages link to.

Filters by status (at an instant, as the deal funnel reads it), opened and closed periods,
owner, currency and account (:mod:`leadflow.core.deal_lists`); a bad parameter answers 400
with the parameter named, the list then unfiltered. Open to the roles that see the deal
figures (``funnel.view``).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from leadflow.core import deal_lists as spec
from leadflow.core.deals import DEAL_STAGES
from leadflow.core.lead_lists import ListQueryError
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.rendering import render
from leadflow.entrypoints.web.state import services_of
from leadflow.services import deal_lists

router = APIRouter(include_in_schema=False)
DealsUser = Annotated[auth.WebUser, auth.require("funnel.view")]


@router.get("/deals")
async def deals_page(request: Request, user: DealsUser) -> HTMLResponse:
    services = services_of(request)
    try:
        query, error = spec.parse(request.query_params.multi_items()), ""
    except ListQueryError as exc:
        query, error = spec.DealQuery(), str(exc)

    def load() -> dict[str, Any]:
        return {
            "page": deal_lists.list_page(services.engine, query),
            "currencies": deal_lists.currencies(services.engine),
            "owners": deal_lists.owners(services.engine),
        }

    data = await run_in_threadpool(load)

    def link(**changes: Any) -> str:
        moved = query.with_page(changes.get("page", query.page))
        text = moved.query_string()
        return "/deals" + (f"?{text}" if text else "")

    def sort_link(column: str) -> str:
        descending = not (query.sort == column and query.descending)
        params = [(k, v) for k, v in query.params(paging=False) if k != "sort"]
        params.append(("sort", ("-" if descending else "") + column))
        return "/deals?" + urlencode(params)

    data.update(
        {
            "q": query,
            "error": error,
            "statuses": DEAL_STAGES,
            "link": link,
            "sort_link": sort_link,
            "sortable": spec.SORTABLE,
        }
    )
    return render(request, "deals.html", data, active="funnel", status_code=400 if error else 200)
