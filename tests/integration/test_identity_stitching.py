"""Identity stitching: anonymous history joins the lead; devices, e-mails, aliases, groups."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from leadflow.adapters.db.tables import accounts, events, identities, leads
from leadflow.bootstrap import Services

NOW = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def send(client: TestClient, write_key: str) -> Any:
    def _send(path: str, **body: Any) -> None:
        r = client.post(f"/v1/{path}", json=body, auth=(write_key, ""))
        assert r.status_code == 200, r.text

    return _send


def all_leads(services: Services) -> list[dict[str, Any]]:
    with services.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(leads).order_by(leads.c.id)).mappings()]


def event_leads(services: Services) -> dict[str, int | None]:
    with services.engine.connect() as conn:
        return dict(conn.execute(select(events.c.message_id, events.c.lead_id)).all())


def identity_map(services: Services) -> dict[tuple[str, str], int]:
    with services.engine.connect() as conn:
        rows = conn.execute(select(identities.c.kind, identities.c.value, identities.c.lead_id))
        return {(k, v): lead for k, v, lead in rows}


def test_anonymous_pages_join_the_lead_on_identify_and_later_events_join_directly(
    send: Any, services: Services
) -> None:
    for i in range(3):
        send("page", anonymousId="anon-1", messageId=f"p{i}", properties={"url": f"/blog/{i}"})
    send("page", anonymousId="someone-else", messageId="other")
    assert set(event_leads(services).values()) == {None}
    assert all_leads(services) == []

    send("identify", anonymousId="anon-1", userId="u-1", messageId="id", traits={"email": "a@x.io"})
    (lead,) = all_leads(services)
    assert (lead["email"], lead["user_id"]) == ("a@x.io", "u-1")
    send("page", anonymousId="anon-1", messageId="after-anon", properties={"url": "/pricing"})
    send("track", userId="u-1", event="demo_request", messageId="after-user")
    by_message = event_leads(services)
    for mid in ("p0", "p1", "p2", "id", "after-anon", "after-user"):
        assert by_message[mid] == lead["id"], mid
    assert by_message["other"] is None


def test_pages_and_identify_in_one_batch_stitch(
    client: TestClient, write_key: str, services: Services
) -> None:
    batch = [
        {"type": "page", "anonymousId": "b-anon", "messageId": "p1"},
        {"type": "page", "anonymousId": "b-anon", "messageId": "p2"},
        {"type": "identify", "anonymousId": "b-anon", "userId": "bu", "messageId": "i"},
        {"type": "page", "anonymousId": "b-anon", "messageId": "p3"},
    ]
    assert client.post("/v1/batch", json={"batch": batch}, auth=(write_key, "")).status_code == 200
    (lead,) = all_leads(services)
    assert set(event_leads(services).values()) == {lead["id"]}


def test_two_devices_identified_with_one_user_id_are_one_lead(
    send: Any, services: Services
) -> None:
    send("page", anonymousId="laptop", messageId="l1")
    send("page", anonymousId="phone", messageId="p1")
    send("identify", anonymousId="laptop", userId="u-7", messageId="i1")
    send("identify", anonymousId="phone", userId="u-7", messageId="i2")
    send("page", anonymousId="phone", messageId="p2")
    (lead,) = all_leads(services)
    assert set(event_leads(services).values()) == {lead["id"]}
    ids = identity_map(services)
    assert ids[("anonymous", "laptop")] == ids[("anonymous", "phone")] == lead["id"]
    assert ids[("user", "u-7")] == lead["id"]


def test_two_anonymous_devices_identified_by_the_same_email_are_one_lead(
    send: Any, services: Services
) -> None:
    send("page", anonymousId="d1", messageId="a")
    send("identify", anonymousId="d1", messageId="b", traits={"email": "Kim@Corp.io"})
    send("page", anonymousId="d2", messageId="c")
    send("identify", anonymousId="d2", messageId="d", traits={"email": "kim@corp.io"})
    (lead,) = all_leads(services)
    assert lead["email"] == "kim@corp.io"
    assert set(event_leads(services).values()) == {lead["id"]}


def test_identify_by_email_finds_a_lead_created_earlier_by_email(
    send: Any, services: Services
) -> None:
    # A lead imported from a trade-show list: e-mail only, no ids.
    with services.engine.begin() as conn:
        imported = conn.execute(
            leads.insert()
            .values(
                email="park@bigco.kr",
                first_name="Park",
                source="tradeshow",
                consent_status="granted",
                attributes={},
                created_at=NOW,
                updated_at=NOW,
            )
            .returning(leads.c.id)
        ).scalar_one()
    send("page", anonymousId="park-browser", messageId="v1")
    send(
        "identify",
        anonymousId="park-browser",
        userId="crm-991",
        messageId="v2",
        traits={"email": "PARK@bigco.kr", "title": "CIO", "firstName": ""},
    )
    (lead,) = all_leads(services)
    assert lead["id"] == imported
    assert (lead["user_id"], lead["title"], lead["first_name"]) == ("crm-991", "CIO", "Park")
    assert (lead["source"], lead["consent_status"]) == ("tradeshow", "granted")
    assert set(event_leads(services).values()) == {imported}


def test_user_known_first_then_email_of_an_imported_lead_merges_them(
    send: Any, services: Services
) -> None:
    send("track", userId="u-9", event="webinar_attended", messageId="w")
    with services.engine.begin() as conn:
        conn.execute(
            leads.insert().values(
                email="lee@bigco.kr",
                phone="010-1234",
                attributes={"imported": True},
                consent_status="unknown",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    assert len(all_leads(services)) == 2
    send("identify", userId="u-9", messageId="i", traits={"email": "lee@bigco.kr"})
    (lead,) = all_leads(services)
    assert (lead["email"], lead["user_id"], lead["phone"]) == ("lee@bigco.kr", "u-9", "010-1234")
    assert lead["attributes"]["imported"] is True
    assert set(event_leads(services).values()) == {lead["id"]}


def test_email_owned_by_another_user_does_not_merge_two_people(
    send: Any, services: Services
) -> None:
    send("identify", userId="alice", messageId="1", traits={"email": "shared@team.io"})
    send("identify", userId="bob", messageId="2", traits={"email": "shared@team.io"})
    rows = all_leads(services)
    assert [r["user_id"] for r in rows] == ["alice", "bob"]
    assert [r["email"] for r in rows] == ["shared@team.io", None]


def test_shared_browser_does_not_merge_two_users(send: Any, services: Services) -> None:
    send("identify", anonymousId="kiosk", userId="alice", messageId="1")
    send("identify", anonymousId="kiosk", userId="bob", messageId="2")
    send("track", anonymousId="kiosk", userId="carol", event="e", messageId="3")
    rows = all_leads(services)
    assert [r["user_id"] for r in rows] == ["alice", "bob", "carol"]
    by_message = event_leads(services)
    assert len({by_message["1"], by_message["2"], by_message["3"]}) == 3


def test_track_with_a_new_user_id_on_a_known_anonymous_id_adopts_it(
    send: Any, services: Services
) -> None:
    send("identify", anonymousId="dev", messageId="1", traits={"email": "z@z.io"})
    send("track", anonymousId="dev", userId="z-1", event="e", messageId="2")
    (lead,) = all_leads(services)
    assert lead["user_id"] == "z-1"
    assert identity_map(services)[("user", "z-1")] == lead["id"]


def test_alias_merges_two_leads_moving_events_and_identities(send: Any, services: Services) -> None:
    send(
        "identify",
        userId="old-id",
        anonymousId="an-old",
        messageId="1",
        traits={"email": "old@x.io", "title": "VP"},
    )
    send("track", userId="old-id", event="content_download", messageId="2")
    send("identify", userId="new-id", messageId="3", traits={"phone": "555"})
    send("track", userId="new-id", event="demo_request", messageId="4")
    first, second = all_leads(services)
    send("alias", userId="new-id", previousId="old-id", messageId="5")
    (lead,) = all_leads(services)
    assert lead["id"] == first["id"]  # the older lead survives
    assert (lead["email"], lead["title"], lead["phone"]) == ("old@x.io", "VP", "555")
    assert set(event_leads(services).values()) == {lead["id"]}
    ids = identity_map(services)
    assert ids[("user", "old-id")] == ids[("user", "new-id")] == lead["id"]
    assert ids[("anonymous", "an-old")] == lead["id"]
    assert second["id"] not in ids.values()


def test_alias_of_an_unknown_anonymous_id_joins_its_events(send: Any, services: Services) -> None:
    send("page", anonymousId="pre", messageId="p")
    send("alias", userId="u-new", previousId="pre", messageId="a")
    (lead,) = all_leads(services)
    assert lead["user_id"] == "u-new"
    assert set(event_leads(services).values()) == {lead["id"]}


def test_group_links_lead_to_account_by_group_id_then_domain(send: Any, services: Services) -> None:
    send("identify", userId="u1", messageId="1", traits={"email": "a@acme.io"})
    send(
        "group",
        userId="u1",
        groupId="acct-42",
        messageId="2",
        traits={"name": "Acme Inc", "website": "https://www.acme.io/", "industry": "Software"},
    )
    with services.engine.connect() as conn:
        (acct,) = conn.execute(select(accounts)).mappings().all()
    assert (acct["external_id"], acct["domain"], acct["industry"]) == (
        "acct-42",
        "acme.io",
        "Software",
    )
    assert all_leads(services)[0]["account_id"] == acct["id"]
    # Same groupId, other person: same account.
    send("group", userId="u2", groupId="acct-42", messageId="3")
    # Other groupId, same domain: matched by domain, no new account.
    send("group", userId="u3", groupId="crm-7", messageId="4", traits={"domain": "acme.io"})
    rows = all_leads(services)
    assert [r["account_id"] for r in rows] == [acct["id"]] * 3
    with services.engine.connect() as conn:
        assert len(conn.execute(select(accounts)).all()) == 1


def test_company_trait_on_identify_links_an_account_by_email_domain(
    send: Any, services: Services
) -> None:
    send("group", userId="g", groupId="x", messageId="0", traits={"domain": "bigco.kr"})
    send("identify", userId="p", messageId="1", traits={"email": "p@bigco.kr", "company": "BigCo"})
    rows = {r["user_id"]: r for r in all_leads(services)}
    assert rows["p"]["account_id"] == rows["g"]["account_id"] is not None


def test_out_of_order_identify_before_page_view_still_stitches(
    send: Any, services: Services
) -> None:
    send(
        "identify",
        anonymousId="late",
        userId="u-late",
        messageId="i",
        timestamp="2024-05-01T10:05:00Z",
    )
    send(
        "page",
        anonymousId="late",
        messageId="p",
        timestamp="2024-05-01T10:00:00Z",
        properties={"url": "/pricing"},
    )
    (lead,) = all_leads(services)
    assert event_leads(services) == {"i": lead["id"], "p": lead["id"]}


def test_anonymous_group_call_links_the_account_once_identified(
    send: Any, services: Services
) -> None:
    send("group", anonymousId="g-anon", groupId="acct-9", messageId="g", traits={"name": "N"})
    send("identify", anonymousId="g-anon", messageId="i", traits={"email": "n@n.io"})
    (lead,) = all_leads(services)
    with services.engine.connect() as conn:
        acct = conn.execute(select(accounts.c.id).where(accounts.c.external_id == "acct-9"))
        assert lead["account_id"] == acct.scalar_one()


def test_identify_without_email_or_user_id_keeps_the_visitor_anonymous(
    send: Any, services: Services
) -> None:
    send("identify", anonymousId="shy", messageId="i", traits={"plan": "free"})
    assert all_leads(services) == []
    assert event_leads(services) == {"i": None}


def test_consent_trait_is_recorded(send: Any, services: Services) -> None:
    send("identify", userId="c", messageId="1", traits={"email": "c@c.io", "consent": True})
    (lead,) = all_leads(services)
    assert (lead["consent_status"], lead["consent_method"]) == ("granted", "identify")


def test_group_target_account_trait_is_stored_on_the_account(send: Any, services: Services) -> None:
    send("identify", userId="u1", messageId="1", traits={"email": "a@acme.io"})
    send("group", userId="u1", groupId="acct-1", messageId="2", traits={"target_account": True})
    with services.engine.connect() as conn:
        assert conn.execute(select(accounts.c.is_target)).scalar_one() is True
    send("group", userId="u1", groupId="acct-1", messageId="3", traits={"is_target": False})
    send("group", userId="u1", groupId="acct-1", messageId="4", traits={"is_target": "yes"})
    with services.engine.connect() as conn:
        # The CRM said no; a non-boolean value changes nothing.
        assert conn.execute(select(accounts.c.is_target)).scalar_one() is False


def test_a_consent_withdrawn_on_one_record_holds_after_the_merge(
    send: Any, services: Services
) -> None:
    """Regression (issue 12): merging kept the older record's ``granted`` consent although
    the person had unsubscribed (withdrawn it) on the other record later."""
    from leadflow.services import mailing

    send("identify", userId="old-id", messageId="1", traits={"email": "o@x.io", "consent": True})
    send("identify", userId="new-id", messageId="2", traits={"email": "n@x.io", "consent": True})
    first, second = all_leads(services)
    now = datetime.now(UTC)
    with services.engine.begin() as conn:
        send_id = mailing.plan_email(
            conn, idempotency_key="k", lead_id=second["id"], now=now, subject="Hello"
        )
    assert send_id is not None
    assert mailing.unsubscribe(services, send_id, now, method="page") == "n@x.io"
    send("alias", userId="new-id", previousId="old-id", messageId="3")
    (lead,) = all_leads(services)
    assert lead["id"] == first["id"]
    assert (lead["consent_status"], lead["consent_method"]) == (
        "denied",
        "withdrawn: unsubscribe (page)",
    )
    assert lead["unsubscribed_at"] == lead["consent_at"] is not None
