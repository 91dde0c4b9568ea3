"""Admin API for leads and privacy, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from leadflow.adapters.db.tables import leads
from leadflow.core.tracking import parse_message
from leadflow.services.importer import import_leads
from leadflow.services.ingest import ingest

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def world(services, tmp_path: Path):
    path = tmp_path / "leads.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "first_name", "company", "domain", "source"])
        for i in range(7):
            company, domain = ("Acme", "acme.example") if i % 2 else ("Globex", "globex.example")
            source = "tradeshow" if i < 3 else "webinar"
            w.writerow([f"p{i}@{domain}", f"Person{i}", company, domain, source])
        w.writerow(["under_score@acme.example", "Under", "Acme", "acme.example", "web"])
    import_leads(services.engine, path, now=T0)
    ingest(
        services.engine,
        [
            parse_message(
                {
                    "type": "track",
                    "userId": "u1",
                    "event": "demo_request",
                    "messageId": "t1",
                    "timestamp": "2026-03-02T10:00:00Z",
                },
                received_at=T0,
            ),
            parse_message(
                {
                    "type": "identify",
                    "userId": "u1",
                    "messageId": "t2",
                    "traits": {"email": "p1@acme.example"},
                },
                received_at=T0,
            ),
        ],
        T0,
    )
    return services


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def lead_id(services, email: str) -> int:
    with services.engine.connect() as conn:
        return conn.execute(select(leads.c.id).where(leads.c.email == email)).scalar_one()


def test_every_route_needs_an_admin_token(client, world, write_key):
    for method, url in [
        ("get", "/api/leads"),
        ("get", "/api/leads/1"),
        ("get", "/api/leads/1/events"),
        ("get", "/api/privacy/export?email=p1@acme.example"),
    ]:
        assert getattr(client, method)(url).status_code == 401
        assert getattr(client, method)(url, headers=auth(write_key)).status_code == 401
    assert client.post("/api/privacy/erase", json={"email": "p1@acme.example"}).status_code == 401


def test_list_pages_through_every_lead_once(client, world, admin_token):
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        body = client.get("/api/leads", params=params, headers=auth(admin_token)).json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    with world.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(leads)).scalar_one()
    assert len(seen) == len(set(seen)) == total == 8
    assert seen == sorted(seen, reverse=True)


def test_list_filters(client, world, admin_token):
    def emails(**params):
        r = client.get("/api/leads", params=params, headers=auth(admin_token))
        assert r.status_code == 200, r.text
        return {item["email"] for item in r.json()["items"]}

    assert emails(source="tradeshow") == {
        "p0@globex.example",
        "p1@acme.example",
        "p2@globex.example",
    }
    assert emails(account="ACME.example", source="webinar") == {
        "p3@acme.example",
        "p5@acme.example",
    }
    assert emails(search="person6") == {"p6@globex.example"}
    # LIKE wildcards in the search are literal characters.
    assert emails(search="_") == {"under_score@acme.example"}
    assert emails(search="%") == set()
    assert emails(search="'; DROP TABLE leads;--") == set()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": -1}, "cursor"),
        ({"search": "x" * 201}, "search"),
    ],
)
def test_bad_list_parameters_name_the_field(client, world, admin_token, params, field):
    r = client.get("/api/leads", params=params, headers=auth(admin_token))
    assert r.status_code == 422
    assert any(err["loc"][-1] == field for err in r.json()["detail"])


def test_get_lead_with_account_and_its_events(client, world, admin_token):
    lid = lead_id(world, "p1@acme.example")
    r = client.get(f"/api/leads/{lid}", headers=auth(admin_token))
    assert r.status_code == 200
    body = r.json()
    assert body["email"] == "p1@acme.example" and body["account"]["domain"] == "acme.example"
    assert body["erased"] is False
    events = client.get(f"/api/leads/{lid}/events", headers=auth(admin_token)).json()
    # Newest first: the demo request, then the tracking identify, then the import's identify.
    ids = [e["message_id"] for e in events["items"]]
    assert ids[:2] == ["t1", "t2"] and len(ids) == 3 and ids[2].startswith("import-")
    # Paging one at a time gives the same events in the same order.
    paged, cursor = [], None
    while True:
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = client.get(
            f"/api/leads/{lid}/events", params=params, headers=auth(admin_token)
        ).json()
        paged += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == [e["id"] for e in events["items"]]


def test_unknown_lead_is_404_naming_the_id(client, world, admin_token):
    r = client.get("/api/leads/999999", headers=auth(admin_token))
    assert r.status_code == 404 and "lead_id" in r.json()["detail"]
    assert client.get("/api/leads/abc", headers=auth(admin_token)).status_code == 422
    r = client.get("/api/leads/999999/events", headers=auth(admin_token))
    assert r.status_code == 404


def test_export_and_erase_through_the_api(client, world, admin_token):
    r = client.get(
        "/api/privacy/export", params={"email": "P1@acme.example"}, headers=auth(admin_token)
    )
    assert r.status_code == 200
    assert r.json()["lead"]["email"] == "p1@acme.example"
    assert len(r.json()["events"]) >= 2
    lid = lead_id(world, "p1@acme.example")
    r = client.post(
        "/api/privacy/erase", json={"email": "p1@acme.example"}, headers=auth(admin_token)
    )
    assert r.status_code == 200, r.text
    assert r.json()["lead_id"] == lid and r.json()["suppressed"] is True
    detail = client.get(f"/api/leads/{lid}", headers=auth(admin_token)).json()
    assert detail["erased"] is True and detail["email"] is None
    listed = client.get("/api/leads", params={"limit": 100}, headers=auth(admin_token)).json()
    assert lid not in {item["id"] for item in listed["items"]}
    r = client.post(
        "/api/privacy/erase", json={"email": "p1@acme.example"}, headers=auth(admin_token)
    )
    assert r.status_code == 404 and "erased" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "not-an-email"},
        {"email": 42},
        {"email": "a@b.example", "extra": 1},
        {"email": "x" * 400 + "@b.example"},
    ],
)
def test_erase_refuses_bad_bodies_naming_the_field(client, world, admin_token, body):
    r = client.post("/api/privacy/erase", json=body, headers=auth(admin_token))
    assert r.status_code == 422
    locs = [err["loc"] for err in r.json()["detail"]]
    assert any(loc[0] == "body" for loc in locs)
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(leads)).scalar_one() == 8


def test_export_refuses_a_bad_email_and_404s_an_unknown_one(client, world, admin_token):
    r = client.get("/api/privacy/export", params={"email": "<script>"}, headers=auth(admin_token))
    assert r.status_code == 400 and r.json()["field"] == "email"
    r = client.get(
        "/api/privacy/export", params={"email": "who@x.example"}, headers=auth(admin_token)
    )
    assert r.status_code == 404


def test_operation_ids_are_stable(client):
    spec = client.get("/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {"list_leads", "get_lead", "list_lead_events", "export_person", "erase_person"} <= ids
