"""Dashboard sign-in: server-side sessions, signed cookies, CSRF, roles.

- The session cookie holds a random 256-bit token plus an HMAC of it under the signing
  key (:mod:`leadflow.services.signing`: LEADFLOW_SECRET_KEY or the database's random key;
  during a rotation window cookies signed with the previous key are still accepted);
  only the token's SHA-256 is stored (``web_sessions``), so sessions are revocable and a
  database leak does not leak live cookies. HttpOnly, SameSite=Lax, Secure over https
  (and always when ``LEADFLOW_ENV=production``).
- Signing in always creates a new session (no session fixation) and drops the old one.
- CSRF: every session has its own token; every POST must send it as the ``csrf_token``
  form field or the ``X-CSRF-Token`` header (htmx sends the header, see base.html). The
  sign-in form, which has no session yet, uses a double-submit cookie.
- Roles map to permissions in :data:`PERMISSIONS`; pages declare the permission they need.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from sqlalchemy import Engine

from leadflow.bootstrap import Services
from leadflow.entrypoints.web.state import services_of
from leadflow.services import users
from leadflow.services.users import User
from leadflow.settings import Settings

SESSION_COOKIE = "lf_session"
LOGIN_CSRF_COOKIE = "lf_login_csrf"
LOCALE_COOKIE = "lf_locale"
SESSION_LIFETIME = timedelta(days=7)
TOUCH_EVERY = timedelta(minutes=5)
CSRF_HEADER = "x-csrf-token"

# Permission -> roles. Later pages add their permission here and in nav.NAV.
PERMISSIONS: dict[str, frozenset[str]] = {
    "home.view": frozenset({"admin", "marketer", "sales", "executive"}),
    "leads.view": frozenset({"admin", "marketer", "sales"}),
    "leads.bulk": frozenset({"admin", "marketer"}),
    "accounts.view": frozenset({"admin", "marketer", "sales", "executive"}),
    "funnel.view": frozenset({"admin", "marketer", "executive"}),
    "queue.view": frozenset({"admin", "sales"}),
    "model.view": frozenset({"admin", "marketer"}),
    "attribution.view": frozenset({"admin", "marketer", "executive"}),
    "kpis.view": frozenset({"admin", "marketer", "executive"}),
    "programs.view": frozenset({"admin", "marketer"}),
    "content.view": frozenset({"admin", "marketer"}),
    "forms.view": frozenset({"admin", "marketer"}),
    "model.backtest": frozenset({"admin"}),
    "keys.manage": frozenset({"admin"}),
    "users.manage": frozenset({"admin"}),
}


class LoginRequired(Exception):
    """No valid session: pages redirect to /login?next=..., htmx gets HX-Redirect."""


class Forbidden(Exception):
    """Signed in, but the role (or lead ownership) does not allow this: 403."""


class CsrfRejected(Exception):
    """A POST without the session's CSRF token: 403."""


@dataclass(frozen=True, slots=True)
class WebUser:
    user: User
    session_id: int
    csrf_token: str

    def can(self, permission: str) -> bool:
        return self.user.role in PERMISSIONS.get(permission, frozenset())

    @property
    def rep_scope(self) -> str | None:
        """The owner name a sales user is limited to; None means 'sees everything'."""
        if self.user.role == "sales":
            return self.user.sales_rep_key or f"\x00no-rep-{self.user.id}"
        return None


def secret_for(services: Services) -> bytes:
    """The key new cookies are signed with (see :mod:`leadflow.services.signing`)."""
    return services.signing.current()


def _unsign_any(services: Services, signed: str | None) -> str | None:
    """The value of a cookie signed with any key valid now (current or, while a rotation
    window lasts, the previous one)."""
    if not signed:
        return None
    return services.signing.verify(lambda key: _unsign(key, signed), services.clock())


def _sign(secret: bytes, value: str) -> str:
    mac = hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{value}.{mac}"


def _unsign(secret: bytes, signed: str | None) -> str | None:
    if not signed or len(signed) > 200 or "." not in signed:
        return None
    value, _, mac = signed.rpartition(".")
    expected = hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]
    return value if hmac.compare_digest(mac, expected) else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_secure(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.env == "production"


def start_session(
    services: Services, request: Request, response: Response, user: User, now: datetime
) -> None:
    """A brand-new session for ``user`` (any session the browser had is deleted)."""
    secret = secret_for(services)
    old = _unsign_any(services, request.cookies.get(SESSION_COOKIE))
    token = secrets.token_urlsafe(32)
    users.open_session(
        services.engine,
        user_id=user.id,
        token_hash=_token_hash(token),
        csrf_token=secrets.token_urlsafe(32),
        now=now,
        lifetime=SESSION_LIFETIME,
        replaces=_token_hash(old) if old is not None else None,
    )
    response.set_cookie(
        SESSION_COOKIE,
        _sign(secret, token),
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=is_secure(request, services.settings),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")


def end_session(services: Services, request: Request, response: Response) -> None:
    token = _unsign_any(services, request.cookies.get(SESSION_COOKIE))
    if token is not None:
        users.close_session(services.engine, _token_hash(token))
    response.delete_cookie(SESSION_COOKIE, path="/")


def load_session(engine: Engine, token: str | None, now: datetime) -> WebUser | None:
    """The signed-in user of a session token (already taken out of its signed cookie)."""
    if token is None:
        return None
    found = users.find_session(engine, _token_hash(token))
    if found is None or not found.user.active or found.expires_at <= now:
        return None
    if now - found.last_seen_at > TOUCH_EVERY:
        users.touch_session(engine, found.id, now)
    return WebUser(user=found.user, session_id=found.id, csrf_token=found.csrf_token)


def optional_user(request: Request) -> WebUser | None:
    if hasattr(request.state, "web_user"):  # already looked up in this request
        cached: WebUser | None = request.state.web_user
        return cached
    services = services_of(request)
    found = load_session(
        services.engine,
        _unsign_any(services, request.cookies.get(SESSION_COOKIE)),
        services.clock(),
    )
    request.state.web_user = found
    return found


def current_user(request: Request) -> WebUser:
    found = optional_user(request)
    if found is None:
        raise LoginRequired
    return found


CurrentUser = Annotated[WebUser, Depends(current_user)]


def require(permission: str) -> object:
    """Dependency: the signed-in user, who must have ``permission`` (else 403)."""

    def check(request: Request) -> WebUser:
        user = current_user(request)
        if not user.can(permission):
            raise Forbidden
        return user

    return Depends(check)


async def check_csrf(request: Request) -> None:
    """Every POST: the session's token in the header or the ``csrf_token`` form field."""
    user = current_user(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        field = form.get("csrf_token")
        sent = field if isinstance(field, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), user.csrf_token.encode()):
        raise CsrfRejected


CsrfProtected = Depends(check_csrf)


def login_csrf_token(request: Request, services: Services) -> str:
    """The double-submit token for the sign-in form (reused while the cookie is valid)."""
    existing = _unsign_any(services, request.cookies.get(LOGIN_CSRF_COOKIE))
    return existing or secrets.token_urlsafe(24)


def set_login_csrf_cookie(
    request: Request, response: Response, services: Services, token: str
) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        _sign(secret_for(services), token),
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=is_secure(request, services.settings),
        path="/",
    )


def login_csrf_ok(request: Request, services: Services, sent: str | None) -> bool:
    expected = _unsign_any(services, request.cookies.get(LOGIN_CSRF_COOKIE))
    return bool(sent and expected and hmac.compare_digest(sent.encode(), expected.encode()))


def safe_next(target: str | None, default: str = "/home") -> str:
    """Only a local path may follow sign-in: no scheme, no host, no ``//`` or ``/\\``."""
    if not target or len(target) > 2000:
        return default
    if any(ord(c) < 32 or c == "\\" for c in target):
        return default
    if not target.startswith("/") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    if parts.path.startswith(("/login", "/logout")):
        return default
    return target
