"""Privacy export and erasure on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from leadflow.adapters.db.tables import (
    email_sends,
    events,
    form_submissions,
    identities,
    leads,
    suppressions,
)
from leadflow.core.tracking import parse_message
from leadflow.services.ingest import ingest
from leadflow.services.privacy import (
    PersonNotFound,
    email_hash,
    erase_person,
    export_person,
    is_suppressed,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PERSONAL = [
    "kim.jisoo@acme.example",
    "Jisoo",
    "Kimberly",
    "010-5555-1234",
    "anon-device-7",
    "crm-user-42",
    "203.0.113.9",
    "Mozilla/5.0 (Jisoo's laptop)",
]


def _ingest(engine, *raw: dict) -> None:
    ingest(engine, [parse_message(r, received_at=T0) for r in raw], T0)


@pytest.fixture
def person(services):
    ctx = {
        "ip": "203.0.113.9",
        "userAgent": "Mozilla/5.0 (Jisoo's laptop)",
        "campaign": {"name": "spring", "source": "google", "medium": "cpc"},
        "page": {
            "path": "/pricing",
            "url": "https://site.example/pricing?email=kim.jisoo%40acme.example&ref=x",
            "referrer": "https://mail.example/?to=kim.jisoo@acme.example",
        },
    }
    _ingest(
        services.engine,
        {
            "type": "page",
            "anonymousId": "anon-device-7",
            "messageId": "m1",
            "context": ctx,
            "properties": {
                "url": "https://site.example/pricing?email=kim.jisoo@acme.example",
                "path": "/pricing",
            },
        },
        {
            "type": "identify",
            "anonymousId": "anon-device-7",
            "userId": "crm-user-42",
            "messageId": "m2",
            "context": ctx,
            "traits": {
                "email": "Kim.Jisoo@Acme.example",
                "firstName": "Jisoo",
                "lastName": "Kimberly",
                "phone": "010-5555-1234",
                "company": {"name": "Acme", "domain": "acme.example"},
            },
        },
        {
            "type": "track",
            "userId": "crm-user-42",
            "event": "form_submit",
            "messageId": "m3",
            "context": ctx,
            "properties": {
                "form": "contact",
                "Email": "kim.jisoo@acme.example",
                "message": "Call Jisoo on 010-5555-1234",
                "asset": "pricing",
                "nested": {"work_mail": "kim.jisoo@acme.example", "size": 50},
            },
        },
        {
            "type": "identify",
            "userId": "bystander",
            "messageId": "b1",
            "traits": {"email": "other@acme.example", "firstName": "Other"},
        },
        {
            "type": "track",
            "userId": "bystander",
            "event": "content_download",
            "messageId": "b2",
            "properties": {"asset": "white-paper"},
            "context": ctx,
        },
    )
    with services.engine.connect() as conn:
        return (
            conn.execute(select(leads).where(leads.c.email == "kim.jisoo@acme.example"))
            .mappings()
            .one()
        )


def _event_rows(engine, **where):
    with engine.connect() as conn:
        stmt = select(events).order_by(events.c.id)
        for column, value in where.items():
            stmt = stmt.where(events.c[column] == value)
        return [dict(r) for r in conn.execute(stmt).mappings()]


def test_export_contains_lead_account_identities_and_events(services, person):
    data = export_person(services.engine, "KIM.JISOO@acme.example ", now=T0)
    assert data["email"] == "kim.jisoo@acme.example"
    assert data["lead"]["first_name"] == "Jisoo"
    assert data["account"]["domain"] == "acme.example"
    assert {(i["kind"], i["value"]) for i in data["identities"]} == {
        ("anonymous", "anon-device-7"),
        ("user", "crm-user-42"),
    }
    assert [e["message_id"] for e in data["events"]] == ["m1", "m2", "m3"]
    json.dumps(data)  # JSON-ready as it is


def test_erase_removes_personal_data_and_keeps_an_anonymous_tombstone(services, person):
    result = erase_person(services.engine, "kim.jisoo@acme.example", now=T0 + timedelta(days=1))
    assert (result.lead_id, result.events_anonymised, result.identities_removed) == (
        person["id"],
        3,
        2,
    )
    with services.engine.connect() as conn:
        tomb = conn.execute(select(leads).where(leads.c.id == person["id"])).mappings().one()
        left = conn.execute(
            select(func.count()).select_from(identities).where(identities.c.lead_id == person["id"])
        ).scalar_one()
        hashes = list(conn.execute(select(suppressions.c.email_hash)).scalars())
    assert tomb["erased_at"] == T0 + timedelta(days=1)
    for column in ("email", "user_id", "first_name", "last_name", "phone", "title"):
        assert tomb[column] is None
    assert tomb["attributes"] == {}
    assert tomb["account_id"] == person["account_id"]  # the company is not personal data
    assert tomb["consent_status"] == "denied"
    assert left == 0
    assert hashes == [email_hash("kim.jisoo@acme.example")]

    rows = _event_rows(services.engine, lead_id=person["id"])
    assert [r["message_id"] for r in rows] == ["m1", "m2", "m3"]  # counts stay right
    dumped = json.dumps(rows, default=str)
    for value in PERSONAL:
        assert value.lower() not in dumped.lower(), value
    page, identify, form = rows
    assert page["page_url"] == "https://site.example/pricing"
    assert page["referrer"] == "https://mail.example/"
    assert page["context"]["campaign"] == {"name": "spring", "source": "google", "medium": "cpc"}
    assert page["context"]["page"]["path"] == "/pricing"
    assert identify["properties"] == {}
    assert form["name"] == "form_submit"
    assert form["properties"]["asset"] == "pricing"
    assert form["properties"]["nested"]["size"] == 50
    assert all(r["anonymous_id"] is None and r["user_id"] is None for r in rows)


def test_erase_scrubs_email_sends_and_form_submissions_but_keeps_their_figures(services, person):
    with services.engine.begin() as conn:
        conn.execute(
            email_sends.insert().values(
                idempotency_key="program:education:welcome:1",
                message_id="<m1@leadflow.invalid>",
                lead_id=person["id"],
                template="nurture",
                to_email=person["email"],
                subject="Hello Jisoo",
                status="sent",
                planned_at=T0,
                sent_at=T0,
                opened_at=T0,
            )
        )
        conn.execute(
            form_submissions.insert().values(
                form_key="white-paper",
                lead_id=person["id"],
                anonymous_id="anon-device-7",
                fields={"email": person["email"], "first_name": "Jisoo", "phone": "010-5555-1234"},
                consent={"granted": True, "text": "I agree", "ip": "203.0.113.9"},
                page_url="https://site.example/f/white-paper?email=kim.jisoo@acme.example",
                ip="203.0.113.9",
                user_agent="Mozilla/5.0 (Jisoo's laptop)",
                submitted_at=T0,
            )
        )
    erase_person(services.engine, person["email"], now=T0 + timedelta(days=1))
    with services.engine.connect() as conn:
        send = conn.execute(select(email_sends)).mappings().one()
        form = conn.execute(select(form_submissions)).mappings().one()
    assert send["status"] == "sent" and send["opened_at"] is not None  # figures stay
    assert form["form_key"] == "white-paper" and form["consent"]["granted"] is True
    dumped = json.dumps([dict(send), dict(form)], default=str).lower()
    for value in PERSONAL:
        assert value.lower() not in dumped, value


def test_erase_leaves_other_people_untouched(services, person):
    before = _event_rows(services.engine, user_id="bystander")
    erase_person(services.engine, "kim.jisoo@acme.example", now=T0)
    assert _event_rows(services.engine, user_id="bystander") == before
    data = export_person(services.engine, "other@acme.example", now=T0)
    assert data["lead"]["first_name"] == "Other"


def test_erased_address_is_suppressed_case_insensitively(services, person):
    with services.engine.connect() as conn:
        assert not is_suppressed(conn, "kim.jisoo@acme.example")
    erase_person(services.engine, "kim.jisoo@acme.example", now=T0)
    with services.engine.connect() as conn:
        assert is_suppressed(conn, " KIM.Jisoo@acme.example")
        assert not is_suppressed(conn, "other@acme.example")
    with pytest.raises(PersonNotFound, match="was erased"):
        export_person(services.engine, "kim.jisoo@acme.example", now=T0)
    with pytest.raises(PersonNotFound, match="was erased"):
        erase_person(services.engine, "kim.jisoo@acme.example", now=T0)


def test_unknown_person_is_not_found_and_nothing_is_written(services, person):
    with pytest.raises(PersonNotFound, match=r"no lead with e-mail nobody@acme\.example"):
        erase_person(services.engine, "nobody@acme.example", now=T0)
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(suppressions)).scalar_one() == 0


def test_erase_is_one_transaction(services, person):
    def failing_hook(conn, lead_id, now):
        raise RuntimeError("mail adapter down")

    before = export_person(services.engine, "kim.jisoo@acme.example", now=T0)
    with pytest.raises(RuntimeError):
        erase_person(services.engine, "kim.jisoo@acme.example", now=T0, hooks=[failing_hook])
    assert export_person(services.engine, "kim.jisoo@acme.example", now=T0) == before
    with services.engine.connect() as conn:
        assert not is_suppressed(conn, "kim.jisoo@acme.example")


def test_an_erased_address_sent_again_by_tracking_creates_no_lead(client, services, write_key):
    from sqlalchemy import func, select

    from leadflow.adapters.db.tables import events as events_table
    from leadflow.adapters.db.tables import leads as leads_table
    from leadflow.services import privacy

    auth = (write_key, "")
    body = {"userId": "gone-1", "traits": {"email": "Gone@Example.org", "firstName": "Gone"}}
    assert client.post("/v1/identify", json=body, auth=auth).status_code == 200
    privacy.erase_person(services.engine, "gone@example.org", now=services.clock())
    again = {
        "anonymousId": "anon-new",
        "traits": {"email": "gone@example.org"},
        "messageId": "after-erase",
    }
    assert client.post("/v1/identify", json=again, auth=auth).status_code == 200
    with services.engine.connect() as conn:
        emails = set(conn.execute(select(leads_table.c.email)).scalars())
        stored = conn.execute(
            select(events_table.c.properties).where(events_table.c.message_id == "after-erase")
        ).scalar_one()
        assert conn.execute(select(func.count()).select_from(leads_table)).scalar_one() == 1
    assert "gone@example.org" not in emails
    assert "email" not in stored["traits"]
