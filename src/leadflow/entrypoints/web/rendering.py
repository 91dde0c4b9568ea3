"""Jinja2 environment (autoescape on for every template) and the page renderer."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from leadflow import __version__
from leadflow.entrypoints.web.auth import LOCALE_COOKIE, WebUser, optional_user
from leadflow.entrypoints.web.i18n import Translator, pick_locale
from leadflow.entrypoints.web.nav import nav_for
from leadflow.entrypoints.web.state import services_of

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its extension
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json_attr"] = _json_attr
    env.globals["version"] = __version__
    return env


def _json_attr(value: Any) -> Markup:
    """JSON for a data-* attribute: escaped like any attribute value."""
    from markupsafe import escape

    return escape(json.dumps(value, ensure_ascii=False, default=str))


def locale_for(request: Request, user: WebUser | None) -> str:
    if user is not None:
        return user.user.locale
    return pick_locale(request.cookies.get(LOCALE_COOKIE), request.headers.get("accept-language"))


COMMON_ZONES = (
    "UTC",
    "Asia/Seoul",
    "Asia/Tokyo",
    "Asia/Singapore",
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
)


def translator_for(request: Request, user: WebUser | None) -> Translator:
    """The page's translator: the user's language and time zone."""
    return Translator(locale_for(request, user), user.user.timezone if user is not None else None)


def display_name(row: Any, t: Translator) -> str:
    first = (row.get("first_name") or "").strip()
    last = (row.get("last_name") or "").strip()
    if t.locale == "ko" and first and last and not first.isascii():
        name = f"{last}{first}"
    else:
        name = " ".join(p for p in (first, last) if p)
    return name or row.get("email") or t("unnamed")


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    active: str = "",
) -> HTMLResponse:
    user = optional_user(request)
    t = translator_for(request, user)
    services = services_of(request)
    ctx: dict[str, Any] = {
        "request": request,
        "user": user,
        "t": t,
        "now": services.clock(),
        "nav": nav_for(user) if user is not None else [],
        "active": active,
        "zones": COMMON_ZONES,
        "csrf_token": user.csrf_token if user is not None else "",
        "display_name": lambda row: display_name(row, t),
        "query": lambda **kw: _query(request, **kw),
    }
    ctx.update(context or {})
    html = environment().get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status_code)


def _query(request: Request, **changes: Any) -> str:
    """The current query string with some parameters changed (None removes one)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params) if params else "?"
