"""Outbound webhooks, the pure part: signatures, the retry schedule, payloads, target rules.

Pure: plain data in and out; time and randomness are parameters.

- :func:`sign` makes the ``Leadflow-Signature`` header, ``t=<unix seconds>,v1=<hex>`` where
  ``<hex>`` is HMAC-SHA256 of ``"<t>.<raw body>"`` under the endpoint secret (the Stripe /
  Standard Webhooks scheme). While a secret is being rotated the header carries one ``v1=``
  per valid secret, so a receiver holding either secret verifies.
- :func:`verify` is the receiver's check (re-exported as ``leadflow.webhooks.verify``).
- :func:`next_attempt_at` is the retry schedule: exponential backoff with full jitter,
  capped, and no attempt after the delivery's deadline (24 hours after it was queued).
- :func:`build_payload` turns an outbox row into the JSON body that is sent.
- :func:`check_target_url` refuses URLs that are not plain http(s) (credentials, odd schemes,
  no host). Resolving the host and refusing private addresses is the adapter's job.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

SIGNATURE_HEADER = "Leadflow-Signature"
EVENT_HEADER = "Leadflow-Event"
DELIVERY_HEADER = "Leadflow-Delivery"
DEFAULT_TOLERANCE = 300  # seconds a signature timestamp may differ from the receiver's clock
RETRY_WINDOW = timedelta(hours=24)
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=2)
MAX_URL_LENGTH = 2048

SIGNAL_EVENTS = (
    "lead.routed",
    "lead.accepted",
    "lead.rejected",
    "lead.recycled",
    "lead.returning",
    "lead.escalated",
    "lead.rerouted",
    "opportunity.created",
    "opportunity.won",
    "opportunity.lost",
    "segment.joined",
    "segment.left",
)
STAGE_EVENTS = ("lead.mql", "lead.stage_changed")
EVENT_TYPES = SIGNAL_EVENTS + STAGE_EVENTS
ALL_EVENTS = "*"


class InvalidTarget(ValueError):
    """A webhook URL that may not be used; the message says why."""


# --------------------------------------------------------------------------- signatures


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _secrets(secrets: str | Iterable[str]) -> list[str]:
    found = [secrets] if isinstance(secrets, str) else list(secrets)
    return [s for s in found if s]


def sign(secrets: str | Iterable[str], timestamp: int, body: bytes) -> str:
    """The signature header value: ``t=<timestamp>,v1=<hex>[,v1=<hex>]`` (one per secret)."""
    keys = _secrets(secrets)
    if not keys:
        raise ValueError("secrets: at least one secret is needed to sign")
    return ",".join([f"t={int(timestamp)}"] + [f"v1={_digest(k, timestamp, body)}" for k in keys])


def _unix(now: datetime | float | int) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def verify(
    secrets: str | Iterable[str],
    header: str | None,
    body: bytes,
    now: datetime | float | int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """True when ``header`` signs ``body`` under one of ``secrets`` and its timestamp is
    within ``tolerance`` seconds of ``now`` (an aware datetime or unix seconds).

    Pass the raw request body exactly as received (before any JSON parsing).
    """
    if not header or not isinstance(body, bytes | bytearray):
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not (value.isascii() and value.isdigit()) or len(value) > 12:
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value.strip())
    if timestamp is None or not candidates:
        return False
    if abs(_unix(now) - timestamp) > tolerance:
        return False
    for secret in _secrets(secrets):
        expected = _digest(secret, timestamp, bytes(body))
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return True
    return False


# --------------------------------------------------------------------------- retries


def backoff_ceiling(attempt: int) -> timedelta:
    """The largest wait after failed attempt number ``attempt`` (1-based): 30 s doubling,
    capped at two hours."""
    if attempt < 1:
        raise ValueError("attempt: counts from 1")
    seconds = BASE_DELAY.total_seconds() * 2 ** min(attempt - 1, 30)
    return timedelta(seconds=min(seconds, MAX_DELAY.total_seconds()))


def next_attempt_at(
    attempt: int, failed_at: datetime, deadline: datetime, rng: random.Random
) -> datetime | None:
    """When to try again after failed attempt ``attempt``, or None: dead-letter it.

    Full jitter: a uniform wait in ``[1 s, ceiling]``. A wait that would pass the deadline
    is shortened to one last attempt exactly at the deadline; after it, none.
    """
    if failed_at >= deadline:
        return None
    ceiling = backoff_ceiling(attempt).total_seconds()
    wait = timedelta(seconds=rng.uniform(min(1.0, ceiling), ceiling))
    return min(failed_at + wait, deadline)


# --------------------------------------------------------------------------- subscriptions


def check_event_types(event_types: Sequence[str]) -> list[str]:
    """The subscription list, validated: known event types, or ``["*"]`` for all."""
    if not event_types:
        raise ValueError("event_types: name at least one event type (or '*' for all)")
    unknown = [e for e in event_types if e != ALL_EVENTS and e not in EVENT_TYPES]
    if unknown:
        raise ValueError(
            f"event_types: unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})"
        )
    if ALL_EVENTS in event_types:
        return [ALL_EVENTS]
    return sorted(set(event_types), key=EVENT_TYPES.index)


def subscribed(event_types: Sequence[str], event_type: str) -> bool:
    return ALL_EVENTS in event_types or event_type in event_types


# --------------------------------------------------------------------------- targets


def check_target_url(url: str) -> str:
    """The URL, if it may be a webhook target as written; raises :class:`InvalidTarget`."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidTarget("url: is empty")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidTarget(f"url: longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidTarget("url: contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidTarget(f"url: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidTarget("url: scheme must be http or https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidTarget("url: must not contain credentials (user:password@)")
    if not parts.hostname:
        raise InvalidTarget("url: has no host")
    if port == 0:
        raise InvalidTarget("url: port 0 is not allowed")
    if parts.fragment:
        raise InvalidTarget("url: must not contain a #fragment")
    return url


# --------------------------------------------------------------------------- payloads


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def build_payload(
    event_id: str,
    event_type: str,
    occurred_at: datetime,
    lead: Mapping[str, Any] | None,
    data: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON body of one event. ``id`` is stable across retries and replays (receivers
    de-duplicate on it)."""
    return {
        "id": event_id,
        "type": event_type,
        "occurred_at": _iso(occurred_at),
        "lead": {k: _iso(v) for k, v in lead.items()} if lead is not None else None,
        "data": {k: _iso(v) for k, v in data.items()},
    }


def signal_event(row: Mapping[str, Any], lead: Mapping[str, Any] | None) -> dict[str, Any]:
    """Payload for a ``signals`` outbox row (lead.routed, opportunity.won, ...)."""
    data = dict(row.get("data") or {})
    data.setdefault("rule", row["rule"])
    data.setdefault("model_version", row["model_version"])
    return build_payload(f"sig_{row['id']}", row["name"], row["at"], lead, data)


def stage_events(row: Mapping[str, Any], lead: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Payloads for a ``stage_changes`` row: ``lead.stage_changed``, plus ``lead.mql`` when
    the lead entered the ``mql`` stage."""
    data = {
        "from_stage": row["from_stage"],
        "to_stage": row["to_stage"],
        "rule": row["rule"],
        "model_version": row["model_version"],
        "cause": row.get("cause"),
    }
    found = [build_payload(f"stg_{row['id']}", "lead.stage_changed", row["at"], lead, data)]
    if row["to_stage"] == "mql":
        found.append(build_payload(f"mql_{row['id']}", "lead.mql", row["at"], lead, data))
    return found
