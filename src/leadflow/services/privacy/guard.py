"""The suppression guard: an erased address is never stored or mailed again, by any path.

Erasure keeps a SHA-256 of the address in ``suppressions``. Every path that stores or mails
an address asks here: tracking (any trait, property, context value or id of any message),
forms, imports, CRM updates and the test e-mail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import suppressions
from leadflow.core import errors
from leadflow.core.tracking import TrackedMessage, email_hash
from leadflow.services.privacy.scrub import addresses_in, strip_addresses, strip_text

CHUNK = 500


class AddressSuppressed(errors.Conflict):
    """The address was erased on request: it is never contacted again."""


def suppress(conn: Connection, email: str, *, reason: str, now: datetime) -> None:
    conn.execute(
        insert_ignore(conn.engine, suppressions, "email_hash").values(
            email_hash=email_hash(email), reason=reason[:64], created_at=now
        )
    )


def suppressed_among(conn: Connection, addresses: Iterable[str]) -> set[str]:
    """The addresses (lower-cased) among ``addresses`` that were erased."""
    by_hash = {email_hash(a): a.strip().lower() for a in addresses if a and a.strip()}
    if not by_hash:
        return set()
    hashes = list(by_hash)
    found: set[str] = set()
    for start in range(0, len(hashes), CHUNK):
        found.update(
            by_hash[h]
            for h in conn.execute(
                select(suppressions.c.email_hash).where(
                    suppressions.c.email_hash.in_(hashes[start : start + CHUNK])
                )
            ).scalars()
        )
    return found


def is_suppressed(conn: Connection, email: str) -> bool:
    """True when this address was erased and must never be contacted again."""
    return bool(suppressed_among(conn, [email]))


def refuse_suppressed(conn: Connection, email: str, field: str) -> None:
    """Raise :class:`AddressSuppressed` (naming ``field``) for an erased address."""
    if is_suppressed(conn, email):
        raise AddressSuppressed(f"{field}: this address was erased on request and is never used")


def without_suppressed(conn: Connection, *values: Any) -> tuple[Any, ...]:
    """``values`` (strings, JSON) with every erased address taken out (see
    :func:`~leadflow.services.privacy.scrub.strip_addresses`)."""
    blocked = suppressed_among(conn, addresses_in(*values))
    if not blocked:
        return values
    return tuple(strip_addresses(v, blocked) for v in values)


_ID_FIELDS = ("user_id", "anonymous_id", "previous_id")
_TEXT_FIELDS = (
    "name",
    "group_id",
    "page_url",
    "referrer",
    "utm_campaign",
    "utm_source",
    "utm_medium",
)


def _parts(m: TrackedMessage) -> tuple[Any, ...]:
    """Everything in a message that could hold an address (``_ID_FIELDS`` and
    ``_TEXT_FIELDS`` spelled out: this runs for every tracked message)."""
    return (
        m.traits,
        m.properties,
        m.context,
        m.user_id,
        m.anonymous_id,
        m.previous_id,
        m.name,
        m.group_id,
        m.page_url,
        m.referrer,
        m.utm_campaign,
        m.utm_source,
        m.utm_medium,
    )


def guard_messages(
    conn: Connection, messages: Sequence[TrackedMessage]
) -> list[TrackedMessage | None]:
    """Tracked messages with every erased address taken out of their traits, properties,
    context, URLs and ids; None for a message whose only identifier was such an address
    (it is not stored). One query per call, and none when no message holds an address."""
    found = addresses_in(*(_parts(m) for m in messages))
    blocked = frozenset(suppressed_among(conn, found)) if found else frozenset()
    if not blocked:
        return list(messages)
    return [_guard_one(m, blocked) for m in messages]


def _guard_one(msg: TrackedMessage, blocked: frozenset[str]) -> TrackedMessage | None:
    if not addresses_in(_parts(msg)) & blocked:
        return msg
    changes: dict[str, Any] = {
        "traits": strip_addresses(dict(msg.traits), blocked),
        "properties": strip_addresses(dict(msg.properties), blocked),
        "context": strip_addresses(dict(msg.context), blocked),
    }
    for name in _ID_FIELDS:
        value = getattr(msg, name)
        if value is not None and strip_text(value, blocked) != value:
            changes[name] = None
    for name in _TEXT_FIELDS:
        value = getattr(msg, name)
        if value is not None:
            changes[name] = strip_text(value, blocked)
    guarded = dataclasses.replace(msg, **changes)
    if guarded.user_id is None and guarded.anonymous_id is None:
        return None
    if guarded.type == "alias" and (guarded.user_id is None or guarded.previous_id is None):
        return None
    return guarded
