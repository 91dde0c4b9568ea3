"""Erasure leaves nothing behind, export is everything, and an erased address never comes
back: a person with every kind of data, on SQLite and PostgreSQL.

The tables are derived from the schema (``metadata``), so a table added later is checked
without changing these tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.integration.test_handoff import T0, Clock, _mql
from tests.integration.test_webhooks import Receiver

from leadflow.adapters.db.tables import (
    crm_updates,
    email_sends,
    leads,
    metadata,
    webhook_deliveries,
)
from leadflow.adapters.email import build_mailer
from leadflow.adapters.webhooks import HttpSender
from leadflow.entrypoints.cli import app as cli_app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import crm, importer, mailing, privacy, webhooks
from leadflow.services.privacy import links

EMAIL = "Jisoo.Parkhurst@Orbitalia.example"
ADDRESS = EMAIL.lower()
FIRST, LAST = "Jisoo", "Parkhurst"
FORBIDDEN = (ADDRESS, FIRST.lower(), LAST.lower(), "jisoo.parkhurst%40orbitalia.example")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sender() -> Iterator[HttpSender]:
    with HttpSender(allow_private=True, timeout=5) as s:
        yield s


@pytest.fixture
def clock(services):
    c = Clock(T0)
    services.clock = c
    return c


@pytest.fixture
def api(client, admin_token, clock, services, monkeypatch):
    monkeypatch.setattr(services.settings, "webhooks_allow_private_targets", True)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _v1(api, write_key, kind: str, body: dict[str, Any]) -> None:
    _ok(api.post(f"/v1/{kind}", json=body, auth=(write_key, "")))


def _dump(services) -> dict[str, str]:
    """Every table, every row, as lower-cased text."""
    with services.engine.connect() as conn:
        return {
            table.name: json.dumps(
                [dict(r) for r in conn.execute(select(table)).mappings()], default=str
            ).lower()
            for table in metadata.sorted_tables
        }


def _leaks(services) -> list[tuple[str, str]]:
    return [
        (name, word) for name, text in _dump(services).items() for word in FORBIDDEN if word in text
    ]


@pytest.fixture
def person(services, api, write_key, clock, receiver, sender) -> int:
    """A person with everything: events with traits, a form with consent, stage changes,
    scores, hand-off, sales actions with notes, an opportunity named after them, a CRM
    update naming the address, webhook deliveries, e-mail sends with opens and clicks,
    segment membership."""
    _ok(api.post("/api/webhooks", json={"url": receiver.url, "event_types": ["*"]}), 201)
    _ok(
        api.post(
            "/api/segments",
            json={"key": "everyone", "name": "Everyone", "criteria": {}, "sync": True},
        ),
        201,
    )
    context = {
        "ip": "198.51.100.23",
        "userAgent": "Mozilla/5.0 (Parkhurst laptop)",
        "page": {"url": f"https://site.example/pricing?email={EMAIL.replace('@', '%40')}"},
    }
    _v1(
        api,
        write_key,
        "page",
        {
            "anonymousId": "anon-jp",
            "timestamp": clock().isoformat(),
            "context": context,
            "properties": {"url": f"https://site.example/pricing?email={EMAIL}"},
        },
    )
    form = {
        "email": EMAIL,
        "first_name": FIRST,
        "last_name": LAST,
        "company": "Orbitalia",
        "consent": True,
        "anonymousId": "anon-jp",
        "page_url": f"https://site.example/whitepapers?from={FIRST}",
    }
    r = api.post("/f/white-paper", json=form, headers={"User-Agent": "JisooBrowser/1.0"})
    _ok(r)
    _v1(
        api,
        write_key,
        "identify",
        {
            "userId": "crm-jp-7",
            "anonymousId": "anon-jp",
            "timestamp": clock().isoformat(),
            "traits": {
                "email": EMAIL,
                "firstName": FIRST,
                "lastName": LAST,
                "phone": "010-7777-4242",
                "consent": {"status": "granted"},
            },
        },
    )
    _v1(
        api,
        write_key,
        "group",
        {
            "userId": "crm-jp-7",
            "groupId": "orb-1",
            "timestamp": clock().isoformat(),
            "traits": {
                "name": "Orbitalia",
                "domain": "orbitalia.example",
                "founder": f"{FIRST} {LAST}",
            },
        },
    )
    for event, props in (
        ("content_download", {"asset": "Guide", "asset_type": "white_paper", "by": LAST}),
        ("catalogue_request", {"note": f"{FIRST} {LAST} wants the catalogue"}),
    ):
        _v1(
            api,
            write_key,
            "track",
            {
                "userId": "crm-jp-7",
                "event": event,
                "timestamp": clock().isoformat(),
                "properties": props,
                "context": {**context, "traits": {"email": EMAIL}},
            },
        )
    with services.engine.connect() as conn:
        lead_id = int(conn.execute(select(leads.c.id).where(leads.c.email == ADDRESS)).scalar_one())
    _ok(api.post("/api/segments/everyone/refresh"))
    _ok(api.post(f"/api/leads/{lead_id}/accept", json={"actor": f"rep who met {FIRST}"}))
    bant = {k: "confirmed" for k in ("budget", "authority", "need", "timeframe")}
    qualified = _ok(
        api.post(
            f"/api/leads/{lead_id}/qualify",
            json={
                **bant,
                "amount": 5e7,
                "name": f"{FIRST} {LAST} - Orbitalia rollout",
                "actor": f"note: {FIRST} asked for a demo ({EMAIL})",
                "role": "decision_maker",
            },
        )
    )
    assert qualified["opportunity_id"]
    _ok(
        api.post(
            "/api/crm/updates",
            json={"external_id": "hs-77", "update_id": "u-77", "lead_email": EMAIL, "amount": 6e7},
        )
    )
    now = clock()
    with services.engine.begin() as conn:
        send_id = mailing.plan_email(
            conn,
            idempotency_key=f"test:{lead_id}:hello",
            lead_id=lead_id,
            subject=f"Hello {FIRST}",
            now=now,
            category="transactional",
        )
    assert send_id is not None
    with build_mailer(services.settings) as mailer:
        mailing.deliver_planned(services, mailer, now, worker_id="test")
    assert mailing.record_open(services, send_id, now)
    assert mailing.record_click(services, send_id, f"https://site.example/?who={FIRST}", now)
    with services.engine.begin() as conn:
        webhooks.enqueue_new(conn, now)
    report = webhooks.deliver_due(services.engine, now, sender)
    assert report.delivered > 0
    assert any(ADDRESS.encode() in body for body in receiver.ok_bodies())
    return lead_id


def test_every_table_is_in_the_privacy_map():
    """A table added later must be linked to the person or listed as not personal."""
    assert links.check_coverage() == []
    linked = {t.name for t, _ in links.person_tables()}
    assert not linked & set(links.NOT_PERSONAL)
    for table in metadata.sorted_tables:
        holds_lead = links.lead_columns(table) or any(
            c.name.endswith("lead_id") for c in table.columns
        )
        if holds_lead and table.name != "leads":
            assert table.name in linked, table.name


def test_the_person_really_is_everywhere(services, person):
    """The fixture reaches every table the tests below are about (else they prove little)."""
    leaks = {name for name, word in _leaks(services) if word == ADDRESS}
    assert "accounts" in {name for name, word in _leaks(services) if word == LAST.lower()}
    for name in ("leads", "events", "form_submissions", "email_sends", "crm_updates"):
        assert name in leaks, name
    assert "webhook_deliveries" in leaks and "signals" in leaks  # segment.joined
    names = {name for name, word in _leaks(services) if word == FIRST.lower()}
    assert {"opportunities", "sales_actions"} <= names


def test_erase_leaves_nothing_that_identifies_the_person(
    services, api, person, receiver, sender, clock
):
    result = _ok(api.post("/api/privacy/erase", json={"email": EMAIL.upper()}))
    assert result["lead_id"] == person and result["rows_scrubbed"] > 0
    assert _leaks(services) == []
    with services.engine.connect() as conn:
        tomb = conn.execute(select(leads).where(leads.c.id == person)).mappings().one()
        send = conn.execute(select(email_sends)).mappings().one()
    assert tomb["erased_at"] is not None
    assert send["status"] == "sent" and send["opened_at"] and send["clicked_at"]  # figures stay
    # A replay of an old delivery sends the scrubbed payload: the tombstone, erased_at set.
    log = _ok(api.get("/api/webhooks/deliveries?status=delivered"))["deliveries"]
    assert log
    before = len(receiver.requests)
    for delivery in log:
        _ok(api.post(f"/api/webhooks/deliveries/{delivery['id']}/replay"))
    webhooks.deliver_due(services.engine, clock(), sender)
    sent = receiver.requests[before:]
    # (A delivery the loaded machine timed out goes back to the queue: not all need arrive.)
    assert {h["Leadflow-Delivery"] for h, _, _ in sent} & {str(d["id"]) for d in log}
    for _, raw, _ in sent:
        body = json.loads(raw)
        text = json.dumps(body).lower()
        assert not [w for w in FORBIDDEN if w in text], body
        assert body["lead"]["email"] is None and body["lead"]["erased_at"] is not None


def test_an_erased_address_is_never_stored_or_mailed_again(
    services, api, write_key, person, clock, tmp_path: Path
):
    _ok(api.post("/api/privacy/erase", json={"email": EMAIL}))
    outbox = Path(services.settings.mail_dir)
    mailed = sorted(outbox.iterdir()) if outbox.exists() else []
    # Tracking: context.traits, traits, properties, URLs, and the address as the userId.
    _v1(
        api,
        write_key,
        "track",
        {
            "anonymousId": "anon-new",
            "event": "pricing_viewed",
            "context": {"traits": {"email": EMAIL.upper()}},
            "properties": {"contact": f"write to {EMAIL}", "email": ADDRESS},
        },
    )
    _v1(api, write_key, "identify", {"anonymousId": "anon-new", "traits": {"email": EMAIL}})
    _v1(
        api,
        write_key,
        "page",
        {"anonymousId": "anon-new", "properties": {"url": f"https://x.example/?e={EMAIL}"}},
    )
    _v1(api, write_key, "identify", {"userId": EMAIL, "traits": {"plan": "pro"}})
    _v1(
        api,
        write_key,
        "batch",
        {"batch": [{"type": "alias", "userId": "someone", "previousId": ADDRESS}]},
    )
    # A form on a device that already belongs to someone else.
    _v1(
        api,
        write_key,
        "identify",
        {"userId": "other-1", "anonymousId": "anon-other", "traits": {"email": "o@x.example"}},
    )
    for anon in ("anon-form", "anon-other"):
        _ok(
            api.post(
                "/f/white-paper",
                json={
                    "email": EMAIL,
                    "first_name": "Someone",
                    "company": "Elsewhere",
                    "consent": True,
                    "anonymousId": anon,
                    "page_url": f"https://site.example/wp?email={EMAIL}",
                },
            )
        )
    # An import: the address as a row's e-mail (rejected) and as another row's attribute.
    csv = tmp_path / "list.csv"
    csv.write_text(
        f"email,first_name,assistant\n{EMAIL},X,\nfriend@x.example,Friend,{EMAIL}\n",
        encoding="utf-8",
    )
    summary = importer.import_leads(services.engine, csv, now=clock())
    assert (summary.created, summary.rejected) == (1, 1)
    assert ADDRESS not in Path(summary.rejects_path).read_text(encoding="utf-8").lower()
    # A CRM update naming the address.
    r = _ok(
        api.post(
            "/api/crm/updates",
            json={"external_id": "hs-88", "update_id": "u-88", "lead_email": EMAIL, "amount": 1e6},
        )
    )
    assert r["lead_id"] is None
    with services.engine.begin() as conn:
        crm.apply_update(
            conn,
            services.models.active(conn, clock()),
            {"external_id": "hs-77", "update_id": "u-89", "lead_email": EMAIL, "amount": 7e7},
            clock(),
        )
    # Sales typing the address into a note or a deal name (on someone else's lead).
    _mql(api, write_key, "bystander", clock())
    with services.engine.connect() as conn:
        other = conn.execute(
            select(leads.c.id).where(leads.c.email == "bystander@acmebystander.example")
        ).scalar_one()
    _ok(api.post(f"/api/leads/{other}/accept", json={"actor": f"ask {EMAIL}"}))
    _ok(
        api.post(
            "/api/opportunities",
            json={"name": f"Deal via {EMAIL}", "lead_id": other, "contacts": []},
        ),
        201,
    )
    # The test e-mail: refused, naming the field, and nothing is mailed.
    r = api.post("/api/email/test", json={"to": EMAIL, "template": "nurture"})
    assert r.status_code == 409 and r.json()["detail"].startswith("to: "), r.text
    with pytest.raises(privacy.AddressSuppressed, match=r"^to: "):
        mailing.send_test(services.settings, EMAIL, "nurture", clock(), engine=services.engine)
    assert (sorted(outbox.iterdir()) if outbox.exists() else []) == mailed

    leaks = [(name, word) for name, word in _leaks(services) if word == ADDRESS]
    assert leaks == []
    with services.engine.connect() as conn:
        assert conn.execute(select(crm_updates.c.id)).all()  # the updates themselves stay
        assert conn.execute(select(leads.c.id).where(leads.c.email == "friend@x.example")).one()


def _fk_rows(services, lead_id: int) -> dict[str, set[tuple[Any, ...]]]:
    """Primary keys of every row with a foreign key to leads.id equal to the lead, found
    from the schema alone (independently of the privacy map)."""
    found: dict[str, set[tuple[Any, ...]]] = {}
    with services.engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [
                c for c in table.columns if any(fk.column.table is leads for fk in c.foreign_keys)
            ]
            if not columns or table is leads:
                continue
            pk = list(table.primary_key.columns)
            rows = set()
            for column in columns:
                rows |= {tuple(r) for r in conn.execute(select(*pk).where(column == lead_id))}
            found[table.name] = rows
    return found


def test_export_holds_every_row_of_every_table_about_the_person(services, api, person):
    data = _ok(api.get("/api/privacy/export", params={"email": EMAIL}))
    assert data["email"] == ADDRESS and data["lead"]["id"] == person
    assert data["account"]["name"] == "Orbitalia"
    expected = _fk_rows(services, person)
    for name, rows in expected.items():
        assert name in data, f"export misses table {name}"
        pk = [c.name for c in metadata.tables[name].primary_key.columns]
        exported = {tuple(r[c] for c in pk) for r in data[name]}
        assert rows <= exported, name
    # Tables that hold the person without a foreign key are exported too.
    for name in links.INDIRECT:
        assert name in data, name
    for name in (
        "form_submissions",
        "stage_changes",
        "lead_states",
        "assignments",
        "sales_actions",
        "opportunities",
        "opportunity_contacts",
        "email_sends",
        "segment_members",
        "crm_updates",
        "webhook_deliveries",
        "webhook_attempts",
    ):
        assert data[name], f"nothing exported from {name}"
    consent = data["form_submissions"][0]
    assert consent["consent"]["granted"] is True and consent["consent"]["text"]
    assert consent["consent"]["at"] and consent["page_url"] and consent["ip"]
    assert consent["user_agent"] == "JisooBrowser/1.0"
    send = data["email_sends"][0]
    assert send["opened_at"] and send["clicked_at"]
    assert {d["payload"]["lead"]["id"] for d in data["webhook_deliveries"]} == {person}
    assert data["opportunities"][0]["name"].startswith(f"{FIRST} {LAST}")
    assert [u["update_id"] for u in data["crm_updates"]] == ["u-77"]
    json.dumps(data)  # JSON-ready as it is


def test_export_by_cli_writes_the_same_tables(services, person, tmp_path, capsys):
    out = tmp_path / "me.json"
    db = ["--database-url", services.settings.database_url]
    assert run_guarded(cli_app, ["leads", "export", EMAIL, "--out", str(out), *db]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert {t.name for t, _ in links.person_tables()} <= set(data)
    assert data["webhook_deliveries"] and data["crm_updates"]
    assert run_guarded(cli_app, ["leads", "erase", EMAIL, "--yes", *db]) == 0
    assert "other rows scrubbed" in capsys.readouterr().out
    assert _leaks(services) == []


def test_deliveries_about_other_people_are_left_alone(services, api, write_key, person, clock):
    _mql(api, write_key, "bystander", clock())
    with services.engine.begin() as conn:
        webhooks.enqueue_new(conn, clock())
        before = {
            r.id: r.payload
            for r in conn.execute(select(webhook_deliveries.c.id, webhook_deliveries.c.payload))
        }
    other = {k: v for k, v in before.items() if (v.get("lead") or {}).get("id") != person}
    assert other and "bystander@acmebystander.example" in json.dumps(other)
    _ok(api.post("/api/privacy/erase", json={"email": EMAIL}))
    with services.engine.connect() as conn:
        after = {
            r.id: r.payload
            for r in conn.execute(select(webhook_deliveries.c.id, webhook_deliveries.c.payload))
        }
    assert {k: after[k] for k in other} == other


def test_what_counts_as_naming_the_person():
    from leadflow.services.privacy.scrub import Personal, scrub_json, scrub_text, strip_addresses

    who = Personal.of(email="won.lee@x.example", first_name="Lee", last_name="Won", others=[])
    # Codes that merely contain a short name stay; prose naming the person goes.
    assert scrub_json({"type": "opportunity.won", "stage": "won"}, who) == {
        "type": "opportunity.won",
        "stage": "won",
    }
    assert scrub_json({"actor": "met Won today", "owner": "Won"}, who) == {
        "actor": "[erased]",
        "owner": "[erased]",
    }
    assert scrub_json({"email": "x@y.example", "count": 3}, who) == {"email": None, "count": 3}
    assert scrub_text("Lee Won - rollout", who) == "[erased]"
    assert scrub_text("fleet rollout", who) == "fleet rollout"
    assert scrub_text("https://a.example/p?m=won.lee%40x.example", who) == "https://a.example/p"
    blocked = {"won.lee@x.example"}
    assert strip_addresses(
        {"email": "Won.Lee@X.example", "n": "to won.lee@x.example"}, blocked
    ) == {"n": "to [erased]"}
    assert strip_addresses("https://a.example/?e=won.lee%40x.example", blocked) == (
        "https://a.example/"
    )
