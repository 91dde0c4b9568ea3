"""API keys: write keys for the tracking API, admin tokens for the management API.

Only a SHA-256 of each key is stored. Keys are 32 random bytes, so a fast hash is as safe
as a slow one here (there is nothing to brute-force), and checking a key costs microseconds
on the tracking hot path. Verified keys are cached for a few seconds per process.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select, update

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.tables import api_keys

KINDS = ("write", "admin")
PREFIX = {"write": "lfw_", "admin": "lfa_"}
CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: int
    kind: str
    name: str
    token: str


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(engine: Engine, *, kind: str, name: str, now: datetime) -> CreatedKey:
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}")
    name = name.strip()
    if not name or len(name) > 255:
        raise ValueError("name: must be 1 to 255 characters")
    token = PREFIX[kind] + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        key_id = conn.execute(
            api_keys.insert()
            .values(
                kind=kind, name=name, prefix=token[:8], key_hash=hash_key(token), created_at=now
            )
            .returning(api_keys.c.id)
        ).scalar_one()
    return CreatedKey(id=int(key_id), kind=kind, name=name, token=token)


def revoke_key(engine: Engine, key_id: int, now: datetime) -> bool:
    with engine.begin() as conn:
        done = conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    return bool(done.rowcount)


def any_keys(conn: Connection) -> bool:
    """Whether any API key was ever created (revoked ones count)."""
    return conn.execute(select(api_keys.c.id).limit(1)).first() is not None


def list_keys(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                api_keys.c.id,
                api_keys.c.kind,
                api_keys.c.name,
                api_keys.c.prefix,
                api_keys.c.created_at,
                api_keys.c.revoked_at,
            ).order_by(api_keys.c.id)
        ).mappings()
        return [dict(r) for r in rows]


class KeyChecker:
    """Answers "is this token a live key of this kind?" with a short per-process cache."""

    def __init__(self, engine: Engine, ttl: float = CACHE_SECONDS) -> None:
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, str | None]] = {}

    def peek(self, token: str) -> tuple[bool, str | None]:
        """``(True, kind)`` when the answer is known without the database (cached, or a
        token that cannot be a key); ``(False, None)`` when :meth:`kind_of` must look."""
        if not token or len(token) > 200:
            return True, None
        hit = self._cache.get(hash_key(token))
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def kind_of(self, token: str) -> str | None:
        if not token or len(token) > 200:
            return None
        digest = hash_key(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        with read_only(self.engine).connect() as conn:
            kind = conn.execute(
                select(api_keys.c.kind).where(
                    api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
                )
            ).scalar_one_or_none()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.ttl, kind)
        return kind
