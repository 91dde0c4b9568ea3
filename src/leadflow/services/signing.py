"""The key that signs what leadflow hands out: email tracking links (``/e/o``, ``/e/c``),
unsubscribe links (``/u``), hosted-form tokens (``/f``) and the dashboard's cookies.

- ``LEADFLOW_SECRET_KEY``, when set, is the key, and the only one.
- Otherwise the database holds a random key (table ``signing_secrets``, one row): migration
  0012 creates it, and it is created again on first use if the row is missing. Nothing
  about it follows from the database URL, so a guessed URL forges nothing.
- :func:`rotate` (``leadflow secret rotate``) makes a new key. New links are signed with
  it at once; the previous key keeps *verifying* (never signing) for a window, 24 h by
  default, as a webhook secret does after rotation (:mod:`leadflow.services.webhooks`).
  Links in email sent before the rotation stop working when the window ends.

Each process caches the keys for :data:`REFRESH_EVERY` seconds. A signature that no cached
key verifies makes the process re-read them (at most once per :data:`RETRY_AFTER`), so a
key rotated by another process is picked up as soon as a link signed with it arrives.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection, Engine, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import signing_secrets

ROTATION_GRACE = timedelta(hours=24)
REFRESH_EVERY = 5.0
RETRY_AFTER = 1.0
ROW_ID = 1

T = TypeVar("T")


@dataclass(frozen=True)
class SigningKeys:
    """The key that signs now, and the one replaced by the last rotation while it still
    verifies. ``source`` is ``setting`` (LEADFLOW_SECRET_KEY) or ``database``."""

    current: bytes
    previous: bytes | None = None
    previous_valid_until: datetime | None = None
    source: str = "database"
    created_at: datetime | None = None

    def verifying(self, now: datetime) -> tuple[bytes, ...]:
        """Every key a signature may be checked against at ``now`` (the current one first)."""
        until = self.previous_valid_until
        if self.previous is not None and until is not None and now < until:
            return (self.current, self.previous)
        return (self.current,)


def new_secret() -> str:
    """64 URL-safe characters from 48 random bytes (384 bits)."""
    return secrets.token_urlsafe(48)


def read_keys(conn: Connection, configured: str | None = None) -> SigningKeys:
    """The keys as stored (LEADFLOW_SECRET_KEY wins); creates the stored key if missing,
    in ``conn``'s transaction (commit it: :func:`load_keys` does)."""
    if configured:
        return SigningKeys(configured.encode(), source="setting")
    query = select(
        signing_secrets.c.secret,
        signing_secrets.c.previous_secret,
        signing_secrets.c.previous_valid_until,
        signing_secrets.c.created_at,
    ).where(signing_secrets.c.id == ROW_ID)
    row = conn.execute(query).first()
    if row is None:
        conn.execute(
            insert_ignore(conn.engine, signing_secrets, "id").values(
                id=ROW_ID, secret=new_secret(), created_at=datetime.now(UTC)
            )
        )
        row = conn.execute(query).one()
    return SigningKeys(
        current=str(row.secret).encode(),
        previous=str(row.previous_secret).encode() if row.previous_secret else None,
        previous_valid_until=row.previous_valid_until,
        created_at=row.created_at,
    )


def load_keys(engine: Engine, configured: str | None = None) -> SigningKeys:
    """:func:`read_keys` in a transaction of its own (a created key is committed)."""
    if configured:
        return SigningKeys(configured.encode(), source="setting")
    with engine.begin() as conn:
        return read_keys(conn)


def rotate(engine: Engine, now: datetime, grace: timedelta = ROTATION_GRACE) -> SigningKeys:
    """A new stored key; the one it replaces verifies until ``now + grace``."""
    if grace < timedelta(0):
        raise ValueError("grace: must not be negative")
    with engine.begin() as conn:
        before = read_keys(conn)
        conn.execute(
            update(signing_secrets)
            .where(signing_secrets.c.id == ROW_ID)
            .values(
                secret=new_secret(),
                created_at=now,
                previous_secret=before.current.decode(),
                previous_valid_until=now + grace,
            )
        )
        return read_keys(conn)


class SigningKeyStore:
    """One process's view of the signing keys (thread-safe, cached)."""

    def __init__(
        self,
        engine: Engine,
        configured: str | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._configured = configured or None
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: SigningKeys | None = None
        self._read_at = float("-inf")

    @property
    def from_setting(self) -> bool:
        return self._configured is not None

    def keys(self, *, refresh: bool = False) -> SigningKeys:
        if self._configured is not None:
            return SigningKeys(self._configured.encode(), source="setting")
        with self._lock:
            clock = self._monotonic()
            if refresh or self._keys is None or clock - self._read_at >= REFRESH_EVERY:
                self._keys = load_keys(self._engine)
                self._read_at = clock
            return self._keys

    def current(self) -> bytes:
        """The key new signatures are made with."""
        return self.keys().current

    def verify(self, check: Callable[[bytes], T | None], now: datetime) -> T | None:
        """The first non-``None`` ``check(key)`` over the keys valid at ``now``; ``None``
        when no key verifies (after re-reading the keys once if they may have changed)."""
        keys = self.keys()
        for key in keys.verifying(now):
            found = check(key)
            if found is not None:
                return found
        if self._configured is not None or self._monotonic() - self._read_at < RETRY_AFTER:
            return None
        fresh = self.keys(refresh=True)
        if fresh == keys:
            return None
        for key in fresh.verifying(now):
            found = check(key)
            if found is not None:
                return found
        return None


__all__ = [
    "ROTATION_GRACE",
    "SigningKeyStore",
    "SigningKeys",
    "load_keys",
    "new_secret",
    "read_keys",
    "rotate",
]
