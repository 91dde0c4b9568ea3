"""The Segment message parser: every refusal names its field; accepted input is normalised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from leadflow.core.tracking import (
    MAX_DEPTH,
    MessageError,
    is_valid_email,
    parse_batch,
    parse_message,
    parse_timestamp,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def parse(raw: Any, type_hint: str | None = "track", **kw: Any):
    return parse_message(raw, received_at=NOW, type_hint=type_hint, **kw)


def refused(raw: Any, type_hint: str | None = "track", **kw: Any) -> MessageError:
    with pytest.raises(MessageError) as info:
        parse(raw, type_hint, **kw)
    return info.value


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("raw", "type_hint", "field"),
    [
        ({"event": "e"}, "track", "userId"),
        ({"userId": "u"}, "track", "event"),
        ({"userId": "u", "event": ""}, "track", "event"),
        ({"userId": "u", "event": 5}, "track", "event"),
        ({"userId": "u", "event": "x" * 256}, "track", "event"),
        ({"userId": ["u"], "event": "e"}, "track", "userId"),
        ({"userId": True, "event": "e"}, "track", "userId"),
        ({"userId": 1.5, "event": "e"}, "track", "userId"),
        ({"anonymousId": {"a": 1}, "event": "e"}, "track", "anonymousId"),
        ({"anonymousId": "a" * 256, "event": "e"}, "track", "anonymousId"),
        ({"userId": "u", "event": "e", "messageId": []}, "track", "messageId"),
        ({"userId": "u", "event": "e", "properties": []}, "track", "properties"),
        ({"userId": "u", "event": "e", "properties": "x"}, "track", "properties"),
        ({"userId": "u", "event": "e", "context": 3}, "track", "context"),
        ({"userId": "u", "event": "e", "integrations": "all"}, "track", "integrations"),
        ({"userId": "u", "traits": "x"}, "identify", "traits"),
        ({"userId": "u", "traits": {"email": "not-an-email"}}, "identify", "traits.email"),
        ({"userId": "u", "traits": {"email": 42}}, "identify", "traits.email"),
        ({"userId": "u", "timestamp": "yesterday"}, "identify", "timestamp"),
        ({"userId": "u", "timestamp": 1714560000}, "identify", "timestamp"),
        ({"userId": "u", "timestamp": NOW.isoformat(), "sentAt": "x"}, "identify", "sentAt"),
        ({"userId": "u"}, "group", "groupId"),
        ({"userId": "u", "groupId": {}}, "group", "groupId"),
        ({"userId": "u"}, "alias", "previousId"),
        ({"previousId": "p", "anonymousId": "a"}, "alias", "userId"),
        ({"anonymousId": "a", "name": 7}, "page", "name"),
        ({"anonymousId": "a", "properties": {"url": 7}}, "page", "properties.url"),
        (
            {"anonymousId": "a", "context": {"page": {"referrer": []}}},
            "page",
            "context.page.referrer",
        ),
        (
            {"anonymousId": "a", "context": {"campaign": {"medium": 1}}},
            "page",
            "context.campaign.medium",
        ),
        ({"anonymousId": "a", "type": "track", "event": "e"}, "page", "type"),
    ],
)
def test_each_refusal_names_the_field(raw: dict[str, Any], type_hint: str, field: str) -> None:
    error = refused(raw, type_hint)
    assert error.field == field
    assert str(error).startswith(f"{field}: ")
    assert error.reason


def test_body_that_is_not_an_object_is_refused_as_body() -> None:
    for raw in ([], "x", 3, None):
        assert refused(raw).field == "body"


def test_batch_errors_name_the_message_index() -> None:
    body = {"batch": [{"type": "page", "anonymousId": "a"}, {"type": "track", "userId": "u"}]}
    with pytest.raises(MessageError) as info:
        parse_batch(body, received_at=NOW)
    assert info.value.field == "batch[1].event"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "batch"),
        ({"batch": {"type": "page"}}, "batch"),
        ({"batch": ["x"]}, "batch[0]"),
        ({"batch": [{"anonymousId": "a"}]}, "batch[0].type"),
        ({"batch": [{"type": "purchase", "anonymousId": "a"}]}, "batch[0].type"),
        ({"batch": [], "sentAt": "soon"}, "sentAt"),
        ({"batch": [], "context": "x"}, "context"),
    ],
)
def test_batch_shape_errors_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_batch(body, received_at=NOW)
    assert info.value.field == field


def test_all_message_types_parse_with_their_fields() -> None:
    ident = parse({"userId": 42, "traits": {"email": " Ann@Example.COM "}}, "identify")
    assert (ident.type, ident.user_id, ident.email) == ("identify", "42", "ann@example.com")
    track = parse({"anonymousId": "a", "event": " demo_request ", "properties": {"x": [1]}})
    assert (track.name, track.anonymous_id, track.user_id) == ("demo_request", "a", None)
    assert track.properties == {"x": [1]}
    page = parse({"anonymousId": "a", "name": "Pricing"}, "page")
    assert page.name == "Pricing"
    group = parse({"userId": "u", "groupId": 7, "traits": {"name": "Acme"}}, "group")
    assert group.group_id == "7"
    alias = parse({"userId": "u", "previousId": "anon-1"}, "alias")
    assert (alias.user_id, alias.previous_id) == ("u", "anon-1")
    screen = parse({"userId": "u", "name": "Home"}, "screen")
    assert screen.type == "screen"


def test_null_and_blank_ids_count_as_absent() -> None:
    msg = parse({"userId": "u", "anonymousId": None, "event": "e"})
    assert msg.anonymous_id is None
    assert refused({"userId": "  ", "anonymousId": None, "event": "e"}).field == "userId"


def test_message_id_is_kept_or_generated() -> None:
    assert parse({"userId": "u", "event": "e", "messageId": "m-1"}).message_id == "m-1"
    made = iter(["gen-1", "gen-2"])
    assert parse({"userId": "u", "event": "e"}, new_message_id=lambda: next(made)).message_id == (
        "gen-1"
    )
    a, b = parse({"userId": "u", "event": "e"}), parse({"userId": "u", "event": "e"})
    assert a.message_id != b.message_id


def test_batch_type_comes_from_each_message() -> None:
    body = {
        "batch": [
            {"type": "page", "anonymousId": "a", "messageId": "1"},
            {"type": "identify", "anonymousId": "a", "userId": "u", "messageId": "2"},
        ]
    }
    messages = parse_batch(body, received_at=NOW)
    assert [m.type for m in messages] == ["page", "identify"]


def test_timestamp_is_corrected_for_client_clock_skew_with_sent_at() -> None:
    # The device clock is 1 hour fast: it says the event happened 10 s before sending.
    device_event = NOW + timedelta(hours=1) - timedelta(seconds=10)
    device_sent = NOW + timedelta(hours=1)
    msg = parse(
        {
            "userId": "u",
            "event": "e",
            "timestamp": device_event.isoformat(),
            "sentAt": device_sent.isoformat(),
        }
    )
    assert msg.occurred_at == NOW - timedelta(seconds=10)


def test_batch_sent_at_applies_to_messages_without_their_own() -> None:
    body = {
        "sentAt": "2024-05-01T13:00:00Z",
        "batch": [
            {"type": "track", "userId": "u", "event": "e", "timestamp": "2024-05-01T12:59:00Z"},
            {
                "type": "track",
                "userId": "u",
                "event": "e",
                "timestamp": "2024-05-01T12:59:00Z",
                "sentAt": "2024-05-01T12:59:30Z",
            },
        ],
    }
    first, second = parse_batch(body, received_at=NOW)
    assert first.occurred_at == NOW - timedelta(minutes=1)
    assert second.occurred_at == NOW - timedelta(seconds=30)


def test_timestamp_without_sent_at_is_taken_as_is_and_missing_means_received() -> None:
    msg = parse({"userId": "u", "event": "e", "timestamp": "2024-04-30T10:00:00+09:00"})
    assert msg.occurred_at == datetime(2024, 4, 30, 1, 0, tzinfo=UTC)
    assert parse({"userId": "u", "event": "e"}).occurred_at == NOW
    naive = parse({"userId": "u", "event": "e", "timestamp": "2024-04-30T10:00:00"})
    assert naive.occurred_at == datetime(2024, 4, 30, 10, 0, tzinfo=UTC)


def test_absurd_skew_is_refused_not_crashed() -> None:
    error = refused(
        {
            "userId": "u",
            "event": "e",
            "timestamp": "0001-01-01T00:00:00Z",
            "sentAt": "9999-12-31T00:00:00Z",
        }
    )
    assert error.field == "timestamp"


def test_parse_timestamp_accepts_z_and_offsets() -> None:
    assert parse_timestamp("2024-05-01T12:00:00Z", "t") == NOW
    assert parse_timestamp("2024-05-01T12:00:00.123z", "t").microsecond == 123000
    assert parse_timestamp("2024-05-01T14:00:00+02:00", "t") == NOW


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"userId": "u\x00", "event": "e"}, "userId"),
        ({"userId": "u", "event": "e", "properties": {"a": "x\x00y"}}, "properties.a"),
        ({"userId": "u", "event": "e", "properties": {"a\x00": 1}}, "properties"),
        ({"userId": "u", "event": "e", "context": {"l": ["ok", "\x00"]}}, "context.l[1]"),
    ],
)
def test_nul_characters_are_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    error = refused(raw)
    assert error.field == field
    assert "NUL" in error.reason


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    ok = parse({"userId": "u", "event": "e", "properties": nested(MAX_DEPTH - 1)})
    assert ok.properties
    error = refused({"userId": "u", "event": "e", "properties": nested(MAX_DEPTH + 1)})
    assert error.field.startswith("properties.x")
    assert "nested deeper" in error.reason


def test_hostile_strings_are_data_not_errors() -> None:
    hostile = "'); DROP TABLE events; -- <script>alert(1)</script>"
    msg = parse({"userId": hostile, "event": hostile, "properties": {hostile: hostile}})
    assert msg.user_id == hostile
    assert msg.name == hostile
    assert msg.properties == {hostile: hostile}


@pytest.mark.parametrize(
    "email",
    ["ann@example.com", "a.b+tag@sub.example.co.kr", "x_y@a-b.io", "user@xn--bcher-kva.de"],
)
def test_valid_emails(email: str) -> None:
    assert is_valid_email(email)


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "@example.com",
        "ann@",
        "ann@example",
        "ann@@example.com",
        "ann smith@example.com",
        "ann@exa mple.com",
        "<script>@example.com",
        "ann@-example.com",
        "ann@example.com\n",
        "a" * 320 + "@example.com",
    ],
)
def test_invalid_emails(email: str) -> None:
    assert not is_valid_email(email)


def test_empty_email_trait_is_dropped_not_refused() -> None:
    msg = parse({"userId": "u", "traits": {"email": "", "title": "CTO"}}, "identify")
    assert msg.email is None
    assert "email" not in msg.traits
    assert msg.traits["title"] == "CTO"


def test_page_url_referrer_and_campaign_are_extracted() -> None:
    msg = parse(
        {
            "anonymousId": "a",
            "properties": {"url": "https://acme.io/pricing"},
            "context": {
                "page": {"referrer": "https://www.google.com/search?q=x"},
                "campaign": {"name": "spring", "source": "google", "medium": "cpc"},
            },
        },
        "page",
    )
    assert msg.page_url == "https://acme.io/pricing"
    assert msg.referrer == "https://www.google.com/search?q=x"
    assert (msg.utm_campaign, msg.utm_source, msg.utm_medium) == ("spring", "google", "cpc")
    assert msg.channel == "paid_search"


def test_track_channel_from_event_name_property_or_context() -> None:
    assert parse({"userId": "u", "event": "email_open"}).channel == "email"
    assert parse({"userId": "u", "event": "webinar_attended"}).channel == "webinar"
    explicit = parse({"userId": "u", "event": "demo_request", "properties": {"channel": "Events"}})
    assert explicit.channel == "events"
    bogus = parse({"userId": "u", "event": "demo_request", "properties": {"channel": "x" * 99}})
    assert bogus.channel == "direct"


def test_batch_context_is_merged_under_message_context() -> None:
    body = {
        "context": {"library": {"name": "lib"}, "ip": "1.2.3.4"},
        "batch": [{"type": "page", "anonymousId": "a", "context": {"ip": "5.6.7.8"}}],
    }
    (msg,) = parse_batch(body, received_at=NOW)
    assert msg.context == {"library": {"name": "lib"}, "ip": "5.6.7.8"}
