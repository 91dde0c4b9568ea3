"""The Segment-compatible tracking API through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import gzip
import threading
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from leadflow.adapters.db.tables import accounts, events, identities, leads
from leadflow.bootstrap import Services
from leadflow.entrypoints.api import build_app

HOSTILE = [
    "'); DROP TABLE events; --",
    "<script>alert('x')</script>",
    '" OR 1=1 --',
    '=HYPERLINK("http://evil")',
    "한국어 ✓ \u202e",
]


def auth(key: str) -> tuple[str, str]:
    return (key, "")


def count(services: Services, table: Any = events) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def snapshot(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tracking tables, to prove a refused request changed nothing."""
    out = {}
    with services.engine.connect() as conn:
        for table in (events, leads, identities, accounts):
            rows = conn.execute(select(table).order_by(table.c.id)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


@pytest.fixture
def seeded(client: TestClient, write_key: str, services: Services) -> dict[str, Any]:
    """Some existing data that refused requests must leave untouched."""
    body = {
        "batch": [
            {"type": "page", "anonymousId": "seed-a", "properties": {"url": "https://x.io/"}},
            {
                "type": "identify",
                "anonymousId": "seed-a",
                "userId": "seed-u",
                "traits": {"email": "seed@acme.io", "company": "Acme"},
            },
            {"type": "group", "userId": "seed-u", "groupId": "g-acme", "traits": {"name": "Acme"}},
            {"type": "track", "userId": "seed-u", "event": "demo_request", "messageId": "seed-1"},
        ]
    }
    r = client.post("/v1/batch", json=body, auth=auth(write_key))
    assert r.status_code == 200, r.text
    return snapshot(services)


# --- endpoints -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected_type", "expected_name"),
    [
        ("/v1/identify", {"userId": "u1", "traits": {"email": "a@b.io"}}, "identify", None),
        ("/v1/track", {"userId": "u1", "event": "demo_request"}, "track", "demo_request"),
        ("/v1/page", {"anonymousId": "a1", "name": "Pricing"}, "page", "Pricing"),
        ("/v1/screen", {"anonymousId": "a1", "name": "Home"}, "screen", "Home"),
        ("/v1/group", {"userId": "u1", "groupId": "g1"}, "group", None),
        ("/v1/alias", {"userId": "u1", "previousId": "a1"}, "alias", None),
    ],
)
def test_each_endpoint_stores_its_call(
    client: TestClient,
    services: Services,
    write_key: str,
    path: str,
    body: dict[str, Any],
    expected_type: str,
    expected_name: str | None,
) -> None:
    r = client.post(path, json={**body, "messageId": "m-1"}, auth=auth(write_key))
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    with services.engine.connect() as conn:
        row = conn.execute(select(events)).mappings().one()
    assert (row["message_id"], row["type"], row["name"]) == ("m-1", expected_type, expected_name)


def test_batch_and_import_store_every_message(
    client: TestClient, services: Services, write_key: str
) -> None:
    batch = [
        {"type": "track", "userId": f"u{i % 3}", "event": "email_open", "messageId": f"b-{i}"}
        for i in range(50)
    ]
    assert client.post("/v1/batch", json={"batch": batch}, auth=auth(write_key)).status_code == 200
    more = [{**m, "messageId": f"i-{i}"} for i, m in enumerate(batch[:5])]
    assert client.post("/v1/import", json={"batch": more}, auth=auth(write_key)).status_code == 200
    assert count(services) == 55
    assert count(services, leads) == 3


def test_track_stores_properties_context_and_derived_columns(
    client: TestClient, services: Services, write_key: str
) -> None:
    body = {
        "anonymousId": "a1",
        "event": "content_download",
        "properties": {"asset": "ROI guide", "asset_type": "white_paper", "n": [1, 2.5, None]},
        "context": {
            "page": {"url": "https://acme.io/docs/x", "referrer": "https://www.linkedin.com/"},
            "campaign": {"name": "q2", "source": "linkedin", "medium": "social"},
            "ip": "203.0.113.9",
        },
        "timestamp": "2024-05-01T10:00:00Z",
    }
    assert client.post("/v1/track", json=body, auth=auth(write_key)).status_code == 200
    with services.engine.connect() as conn:
        row = conn.execute(select(events)).mappings().one()
    assert row["properties"] == body["properties"]
    assert row["context"] == body["context"]
    assert row["page_url"] == "https://acme.io/docs/x"
    assert row["referrer"] == "https://www.linkedin.com/"
    assert (row["utm_campaign"], row["utm_source"], row["utm_medium"]) == (
        "q2",
        "linkedin",
        "social",
    )
    assert row["channel"] == "social"
    assert row["occurred_at"].isoformat() == "2024-05-01T10:00:00+00:00"
    assert row["lead_id"] is None  # anonymous, not a lead yet


# --- auth ------------------------------------------------------------------------------


def test_missing_key_is_401_and_stores_nothing(
    client: TestClient, services: Services, seeded: dict[str, Any]
) -> None:
    r = client.post("/v1/track", json={"userId": "u", "event": "e"})
    assert r.status_code == 401
    assert "write key" in r.json()["message"]
    assert r.headers["www-authenticate"].startswith("Basic")
    assert snapshot(services) == seeded


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode(b"lfw_not-a-real-key:").decode(),
        "Basic !!!not-base64!!!",
        "Bearer lfw_whatever",
        "Basic " + base64.b64encode(b":").decode(),
    ],
)
def test_wrong_key_is_401_and_stores_nothing(
    client: TestClient, services: Services, seeded: dict[str, Any], header: str
) -> None:
    r = client.post(
        "/v1/track", json={"userId": "u", "event": "e"}, headers={"Authorization": header}
    )
    assert r.status_code == 401
    assert snapshot(services) == seeded


def test_wrong_key_is_refused_before_the_body_is_read(client: TestClient) -> None:
    r = client.post("/v1/track", content=b"{not json", auth=auth("lfw_wrong"))
    assert r.status_code == 401


def test_admin_token_cannot_send_tracking_calls(
    client: TestClient, services: Services, admin_token: str, seeded: dict[str, Any]
) -> None:
    r = client.post("/v1/track", json={"userId": "u", "event": "e"}, auth=auth(admin_token))
    assert r.status_code == 401
    assert "admin token" in r.json()["message"]
    r = client.post("/v1/batch", json={"batch": [], "writeKey": admin_token})
    assert r.status_code == 401
    assert snapshot(services) == seeded


def test_write_key_in_body_is_accepted_as_segment_allows(
    client: TestClient, services: Services, write_key: str
) -> None:
    r = client.post(
        "/v1/batch",
        json={"writeKey": write_key, "batch": [{"type": "page", "anonymousId": "a"}]},
    )
    assert r.status_code == 200, r.text
    r = client.post("/v1/page", json={"writeKey": write_key, "anonymousId": "a"})
    assert r.status_code == 200, r.text
    assert count(services) == 2


def test_revoked_key_is_refused(client: TestClient, services: Services) -> None:
    from datetime import UTC, datetime

    from leadflow.services import keys as key_service

    created = key_service.create_key(
        services.engine, kind="write", name="old", now=datetime.now(UTC)
    )
    key_service.revoke_key(services.engine, created.id, datetime.now(UTC))
    services.keys._cache.clear()
    r = client.post("/v1/page", json={"anonymousId": "a"}, auth=auth(created.token))
    assert r.status_code == 401
    assert count(services) == 0


# --- limits and malformed input -----------------------------------------------------


def test_message_over_32_kb_is_refused_naming_the_limit(
    client: TestClient, services: Services, write_key: str, seeded: dict[str, Any]
) -> None:
    body = {"userId": "u", "event": "e", "properties": {"blob": "x" * (32 * 1024)}}
    r = client.post("/v1/track", json=body, auth=auth(write_key))
    assert r.status_code == 400
    assert "32 KB per message" in r.json()["message"]
    assert snapshot(services) == seeded


def test_message_just_under_32_kb_is_accepted(
    client: TestClient, services: Services, write_key: str
) -> None:
    body: dict[str, Any] = {"userId": "u", "event": "e", "properties": {"blob": ""}}
    room = 32 * 1024 - len(orjson.dumps(body))
    body["properties"]["blob"] = "x" * room
    raw = orjson.dumps(body)
    assert len(raw) == 32 * 1024
    r = client.post(
        "/v1/track",
        content=raw,
        auth=auth(write_key),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert count(services) == 1


def test_batch_over_500_kb_is_refused_naming_the_limit(
    client: TestClient, services: Services, write_key: str, seeded: dict[str, Any]
) -> None:
    batch = [
        {"type": "track", "userId": "u", "event": "e", "properties": {"blob": "x" * 20_000}}
        for _ in range(30)
    ]
    r = client.post("/v1/batch", json={"batch": batch}, auth=auth(write_key))
    assert r.status_code == 400
    assert "500 KB per batch" in r.json()["message"]
    assert snapshot(services) == seeded


def test_batch_with_one_message_over_32_kb_is_refused_whole(
    client: TestClient, services: Services, write_key: str, seeded: dict[str, Any]
) -> None:
    batch = [
        {"type": "track", "userId": "u", "event": "e", "messageId": "ok-1"},
        {"type": "track", "userId": "u", "event": "e", "properties": {"b": "x" * 40_000}},
    ]
    r = client.post("/v1/batch", json={"batch": batch}, auth=auth(write_key))
    assert r.status_code == 400
    assert r.json()["field"] == "batch[1]"
    assert "32 KB per message" in r.json()["message"]
    assert snapshot(services) == seeded


def test_gzip_bomb_is_refused_by_its_inflated_size(
    client: TestClient, services: Services, write_key: str, seeded: dict[str, Any]
) -> None:
    payload = b'{"batch": [], "pad": "' + b"0" * (5 * 1024 * 1024) + b'"}'
    packed = gzip.compress(payload)
    assert len(packed) < 500 * 1024
    r = client.post(
        "/v1/batch",
        content=packed,
        auth=auth(write_key),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert "500 KB per batch" in r.json()["message"]
    assert snapshot(services) == seeded


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"{'a': 1}", b"[1, 2", b'{"userId": "u", "event": "e",}', b"\xff\xfe", b"NaN"],
)
def test_malformed_json_is_400_naming_the_body(
    client: TestClient, services: Services, write_key: str, seeded: dict[str, Any], raw: bytes
) -> None:
    r = client.post("/v1/track", content=raw, auth=auth(write_key))
    assert r.status_code == 400
    assert r.json()["field"] == "body"
    assert "malformed JSON" in r.json()["message"]
    assert snapshot(services) == seeded


def test_unknown_content_encoding_and_broken_gzip_are_400(
    client: TestClient, write_key: str, services: Services
) -> None:
    r = client.post(
        "/v1/page",
        content=b'{"anonymousId": "a"}',
        auth=auth(write_key),
        headers={"Content-Encoding": "br"},
    )
    assert r.status_code == 400
    assert "Content-Encoding" in r.json()["message"]
    r = client.post(
        "/v1/page", content=b"not gzip", auth=auth(write_key), headers={"Content-Encoding": "gzip"}
    )
    assert r.status_code == 400
    assert "gzip" in r.json()["message"]
    assert count(services) == 0


def test_gzip_body_is_accepted(client: TestClient, services: Services, write_key: str) -> None:
    body = {"batch": [{"type": "page", "anonymousId": "a", "messageId": f"g{i}"} for i in range(5)]}
    r = client.post(
        "/v1/batch",
        content=gzip.compress(orjson.dumps(body)),
        auth=auth(write_key),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert count(services) == 5


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", {"event": "e"}, "userId"),
        ("/v1/track", {"userId": "u"}, "event"),
        ("/v1/track", {"userId": "u", "event": "e", "properties": [1]}, "properties"),
        ("/v1/identify", {"userId": "u", "traits": {"email": "nope"}}, "traits.email"),
        ("/v1/identify", {"userId": 1.5}, "userId"),
        ("/v1/group", {"userId": "u"}, "groupId"),
        ("/v1/alias", {"userId": "u"}, "previousId"),
        ("/v1/page", {"anonymousId": "a", "timestamp": "tomorrow"}, "timestamp"),
        ("/v1/page", {"anonymousId": "a", "properties": {"k": "v\u0000"}}, "properties.k"),
        ("/v1/page", [1, 2], "body"),
        ("/v1/batch", {"batch": "x"}, "batch"),
    ],
)
def test_wrong_types_are_400_naming_the_field(
    client: TestClient,
    services: Services,
    write_key: str,
    seeded: dict[str, Any],
    path: str,
    body: Any,
    field: str,
) -> None:
    r = client.post(path, json=body, auth=auth(write_key))
    assert r.status_code == 400
    assert r.json()["field"] == field
    assert r.json()["message"].startswith(f"{field}: ")
    assert snapshot(services) == seeded


def test_batch_with_one_bad_message_is_refused_whole(
    client: TestClient, services: Services, write_key: str, seeded: dict[str, Any]
) -> None:
    batch = [
        {"type": "identify", "userId": "new-u", "traits": {"email": "new@acme.io"}},
        {"type": "track", "userId": "seed-u", "event": "e", "messageId": "fresh-1"},
        {"type": "track", "userId": "seed-u"},  # no event name
        {"type": "page", "anonymousId": "x"},
    ]
    r = client.post("/v1/batch", json={"batch": batch}, auth=auth(write_key))
    assert r.status_code == 400
    assert r.json()["field"] == "batch[2].event"
    assert snapshot(services) == seeded


def test_empty_batch_is_acknowledged(
    client: TestClient, write_key: str, services: Services
) -> None:
    r = client.post("/v1/batch", json={"batch": []}, auth=auth(write_key))
    assert r.status_code == 200
    assert count(services) == 0


# --- de-duplication -------------------------------------------------------------------


def test_repeated_message_id_is_acknowledged_and_stored_once(
    client: TestClient, services: Services, write_key: str
) -> None:
    body = {"userId": "u", "event": "e", "messageId": "dup-1", "properties": {"n": 1}}
    for _ in range(3):
        assert client.post("/v1/track", json=body, auth=auth(write_key)).status_code == 200
    changed = {**body, "properties": {"n": 2}}
    assert client.post("/v1/track", json=changed, auth=auth(write_key)).status_code == 200
    with services.engine.connect() as conn:
        rows = conn.execute(select(events.c.properties)).scalars().all()
    assert rows == [{"n": 1}]  # the first one wins; a replay never rewrites


def test_repeated_message_id_within_one_batch_is_stored_once(
    client: TestClient, services: Services, write_key: str
) -> None:
    m = {"type": "track", "userId": "u", "event": "e", "messageId": "same"}
    r = client.post("/v1/batch", json={"batch": [m, m, {**m}]}, auth=auth(write_key))
    assert r.status_code == 200
    assert count(services) == 1


def test_replayed_identify_does_not_create_a_second_lead(
    client: TestClient, services: Services, write_key: str
) -> None:
    body = {"anonymousId": "a", "traits": {"email": "x@acme.io"}, "messageId": "id-1"}
    for _ in range(2):
        assert client.post("/v1/identify", json=body, auth=auth(write_key)).status_code == 200
    assert count(services, leads) == 1
    assert count(services) == 1


def test_concurrent_requests_with_the_same_message_id_store_it_once(
    services: Services, write_key: str
) -> None:
    app = build_app(services)
    body = {
        "type": "identify",
        "userId": "racer",
        "anonymousId": "race-a",
        "traits": {"email": "race@acme.io"},
        "messageId": "race-1",
    }
    statuses: list[int] = []
    start = threading.Barrier(6)

    def send() -> None:
        with TestClient(app) as c:
            start.wait()
            statuses.append(c.post("/v1/identify", json=body, auth=auth(write_key)).status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
    assert count(services) == 1
    assert count(services, leads) == 1
    assert count(services, identities) == 2


def test_concurrent_first_events_of_one_user_make_one_lead(
    services: Services, write_key: str
) -> None:
    app = build_app(services)
    start = threading.Barrier(6)
    statuses: list[int] = []

    def send(i: int) -> None:
        body = {"userId": "new-person", "event": "e", "messageId": f"c-{i}"}
        with TestClient(app) as c:
            start.wait()
            statuses.append(c.post("/v1/track", json=body, auth=auth(write_key)).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
    assert count(services) == 6
    assert count(services, leads) == 1
    with services.engine.connect() as conn:
        lead_ids = set(conn.execute(select(events.c.lead_id)).scalars())
    assert len(lead_ids) == 1 and None not in lead_ids


# --- hostile input --------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_strings_are_stored_verbatim(
    client: TestClient, services: Services, write_key: str, hostile: str
) -> None:
    batch = [
        {
            "type": "identify",
            "userId": hostile,
            "anonymousId": hostile,
            "traits": {"firstName": hostile, hostile: hostile, "company": hostile},
        },
        {
            "type": "track",
            "userId": hostile,
            "event": hostile,
            "messageId": hostile,
            "properties": {hostile: [hostile]},
            "context": {"page": {"url": hostile, "referrer": hostile}},
        },
    ]
    r = client.post("/v1/batch", json={"batch": batch}, auth=auth(write_key))
    assert r.status_code == 200, r.text
    with services.engine.connect() as conn:
        track = conn.execute(select(events).where(events.c.type == "track")).mappings().one()
        lead = conn.execute(select(leads)).mappings().one()
        account = conn.execute(select(accounts)).mappings().one()
    assert track["message_id"] == hostile
    assert track["name"] == hostile
    assert track["user_id"] == hostile
    assert track["properties"] == {hostile: [hostile]}
    assert track["page_url"] == hostile
    assert track["lead_id"] == lead["id"]
    assert lead["user_id"] == hostile
    assert lead["first_name"] == hostile
    assert lead["attributes"][hostile] == hostile
    assert account["name"] == hostile
    assert count(services) == 2


def test_long_trait_values_are_cut_to_the_column_not_refused(
    client: TestClient, services: Services, write_key: str
) -> None:
    traits = {"phone": "1" * 300, "title": "t" * 1000, "source": "s" * 300}
    r = client.post("/v1/identify", json={"userId": "u", "traits": traits}, auth=auth(write_key))
    assert r.status_code == 200, r.text
    with services.engine.connect() as conn:
        lead = conn.execute(select(leads)).mappings().one()
    assert lead["phone"] == "1" * 64
    assert lead["title"] == "t" * 255
    assert lead["source"] == "s" * 100


def test_health_answers(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
