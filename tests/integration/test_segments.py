"""Segments on both backends: every criterion kind, joins and leaves as data changes,
audience sync (signals → webhook deliveries), the CSV audience export, hostile input."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from leadflow.adapters.db.tables import (
    accounts,
    lead_states,
    leads,
    segment_members,
    signals,
    webhook_deliveries,
)
from leadflow.entrypoints.cli import app as cli_app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import privacy, webhooks
from leadflow.services import segments as seg

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


@pytest.fixture
def api(client, admin_token, services):
    services.clock = lambda: T0 + timedelta(days=1)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def _send(client, key, kind, body):
    r = client.post(f"/v1/{kind}", json=body, auth=(key, ""))
    assert r.status_code == 200, r.text


def _person(client, key, user, at, **traits):
    _send(
        client,
        key,
        "identify",
        {
            "userId": user,
            "messageId": f"id-{user}",
            "timestamp": at.isoformat(),
            "traits": {"email": f"{user}@{user}corp.example", **traits},
        },
    )


def _page(client, key, user, url, at, n=0):
    _send(
        client,
        key,
        "page",
        {
            "userId": user,
            "messageId": f"pg-{user}-{n}-{at.isoformat()}",
            "timestamp": at.isoformat(),
            "properties": {"url": url},
        },
    )


def _track(client, key, user, event, at, n=0):
    _send(
        client,
        key,
        "track",
        {
            "userId": user,
            "event": event,
            "messageId": f"tr-{user}-{event}-{n}",
            "timestamp": at.isoformat(),
        },
    )


def _ids(services) -> dict[str, int]:
    with services.engine.connect() as conn:
        return {
            r.email.split("@")[0]: int(r.id)
            for r in conn.execute(
                select(leads.c.id, leads.c.email).where(leads.c.email.is_not(None))
            )
        }


def _members(services, criteria, now) -> set[str]:
    names = {v: k for k, v in _ids(services).items()}
    with services.engine.begin() as conn:
        key = f"s{abs(hash(json.dumps(criteria, sort_keys=True))) % 10**9}"
        seg.create(conn, key, "t", criteria, now)
        seg.refresh(conn, key, now)
        found = {names.get(i, f"#{i}") for i in seg.member_ids(conn, key)}
        seg.delete_segment(conn, key)
    return found


def _world(services, client, key):
    """ann: target bank in KR, pro plan, visited pricing twice; bob: retailer in US, free
    plan, read docs about pricing long ago; cy: no consent; dan: erased."""
    _person(
        client,
        key,
        "ann",
        T0,
        first_name="Ann",
        company={
            "name": "Acme Bank",
            "industry": "Financial services",
            "employees": 300,
            "country": "KR",
        },
        plan="pro",
        seats=5,
        beta=True,
        consent={"status": "granted"},
    )
    _person(
        client,
        key,
        "bob",
        T0,
        first_name="Bob",
        company={"name": "Shop", "industry": "Retail", "employees": 20, "country": "US"},
        plan="free",
        beta=False,
        consent={"status": "granted"},
    )
    _person(client, key, "cy", T0, first_name="Cy", plan="Pro")
    _person(client, key, "dan", T0, first_name="Dan", plan="pro", consent={"status": "granted"})
    _page(client, key, "ann", "https://www.example.com/pricing/enterprise?x=1", T0, 1)
    _page(client, key, "ann", "https://www.example.com/Pricing/team", T0 + timedelta(hours=1), 2)
    _page(client, key, "bob", "https://www.example.com/docs/pricing/faq", T0, 1)
    _page(client, key, "bob", "https://www.example.com/pricing/old", T0 - timedelta(days=40), 2)
    _page(client, key, "cy", "/pricing/", T0, 1)
    _track(client, key, "bob", "demo_request", T0)
    ids = _ids(services)
    with services.engine.begin() as conn:
        acme = conn.execute(select(leads.c.account_id).where(leads.c.id == ids["ann"])).scalar()
        conn.execute(
            update(accounts).where(accounts.c.id == acme).values(is_target=True, owner="kim")
        )
        for user, stage, score, fit, grade in (
            ("ann", "mql", 120.0, 80.0, "A"),
            ("bob", "nurturing", 40.0, 30.0, "C"),
            ("cy", "acquired", 5.0, 10.0, "D"),
            ("dan", "mql", 150.0, 90.0, "A"),
        ):
            conn.execute(
                update(lead_states)
                .where(lead_states.c.lead_id == ids[user])
                .values(stage=stage, engagement=score, fit=fit, fit_grade=grade)
            )
    privacy.erase_person(services.engine, "dan@dancorp.example", now=T0 + timedelta(hours=2))
    return ids


def test_membership_for_each_criterion_kind(services, client, write_key):
    _world(services, client, write_key)
    now = T0 + timedelta(days=1)
    cases = [
        ({}, {"ann", "bob", "cy"}),  # everyone, never the erased dan
        ({"stage": ["mql"]}, {"ann"}),
        ({"stage": ["mql", "nurturing"]}, {"ann", "bob"}),
        ({"score": {"min": 40}}, {"ann", "bob"}),
        ({"score": {"min": 10, "max": 100}}, {"bob"}),
        ({"fit": {"max": 30}}, {"bob", "cy"}),
        ({"fit_grade": ["A", "B"]}, {"ann"}),
        ({"attributes": {"plan": ["pro"]}}, {"ann", "cy"}),  # case-insensitive
        ({"attributes": {"plan": ["free", "enterprise"]}}, {"bob"}),
        ({"attributes": {"seats": [5]}}, {"ann"}),
        ({"attributes": {"beta": [True]}}, {"ann"}),
        ({"attributes": {"beta": [False]}}, {"bob"}),
        ({"lead": {"consent": ["granted"]}}, {"ann", "bob"}),
        ({"lead": {"consent": ["unknown"], "has_email": True}}, {"cy"}),
        ({"account": {"industry": ["financial services"]}}, {"ann"}),
        ({"account": {"country": ["US", "JP"]}}, {"bob"}),
        ({"account": {"employee_count": {"min": 100}}}, {"ann"}),
        ({"account": {"employee_count": {"max": 100}}}, {"bob"}),
        ({"account": {"is_target": True}}, {"ann"}),
        ({"account": {"is_target": False}}, {"bob", "cy"}),
        ({"account": {"owner": ["kim"]}}, {"ann"}),
        # "visited pricing in the last 14 days": bob's pricing visit is 40 days old and
        # /docs/pricing/faq is not under /pricing/.
        ({"event": {"type": "page", "path": "/pricing/*", "within_days": 14}}, {"ann", "cy"}),
        ({"event": {"type": "page", "path": "/pricing/*"}}, {"ann", "bob", "cy"}),
        ({"event": {"type": "page", "path": "/pricing/*", "min_count": 2}}, {"ann"}),
        ({"event": {"type": "page", "path": "/pricing/???"}}, {"bob"}),
        ({"event": {"type": "track", "name": "demo_request", "within_days": 7}}, {"bob"}),
        ({"any": [{"stage": ["mql"]}, {"account": {"country": ["US"]}}]}, {"ann", "bob"}),
        ({"all": [{"score": {"min": 1}}, {"not": {"stage": ["mql"]}}]}, {"bob", "cy"}),
        ({"not": {"account": {"industry": ["retail"]}}}, {"ann", "cy"}),
        ({"program": {"key": "nurture"}}, set()),
    ]
    for criteria, expected in cases:
        assert _members(services, criteria, now) == expected, criteria


def test_mql_retargeting_joins_then_leaves_with_audience_sync(services, api, write_key):
    with services.engine.begin() as conn:
        hook = webhooks.create_endpoint(
            conn,
            "http://127.0.0.1:9/audience",
            ["segment.joined", "segment.left"],
            T0,
            allow_private=True,
        )
    r = api.post(
        "/api/segments",
        json={
            "key": "retarget-mql",
            "name": "Retarget MQLs",
            "criteria": {"stage": ["mql"]},
            "sync": True,
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["member_count"] == 0

    _person(api, write_key, "eve", T0, first_name="Eve", consent={"status": "granted"})
    assert api.post("/api/segments/retarget-mql/refresh").json()["joined"] == 0
    _track(api, write_key, "eve", "quote_request", T0 + timedelta(minutes=5))  # fast pass → MQL
    eve = _ids(services)["eve"]
    r = api.post("/api/segments/retarget-mql/refresh")
    assert (r.json()["joined"], r.json()["left"], r.json()["member_count"]) == (1, 0, 1)
    members = api.get("/api/segments/retarget-mql/members").json()
    assert [m["lead_id"] for m in members["members"]] == [eve] and members["total"] == 1

    assert api.post(f"/api/leads/{eve}/accept").status_code == 200  # mql → appointment
    with services.engine.connect() as conn:
        assert (
            conn.execute(select(lead_states.c.stage).where(lead_states.c.lead_id == eve)).scalar()
            != "mql"
        )
    assert seg.refresh_all(services.engine, T0 + timedelta(days=2)) == {"retarget-mql": (0, 1)}

    feed = api.get("/api/segments/retarget-mql/changes").json()
    assert [(c["lead_id"], c["change"]) for c in feed["changes"]] == [(eve, "join"), (eve, "leave")]
    first = feed["changes"][0]["id"]
    later = api.get(f"/api/segments/retarget-mql/changes?after={first}").json()["changes"]
    assert [c["change"] for c in later] == ["leave"]

    digest = hashlib.sha256(b"eve@evecorp.example").hexdigest()
    with services.engine.connect() as conn:
        rows = (
            conn.execute(
                select(signals).where(signals.c.name.like("segment.%")).order_by(signals.c.id)
            )
            .mappings()
            .all()
        )
    assert [r["name"] for r in rows] == ["segment.joined", "segment.left"]
    assert rows[0]["data"] == {
        "segment": "retarget-mql",
        "segment_name": "Retarget MQLs",
        "change": "join",
        "email": "eve@evecorp.example",
        "email_sha256": digest,
    }
    assert rows[1]["data"]["change"] == "leave" and rows[1]["data"]["email_sha256"] == digest
    # The webhook worker turns them into deliveries of the subscribed event types.
    with services.engine.begin() as conn:
        webhooks.enqueue_new(conn, T0 + timedelta(days=2))
        deliveries = conn.execute(
            select(webhook_deliveries.c.event_type, webhook_deliveries.c.payload)
            .where(webhook_deliveries.c.endpoint_id == hook["id"])
            .order_by(webhook_deliveries.c.id)
        ).all()
    assert [d.event_type for d in deliveries] == ["segment.joined", "segment.left"]
    assert deliveries[0].payload["data"]["email_sha256"] == digest
    assert deliveries[0].payload["lead"]["id"] == eve


def test_a_segment_without_sync_writes_no_signals_and_an_erased_member_leaves(
    services, api, write_key
):
    _person(api, write_key, "fay", T0, consent={"status": "granted"}, plan="pro")
    _person(api, write_key, "gus", T0, consent={"status": "granted"}, plan="pro")
    for key, sync in (("pro", False), ("pro-sync", True), ("pro-sync-2", True)):
        r = api.post(
            "/api/segments",
            json={
                "key": key,
                "name": key,
                "sync": sync,
                "criteria": {"attributes": {"plan": ["pro"]}},
            },
        )
        assert r.json()["member_count"] == 2
    privacy.erase_person(
        services.engine,
        "fay@faycorp.example",
        now=T0 + timedelta(hours=3),
        hooks=[seg.scrub_erased],
    )
    assert seg.refresh_all(services.engine, T0 + timedelta(days=1)) == {
        "pro": (0, 1),
        "pro-sync": (0, 1),
        "pro-sync-2": (0, 1),
    }
    fay_hash = hashlib.sha256(b"fay@faycorp.example").hexdigest()
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(signals.c.name, signals.c.data, signals.c.rule)
            .where(signals.c.name.like("segment.%"))
            .order_by(signals.c.id)
        ).all()
    # Two synced segments joined in the same pass: one signal each.
    assert sorted((r.rule, r.name) for r in rows) == [
        ("segment:pro-sync", "segment.joined"),
        ("segment:pro-sync", "segment.joined"),
        ("segment:pro-sync", "segment.left"),
        ("segment:pro-sync-2", "segment.joined"),
        ("segment:pro-sync-2", "segment.joined"),
        ("segment:pro-sync-2", "segment.left"),
    ]
    fay_rows = [
        r for r in rows if r.data["email_sha256"] == fay_hash and r.rule == "segment:pro-sync"
    ]
    # Only the hash is left of the erased person: enough to remove it from an audience.
    assert [(r.name, r.data["email"]) for r in fay_rows] == [
        ("segment.joined", None),
        ("segment.left", None),
    ]
    assert api.get("/api/segments/pro").json()["member_count"] == 1


def test_csv_export_is_safe_against_formulas(services, api, write_key):
    _person(
        api,
        write_key,
        "hal",
        T0,
        first_name='=HYPERLINK("http://evil.example","x")',
        last_name="+1+2",
        company="@SUM(A1)",
        consent={"status": "granted"},
    )
    api.post("/api/segments", json={"key": "all", "name": "All", "criteria": {}})
    r = api.get("/api/segments/all/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["email", "email_sha256", "first_name", "last_name", "company", "stage"]
    assert rows[0]["first_name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert rows[0]["last_name"] == "'+1+2"
    assert rows[0]["email_sha256"] == hashlib.sha256(b"hal@halcorp.example").hexdigest()
    assert all(not v.startswith(("=", "+", "-", "@")) for row in rows for v in row.values())


def test_hostile_criteria_are_refused_or_treated_as_data(services, api, write_key):
    _person(api, write_key, "ivy", T0, consent={"status": "granted"}, plan="pro")
    r = api.post(
        "/api/segments",
        json={"key": "x", "name": "x", "criteria": {"attributes": {"plan') OR 1=1 --": ["pro"]}}},
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("criteria.attributes.")
    r = api.post(
        "/api/segments", json={"key": "x", "name": "x", "criteria": {"score": {"min": "1 OR 1=1"}}}
    )
    assert r.status_code == 422 and r.json()["detail"] == "criteria.score.min: expected a number"
    r = api.post("/api/segments", json={"key": "x'; --", "name": "x", "criteria": {}})
    assert r.status_code == 422 and r.json()["detail"].startswith("key:")
    for criteria in (
        {"attributes": {"plan": ["x' OR '1'='1"]}},
        {"stage": ["mql'; DROP TABLE leads; --"]},
        {"account": {"industry": ["' OR 1=1 --"]}},
        {"event": {"type": "page", "path": "/%' OR 1=1 --"}},
        {"event": {"name": 'x"); DELETE FROM events; --'}},
    ):
        r = api.post(
            "/api/segments",
            json={"key": "hostile", "name": "<script>x</script>", "criteria": criteria},
        )
        assert r.status_code == 201, r.text
        assert r.json()["member_count"] == 0, criteria
        assert api.delete("/api/segments/hostile").status_code == 204
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(leads)).scalar() == 1
    # A % in a path glob is a literal character, not a LIKE wildcard.
    _page(api, write_key, "ivy", "https://x.example/pricing", T0)
    assert _members(services, {"event": {"path": "/pri%"}}, T0 + timedelta(days=1)) == set()
    assert _members(services, {"event": {"path": "/pri*"}}, T0 + timedelta(days=1)) == {"ivy"}


def test_api_crud_and_errors(services, api):
    r = api.post("/api/segments", json={"key": "a", "name": "A", "criteria": {"stage": ["mql"]}})
    assert r.status_code == 201
    assert (
        api.post("/api/segments", json={"key": "a", "name": "A", "criteria": {}}).status_code == 409
    )
    r = api.patch("/api/segments/a", json={"criteria": {"fit": {"min": "high"}}})
    assert r.status_code == 422 and r.json()["detail"] == "criteria.fit.min: expected a number"
    r = api.patch("/api/segments/a", json={"name": "Renamed", "sync": True})
    assert r.json()["name"] == "Renamed" and r.json()["sync"] is True
    assert api.get("/api/segments/a").json()["criteria"] == {"stage": ["mql"]}
    assert [s["key"] for s in api.get("/api/segments").json()["segments"]] == ["a"]
    assert api.get("/api/segments/nope").status_code == 404
    assert api.get("/api/segments/nope/members").status_code == 404
    assert api.get("/api/segments/a/members?limit=0").status_code == 422
    assert api.delete("/api/segments/a").status_code == 204
    assert api.get("/api/segments/a").status_code == 404


def test_cli_create_show_refresh_export(services, db_url, client, write_key, tmp_path, capsys):
    _person(client, write_key, "jo", T0, first_name="-Jo", consent={"status": "granted"})
    crit = tmp_path / "c.yaml"
    crit.write_text("lead:\n  consent: [granted]\n", encoding="utf-8")
    base = ["--database-url", db_url]
    assert (
        run_guarded(
            cli_app, ["segments", "create", "ok", "--name", "OK", "--criteria", str(crit), *base]
        )
        == 0
    )
    assert "segment ok: 1 members" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"score": {"min": "x"}}', encoding="utf-8")
    assert (
        run_guarded(
            cli_app, ["segments", "create", "bad", "--name", "B", "--criteria", str(bad), *base]
        )
        != 0
    )
    assert "error: criteria.score.min: expected a number" in capsys.readouterr().err
    assert run_guarded(cli_app, ["segments", "refresh", *base]) == 0
    assert "ok: +0 -0" in capsys.readouterr().out
    assert run_guarded(cli_app, ["segments", "show", "ok", *base]) == 0
    assert "members: 1" in capsys.readouterr().out
    out = tmp_path / "aud.csv"
    assert run_guarded(cli_app, ["segments", "export", "ok", "--out", str(out), *base]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows[0]["first_name"] == "'-Jo" and rows[0]["email"] == "jo@jocorp.example"
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(segment_members)).scalar() == 1
