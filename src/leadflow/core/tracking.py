"""Segment HTTP Tracking API messages: validation and normalisation, as plain data.

A raw JSON message (already decoded) becomes a :class:`TrackedMessage` or a
:class:`MessageError` naming the field (``batch[3].userId: expected a string or number``).
Follows the Segment spec: ``identify``, ``track``, ``page``, ``screen``, ``group``, ``alias``;
``userId`` or ``anonymousId`` required (alias: ``userId`` and ``previousId``); ``timestamp``
corrected for client clock skew with ``sentAt`` exactly as Segment does
(``timestamp = receivedAt - (sentAt - timestamp)``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from leadflow.core.channels import CHANNELS, classify_channel
from leadflow.core.inputs import (
    InputError,
    check_json,
    count_problem,
    date_problem,
    int_problem,
    text_problem,
)

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 255
MAX_DEPTH = 16
EMAIL_RE = re.compile(
    r"^[^@\s<>\"',;:()\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


# Channel classification is pure and live traffic repeats the same UTM tags, referrers
# and pages: remembering recent answers saves most of its cost on the ingest hot path.
_classify_channel = lru_cache(maxsize=8192)(classify_channel)


class MessageError(InputError):
    """A message is refused; ``field`` is the path of the offending field."""


@dataclass(frozen=True, slots=True)
class TrackedMessage:
    """One validated tracking call, normalised."""

    message_id: str
    type: str
    occurred_at: datetime
    anonymous_id: str | None = None
    user_id: str | None = None
    name: str | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    previous_id: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    utm_campaign: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    channel: str | None = None

    @property
    def email(self) -> str | None:
        """The e-mail address in the traits (already validated, lower-cased), if any."""
        value = self.traits.get("email")
        return value if isinstance(value, str) and value else None


def normalise_email(value: str) -> str:
    return value.strip().lower()


def email_hash(email: str) -> str:
    """sha256 of the normalised (trimmed, lower-cased) address: how suppressions store it."""
    return hashlib.sha256(normalise_email(email).encode("utf-8")).hexdigest()


def is_valid_email(value: str) -> bool:
    return len(value) <= 320 and EMAIL_RE.fullmatch(value) is not None


def parse_timestamp(value: Any, field_name: str) -> datetime:
    if not isinstance(value, str):
        raise MessageError(field_name, "expected an ISO 8601 date-time string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise MessageError(field_name, f"not an ISO 8601 date-time: {value[:40]!r}") from None


def _identifier(raw: Mapping[str, Any], key: str, path: str, nul_free: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MessageError(f"{path}{key}", "expected a string or an integer")
    if isinstance(value, int) and (problem := int_problem(value)) is not None:
        raise MessageError(f"{path}{key}", problem)
    text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        raise MessageError(f"{path}{key}", f"longer than {MAX_ID_LENGTH} characters")
    if not nul_free and (problem := text_problem(text)) is not None:
        raise MessageError(f"{path}{key}", problem)
    return text


def _object(raw: Mapping[str, Any], key: str, path: str, nul_free: bool = False) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError(f"{path}{key}", "expected an object")
    if nul_free:
        if value:
            _check_depth(value, f"{path}{key}", 0)
    else:
        _check_json_value(value, f"{path}{key}", 0)
    return value


_NUL_ESCAPED = b"\\u0000"


def _has_no_nul(value: Any) -> bool:
    """True if nothing in ``value`` can break :func:`check_json`: orjson escapes NUL as
    ``\\u0000`` (so its absence from the encoding proves there is none), refuses lone
    surrogates and, with ``OPT_STRICT_INTEGER``, integers beyond 2^53 — one C call for a
    whole batch. False when unsure (a NUL is there, or ``value`` is not plain JSON): the
    caller then checks value by value."""
    try:
        return _NUL_ESCAPED not in orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except (TypeError, ValueError):
        return False


def _check_depth(value: dict[str, Any] | list[Any], path: str, depth: int) -> None:
    """:func:`_check_json_value` for a value known to hold no NUL: nesting only."""
    if depth > MAX_DEPTH:
        raise MessageError(path, f"nested deeper than {MAX_DEPTH} levels")
    pairs: Any = value.items() if isinstance(value, dict) else enumerate(value)
    for k, v in pairs:
        if isinstance(v, dict | list):
            _check_depth(v, _child(path, k), depth + 1)


def _check_json_value(value: Any, path: str, depth: int) -> None:
    """Refuse what neither backend can store faithfully (:func:`check_json`: NUL
    characters and lone surrogates, which PostgreSQL text and JSONB reject, integers
    beyond 64 bits, non-finite numbers) and absurd nesting, naming the path."""
    try:
        check_json(value, path, MAX_DEPTH - depth)
    except InputError as exc:
        raise MessageError(exc.field, exc.reason) from None


def _child(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


COUNT_TRAITS = ("employees", "employee_count")
"""Traits stored in an integer column (``accounts.employee_count``): bounded at the door."""


def _check_counts(traits: Mapping[str, Any], path: str) -> None:
    for key in COUNT_TRAITS:
        if key in traits and (problem := count_problem(traits[key])) is not None:
            raise MessageError(f"{path}.{key}", problem)


def _optional_str(value: Any, path: str, max_length: int = 2048) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageError(path, "expected a string")
    if len(value) > max_length:
        raise MessageError(path, f"longer than {max_length} characters")
    return value or None  # text already checked with the object it comes from


def parse_message(
    raw: Any,
    *,
    received_at: datetime,
    sent_at: datetime | None = None,
    type_hint: str | None = None,
    path: str = "",
    new_message_id: Callable[[], Any] | None = None,
    batch_context: Mapping[str, Any] | None = None,
) -> TrackedMessage:
    """Validate one Segment message. ``type_hint`` is the endpoint's type (``/v1/track``);
    inside a batch the message's own ``type`` is required. ``path`` prefixes field names
    in errors (``batch[3].``). ``new_message_id`` makes ids for messages without one.
    ``batch_context`` is a batch's top-level ``context``; the message's own keys win."""
    return _parse_message(
        raw,
        received_at=received_at,
        sent_at=sent_at,
        type_hint=type_hint,
        path=path,
        new_message_id=new_message_id,
        batch_context=batch_context,
        nul_free=_has_no_nul(raw),
    )


def _parse_message(
    raw: Any,
    *,
    received_at: datetime,
    sent_at: datetime | None,
    type_hint: str | None,
    path: str,
    new_message_id: Callable[[], Any] | None,
    batch_context: Mapping[str, Any] | None,
    nul_free: bool,
) -> TrackedMessage:
    """:func:`parse_message`; ``nul_free`` says ``raw`` is known to hold no NUL character."""
    if not isinstance(raw, dict):
        raise MessageError(path.rstrip(".") or "body", "expected a JSON object")
    msg_type = raw.get("type", type_hint)
    if msg_type is None:
        raise MessageError(f"{path}type", f"required; one of {', '.join(MESSAGE_TYPES)}")
    if not isinstance(msg_type, str) or msg_type not in MESSAGE_TYPES:
        raise MessageError(f"{path}type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    if type_hint is not None and msg_type != type_hint:
        raise MessageError(f"{path}type", f"is {msg_type!r} but this endpoint takes {type_hint!r}")

    user_id = _identifier(raw, "userId", path, nul_free)
    anonymous_id = _identifier(raw, "anonymousId", path, nul_free)
    previous_id = _identifier(raw, "previousId", path, nul_free) if msg_type == "alias" else None
    group_id = _identifier(raw, "groupId", path, nul_free) if msg_type == "group" else None
    if msg_type == "alias":
        if user_id is None:
            raise MessageError(f"{path}userId", "required for alias")
        if previous_id is None:
            raise MessageError(f"{path}previousId", "required for alias")
    elif user_id is None and anonymous_id is None:
        raise MessageError(f"{path}userId", "userId or anonymousId is required")
    if msg_type == "group" and group_id is None:
        raise MessageError(f"{path}groupId", "required for group")

    message_id = _identifier(raw, "messageId", path, nul_free)
    if message_id is None:
        message_id = str(new_message_id() if new_message_id else uuid.uuid4())

    name: str | None = None
    if msg_type == "track":
        event = raw.get("event")
        if not isinstance(event, str) or not event.strip():
            raise MessageError(f"{path}event", "required; the name of the action (a string)")
        if len(event) > MAX_NAME_LENGTH:
            raise MessageError(f"{path}event", f"longer than {MAX_NAME_LENGTH} characters")
        if not nul_free and (problem := text_problem(event)) is not None:
            raise MessageError(f"{path}event", problem)
        name = event.strip()
    elif msg_type in ("page", "screen"):
        name = _optional_str(raw.get("name"), f"{path}name", MAX_NAME_LENGTH)
        if name is not None and not nul_free and (problem := text_problem(name)) is not None:
            raise MessageError(f"{path}name", problem)

    traits = _object(raw, "traits", path, nul_free)
    properties = _object(raw, "properties", path, nul_free)
    context = _object(raw, "context", path, nul_free)
    if batch_context:
        context = {**batch_context, **context}
    _object(raw, "integrations", path, nul_free)
    if msg_type in ("identify", "group"):
        _check_counts(traits, f"{path}traits")
        company = traits.get("company")
        if msg_type == "identify" and isinstance(company, dict):
            _check_counts(company, f"{path}traits.company")
            # Stored as the account's external id (a 255-character column), like groupId.
            _identifier(company, "id", f"{path}traits.company.")
    if "email" in traits:
        email = traits["email"]
        if email is not None and not isinstance(email, str):
            raise MessageError(f"{path}traits.email", "expected a string")
        email = normalise_email(email) if email else ""
        if not email:
            # An empty e-mail trait means "no e-mail"; it never erases a stored one.
            traits = {k: v for k, v in traits.items() if k != "email"}
        elif not is_valid_email(email):
            raise MessageError(f"{path}traits.email", "not a valid e-mail address")
        else:
            traits = {**traits, "email": email}

    own_sent = raw.get("sentAt")
    sent = parse_timestamp(own_sent, f"{path}sentAt") if own_sent is not None else sent_at
    if raw.get("timestamp") is not None:
        occurred_at = parse_timestamp(raw["timestamp"], f"{path}timestamp")
        if sent is not None:
            # Segment's clock-skew correction: the device clock may be wrong, but the
            # distance between the event and the upload (both on that clock) is right.
            try:
                occurred_at = received_at - (sent - occurred_at)
            except OverflowError:
                raise MessageError(
                    f"{path}timestamp", "too far from sentAt to correct for clock skew"
                ) from None
    else:
        occurred_at = received_at
    if (problem := date_problem(occurred_at)) is not None:
        raise MessageError(f"{path}timestamp", problem)

    raw_page, raw_campaign = context.get("page"), context.get("campaign")
    page: Mapping[str, Any] = raw_page if isinstance(raw_page, dict) else {}
    campaign: Mapping[str, Any] = raw_campaign if isinstance(raw_campaign, dict) else {}
    page_url = _optional_str(
        properties.get("url") if msg_type in ("page", "screen") else None, f"{path}properties.url"
    ) or _optional_str(page.get("url"), f"{path}context.page.url")
    referrer = _optional_str(
        properties.get("referrer") if msg_type in ("page", "screen") else None,
        f"{path}properties.referrer",
    ) or _optional_str(page.get("referrer"), f"{path}context.page.referrer")
    utm_campaign = _optional_str(campaign.get("name"), f"{path}context.campaign.name", 255)
    utm_source = _optional_str(campaign.get("source"), f"{path}context.campaign.source", 255)
    utm_medium = _optional_str(campaign.get("medium"), f"{path}context.campaign.medium", 255)
    channel = properties.get("channel") if msg_type == "track" else None
    if isinstance(channel, str):
        channel = channel.strip().lower()
    if channel not in CHANNELS:
        channel = None
        if msg_type in ("page", "screen", "track"):
            channel = _classify_channel(
                utm_medium=utm_medium,
                utm_source=utm_source,
                referrer=referrer,
                page_url=page_url,
                event=name if msg_type == "track" else None,
            )
    return TrackedMessage(
        message_id=message_id,
        type=msg_type,
        occurred_at=occurred_at,
        anonymous_id=anonymous_id,
        user_id=user_id,
        name=name,
        traits=traits,
        properties=properties,
        context=context,
        group_id=group_id,
        previous_id=previous_id,
        page_url=page_url,
        referrer=referrer,
        utm_campaign=utm_campaign,
        utm_source=utm_source,
        utm_medium=utm_medium,
        channel=channel,
    )


def parse_batch(
    body: Any, *, received_at: datetime, new_message_id: Callable[[], Any] | None = None
) -> list[TrackedMessage]:
    """Validate a ``/v1/batch`` body; the first bad message refuses the whole batch.

    A top-level ``sentAt`` applies to every message without its own; a top-level
    ``context`` is merged under each message's context (Segment's batch semantics)."""
    if not isinstance(body, dict):
        raise MessageError("body", "expected a JSON object")
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise MessageError("batch", "required; a list of messages")
    sent_at = parse_timestamp(body["sentAt"], "sentAt") if body.get("sentAt") else None
    batch_context = _object(body, "context", "")
    nul_free = _has_no_nul(batch)
    return [
        _parse_message(
            item,
            received_at=received_at,
            sent_at=sent_at,
            type_hint=None,
            path=f"batch[{i}].",
            new_message_id=new_message_id,
            batch_context=batch_context,
            nul_free=nul_free,
        )
        for i, item in enumerate(batch)
    ]
