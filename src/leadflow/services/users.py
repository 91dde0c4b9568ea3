"""Dashboard users: create, list, update, authenticate.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile).
Emails are stored lower-cased. A failed sign-in costs one hash verification whether or not
the email exists, so response times do not reveal which addresses have accounts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from leadflow.adapters.db.tables import users, web_sessions

ROLES = ("admin", "marketer", "sales", "executive")
LOCALES = ("en", "ko")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024

_hasher = PasswordHasher()
_dummy: dict[str, str] = {}


def _dummy_hash() -> str:
    """Verified against when the email is unknown, so both paths cost the same."""
    if "hash" not in _dummy:
        _dummy["hash"] = _hasher.hash("leadflow-dummy-password")
    return _dummy["hash"]


class UserError(ValueError):
    """Invalid user input; the message names the field and the reason."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    name: str
    role: str
    locale: str
    sales_rep_key: str | None
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    # IANA time zone for dates on the dashboard; None shows UTC.
    timezone: str | None = None


_COLUMNS = (
    users.c.id,
    users.c.email,
    users.c.name,
    users.c.role,
    users.c.locale,
    users.c.sales_rep_key,
    users.c.active,
    users.c.created_at,
    users.c.last_login_at,
    users.c.timezone,
)


def _user(row: Any) -> User:
    return User(
        id=int(row.id),
        email=row.email,
        name=row.name,
        role=row.role,
        locale=row.locale,
        sales_rep_key=row.sales_rep_key,
        active=bool(row.active),
        created_at=row.created_at,
        last_login_at=row.last_login_at,
        timezone=row.timezone,
    )


def normalise_email(email: str) -> str:
    try:
        checked = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise UserError(f"email: {exc}") from None
    return checked.normalized.lower()


def _check_fields(
    role: str, locale: str, name: str, sales_rep_key: str | None
) -> tuple[str, str | None]:
    if role not in ROLES:
        raise UserError(f"role: must be one of {', '.join(ROLES)}, not {role[:40]!r}")
    if locale not in LOCALES:
        raise UserError(f"locale: must be one of {', '.join(LOCALES)}, not {locale[:40]!r}")
    name = name.strip()
    if not name or len(name) > 255:
        raise UserError("name: must be 1 to 255 characters")
    if sales_rep_key is not None:
        sales_rep_key = sales_rep_key.strip() or None
        if sales_rep_key is not None and len(sales_rep_key) > 255:
            raise UserError("sales_rep_key: must be at most 255 characters")
    if role == "sales" and sales_rep_key is None:
        # Without it a sales user would see nothing; the name is the natural default.
        sales_rep_key = name
    return name, sales_rep_key


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"password: must be at most {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def create_user(
    engine: Engine,
    *,
    email: str,
    password: str,
    role: str,
    now: datetime,
    name: str | None = None,
    locale: str = "en",
    sales_rep_key: str | None = None,
    timezone: str | None = None,
) -> User:
    email = normalise_email(email)
    zone = check_timezone(timezone)
    name, sales_rep_key = _check_fields(role, locale, name or email.split("@")[0], sales_rep_key)
    check_password(password)
    values = {
        "email": email,
        "name": name,
        "role": role,
        "password_hash": hash_password(password),
        "locale": locale,
        "sales_rep_key": sales_rep_key if role == "sales" else None,
        "timezone": zone,
        "active": True,
        "created_at": now,
    }
    try:
        with engine.begin() as conn:
            user_id = conn.execute(users.insert().values(**values).returning(users.c.id))
            new_id = int(user_id.scalar_one())
    except IntegrityError:
        raise UserError(f"email: a user with {email} already exists") from None
    found = get_user(engine, new_id)
    assert found is not None
    return found


def get_user(engine: Engine, user_id: int) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(users.c.id == user_id)).first()
    return _user(row) if row else None


def list_users(engine: Engine) -> list[User]:
    with engine.connect() as conn:
        rows = conn.execute(select(*_COLUMNS).order_by(users.c.role, users.c.email)).all()
    return [_user(r) for r in rows]


def count_users(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(users)).scalar_one())


def authenticate(engine: Engine, email: str, password: str, now: datetime) -> User | None:
    """The active user with this email and password, or None (same cost either way)."""
    if len(password) > MAX_PASSWORD or len(email) > 320:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(*_COLUMNS, users.c.password_hash).where(users.c.email == email.strip().lower())
        ).first()
    stored = row.password_hash if row is not None else _dummy_hash()
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or not row.active:
        return None
    with engine.begin() as conn:
        values: dict[str, Any] = {"last_login_at": now}
        if _hasher.check_needs_rehash(stored):
            values["password_hash"] = hash_password(password)
        conn.execute(update(users).where(users.c.id == row.id).values(**values))
    return _user(row)


def check_timezone(value: str | None) -> str | None:
    """An IANA zone name (``Asia/Seoul``), or None/"" for UTC; anything else is refused."""
    if value is None or value.strip() == "":
        return None
    name = value.strip()
    if len(name) > 64 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*", name):
        raise UserError(f"timezone: {name[:64]!r} is not a time zone name like Asia/Seoul")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"timezone: unknown time zone {name!r}") from None
    return name


def set_timezone(engine: Engine, user_id: int, timezone: str | None) -> None:
    name = check_timezone(timezone)
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == user_id).values(timezone=name))


def set_locale(engine: Engine, user_id: int, locale: str) -> None:
    if locale not in LOCALES:
        raise UserError(f"locale: must be one of {', '.join(LOCALES)}")
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == user_id).values(locale=locale))


def set_active(engine: Engine, user_id: int, active: bool) -> bool:
    """Activate or deactivate; deactivating also ends the user's sessions."""
    with engine.begin() as conn:
        done = conn.execute(update(users).where(users.c.id == user_id).values(active=active))
        if not active:
            conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user_id))
    return bool(done.rowcount)


def set_password(engine: Engine, user_id: int, password: str) -> None:
    check_password(password)
    with engine.begin() as conn:
        conn.execute(
            update(users).where(users.c.id == user_id).values(password_hash=hash_password(password))
        )
        conn.execute(web_sessions.delete().where(web_sessions.c.user_id == user_id))


DEMO_USERS: tuple[tuple[str, str, str], ...] = (
    # (role, email, name)
    ("admin", "admin@leadflow.example", "Alex Admin"),
    ("marketer", "marketer@leadflow.example", "Mina Marketer"),
    ("sales", "sales@leadflow.example", "Sam Sales"),
    ("executive", "exec@leadflow.example", "Erin Executive"),
)


def ensure_demo_users(
    engine: Engine, now: datetime, *, sales_rep_key: str | None = None, password_seed: str = ""
) -> list[tuple[str, str, str]]:
    """One user per role for the demo world: [(role, email, password)]. Existing demo users
    are left as they are (their password is then not known and shown as '(unchanged)').

    Passwords are random unless ``password_seed`` is given (deterministic demo worlds)."""
    import hashlib
    import secrets

    created: list[tuple[str, str, str]] = []
    for role, email, name in DEMO_USERS:
        with engine.connect() as conn:
            exists = conn.execute(select(users.c.id).where(users.c.email == email)).first()
        if exists:
            created.append((role, email, "(unchanged)"))
            continue
        if password_seed:
            password = hashlib.sha256(f"{password_seed}:{email}".encode()).hexdigest()[:16]
        else:
            password = secrets.token_urlsafe(12)
        create_user(
            engine,
            email=email,
            password=password,
            role=role,
            name=name,
            now=now,
            sales_rep_key=sales_rep_key if role == "sales" else None,
        )
        created.append((role, email, password))
    return created


# ---------------------------------------------------------------- dashboard sessions
# The cookie, its signature and the tokens are the web layer's (entrypoints/web/auth.py);
# only the token's hash is stored.


@dataclass(frozen=True, slots=True)
class StoredSession:
    id: int
    csrf_token: str
    expires_at: datetime
    last_seen_at: datetime
    user: User


def open_session(
    engine: Engine,
    *,
    user_id: int,
    token_hash: str,
    csrf_token: str,
    now: datetime,
    lifetime: timedelta,
    replaces: str | None = None,
) -> None:
    """Store a new session (dropping the one with hash ``replaces``, and the user's expired
    sessions) in one transaction."""
    with engine.begin() as conn:
        if replaces is not None:
            conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == replaces))
        conn.execute(
            web_sessions.insert().values(
                token_hash=token_hash,
                user_id=user_id,
                csrf_token=csrf_token,
                created_at=now,
                last_seen_at=now,
                expires_at=now + lifetime,
            )
        )
        # Housekeeping: expired sessions of this user go away at each sign-in.
        conn.execute(
            delete(web_sessions).where(
                web_sessions.c.user_id == user_id, web_sessions.c.expires_at < now
            )
        )


def close_session(engine: Engine, token_hash: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == token_hash))


def find_session(engine: Engine, token_hash: str) -> StoredSession | None:
    """The stored session with this token hash and its user (active or not, expired or
    not: the caller decides)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(
                web_sessions.c.id.label("session_id"),
                web_sessions.c.csrf_token,
                web_sessions.c.expires_at,
                web_sessions.c.last_seen_at,
                *_COLUMNS,
            )
            .join(users, users.c.id == web_sessions.c.user_id)
            .where(web_sessions.c.token_hash == token_hash)
        ).first()
    if row is None:
        return None
    return StoredSession(
        id=int(row.session_id),
        csrf_token=row.csrf_token,
        expires_at=row.expires_at,
        last_seen_at=row.last_seen_at,
        user=_user(row),
    )


def touch_session(engine: Engine, session_id: int, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(web_sessions).where(web_sessions.c.id == session_id).values(last_seen_at=now)
        )
