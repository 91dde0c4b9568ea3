"""Error pages and redirects for the dashboard's own exceptions (the API keeps JSON)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from leadflow.entrypoints.web.auth import CsrfRejected, Forbidden, LoginRequired
from leadflow.entrypoints.web.rendering import render


class NotFoundPage(Exception):
    """A dashboard record that does not exist: 404 page."""


def install(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        login = "/login?next=" + quote(target, safe="/")
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": login})
        return RedirectResponse(login, status_code=303)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, _exc: Forbidden) -> Response:
        return render(request, "error.html", {"code": 403, "kind": "403"}, status_code=403)

    @app.exception_handler(CsrfRejected)
    async def _csrf(request: Request, _exc: CsrfRejected) -> Response:
        return render(request, "error.html", {"code": 403, "kind": "csrf"}, status_code=403)

    def _bad_input(request: Request, exc: Exception) -> Response:
        # A refused parameter or form field (entrypoints.api.inputs): 400, naming it.
        context = {"code": 400, "kind": "400", "detail": str(exc)}
        return render(request, "error.html", context, status_code=400)

    app.state.input_error_page = _bad_input

    @app.exception_handler(NotFoundPage)
    async def _not_found(request: Request, _exc: NotFoundPage) -> Response:
        return render(request, "error.html", {"code": 404, "kind": "404"}, status_code=404)
