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
  no host). :func:`address_refusal` says why an IP address may not be called (loopback,
  private, link-local, ..., and IPv6 forms that carry such an IPv4 address: 6to4, Teredo,
  NAT64, IPv4-mapped/compatible/translated). Resolving the host, checking every address
  and connecting to the checked one is the adapter's job.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from leadflow.core import errors
from leadflow.core.retry import WEBHOOK_RETRY

SIGNATURE_HEADER = "Leadflow-Signature"
EVENT_HEADER = "Leadflow-Event"
DELIVERY_HEADER = "Leadflow-Delivery"
DEFAULT_TOLERANCE = 300  # seconds a signature timestamp may differ from the receiver's clock
RETRY_WINDOW: timedelta = WEBHOOK_RETRY.expiry or timedelta(hours=24)
BASE_DELAY = WEBHOOK_RETRY.base
MAX_DELAY = WEBHOOK_RETRY.cap
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


class InvalidTarget(errors.InvalidInput):
    """A webhook URL that may not be used; the message says why."""


# --------------------------------------------------------------------------- addresses

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# IPv4 ranges refused besides what ``ipaddress`` flags (its tables differ across Pythons).
_V4_REFUSED = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
_NAT64 = _V6("64:ff9b::/96")  # RFC 6052 well-known prefix: the IPv4 address is the last 32 bits
_NAT64_LOCAL = _V6("64:ff9b:1::/48")  # RFC 8215 local use: embedding depends on the network
_SIX_TO_FOUR = _V6("2002::/16")  # RFC 3056 (deprecated, RFC 7526): relays reach the IPv4 inside
_TEREDO = _V6("2001::/32")  # RFC 4380: tunnelled through a relay to the client inside
_V4_MAPPED = _V6("::ffff:0:0/96")  # ::ffff:a.b.c.d, a dual-stack socket connects to a.b.c.d
_V4_TRANSLATED = _V6("::ffff:0:0:0/96")  # RFC 2765 SIIT
_V4_COMPATIBLE = _V6("::/96")  # ::a.b.c.d (deprecated, RFC 4291)
_V6_REFUSED = (
    (_V6("::1/128"), "loopback"),
    (_V6("::/128"), "unspecified"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("fc00::/7"), "private (unique local)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("100::/64"), "discard-only"),
    (_V6("2001:db8::/32"), "documentation"),
)


def _v4_refusal(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _V4_REFUSED:
        if ip in network:
            return reason
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "not globally routable"
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the mechanism's name, if any."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _V4_MAPPED:
        return "IPv4-mapped", low32
    if ip in _V4_TRANSLATED:
        return "IPv4-translated", low32
    if ip in _NAT64:
        return "NAT64", low32
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _V4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", low32
    return None


def address_refusal(address: str | IPAddress) -> str | None:
    """Why webhooks may not call ``address`` (a short phrase naming the kind of address,
    never the address), or ``None`` when it is a public unicast address.

    IPv6 transition forms are judged by what they reach: IPv4-mapped, IPv4-translated and
    NAT64 (``64:ff9b::/96``) addresses by the IPv4 address inside; 6to4 (``2002::/16``),
    Teredo (``2001::/32``), IPv4-compatible (``::/96``) and local-use NAT64
    (``64:ff9b:1::/48``) are refused whatever they carry (deprecated or local tunnels
    whose far end leadflow cannot vouch for)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_refusal(ip)
    if ip.scope_id is not None:
        ip = ipaddress.IPv6Address(int(ip))
    for network, reason in _V6_REFUSED:
        if ip in network:
            return reason
    carried = embedded_ipv4(ip)
    if carried is not None:
        kind, inner = carried
        if kind in ("6to4", "Teredo", "IPv4-compatible"):
            return f"{kind} (an IPv6 tunnel to an IPv4 host)"
        inner_reason = _v4_refusal(inner)
        return f"{kind}, carrying a {inner_reason} IPv4 address" if inner_reason else None
    if ip in _NAT64_LOCAL:
        return "local-use NAT64"
    if ip.is_private or ip.is_reserved or ip.is_site_local or not ip.is_global:
        return "not globally routable"
    return None


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
            if not (value.isdigit() and value.isascii()) or len(value) > 12:
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
    capped at two hours (:data:`~leadflow.core.retry.WEBHOOK_RETRY`)."""
    return WEBHOOK_RETRY.ceiling(attempt)


def next_attempt_at(
    attempt: int, failed_at: datetime, deadline: datetime, rng: random.Random
) -> datetime | None:
    """When to try again after failed attempt ``attempt``, or None: dead-letter it.

    Full jitter: a uniform wait in ``[1 s, ceiling]``. A wait that would pass the deadline
    is shortened to one last attempt exactly at the deadline; after it, none. The policy is
    :data:`~leadflow.core.retry.WEBHOOK_RETRY`, the one retry policy of
    :mod:`leadflow.core.retry`.
    """
    return WEBHOOK_RETRY.next_at(attempt, failed_at, deadline=deadline, rng=rng)


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


def stage_events(
    row: Mapping[str, Any], lead: Mapping[str, Any] | None, handoff_stage: str
) -> list[dict[str, Any]]:
    """Payloads for a ``stage_changes`` row: ``lead.stage_changed``, plus ``lead.mql`` when
    the lead entered ``handoff_stage`` (the model's stage with role ``handoff``)."""
    data = {
        "from_stage": row["from_stage"],
        "to_stage": row["to_stage"],
        "rule": row["rule"],
        "model_version": row["model_version"],
        "cause": row.get("cause"),
    }
    found = [build_payload(f"stg_{row['id']}", "lead.stage_changed", row["at"], lead, data)]
    if row["to_stage"] == handoff_stage:
        found.append(build_payload(f"mql_{row['id']}", "lead.mql", row["at"], lead, data))
    return found
