"""Seminars and webinars end to end on both backends: invitation (send rules, idempotent),
registration (capacity), reminder, attendance (CSV upload), follow-ups, the funnel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select, update

from leadflow.adapters.db.tables import (
    accounts,
    content_assets,
    email_sends,
    events,
    lead_states,
    leads,
    seminar_attendees,
)
from leadflow.entrypoints.cli import app as cli_app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import mailing
from leadflow.services import seminars as sem

T0 = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)
STARTS = T0 + timedelta(days=3)
ENDS = STARTS + timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock(services):
    c = Clock()
    services.clock = c
    return c


@pytest.fixture
def api(client, admin_token, clock):
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def _person(client, key, user, **traits):
    r = client.post(
        "/v1/identify",
        json={
            "userId": user,
            "messageId": f"id-{user}",
            "timestamp": T0.isoformat(),
            "traits": {"email": f"{user}@{user}corp.example", "first_name": user.title(), **traits},
        },
        auth=(key, ""),
    )
    assert r.status_code == 200, r.text


def _ids(services) -> dict[str, int]:
    with services.engine.connect() as conn:
        rows = conn.execute(select(leads.c.id, leads.c.email).where(leads.c.email.is_not(None)))
        return {r.email.split("@")[0]: int(r.id) for r in rows}


def _sends(services, template: str) -> list[dict]:
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(email_sends)
            .where(email_sends.c.template == template)
            .order_by(email_sends.c.lead_id)
        ).mappings()
        return [dict(r) for r in rows]


def _run_due(services, now: datetime) -> dict[str, int]:
    with services.engine.begin() as conn:
        return sem.run_due(conn, services.models.active(conn, now), now)


def _asset(services) -> None:
    with services.engine.begin() as conn:
        conn.execute(
            insert(content_assets).values(
                key="webinar-slides",
                title="Slides",
                type="webinar",
                stage="middle",
                gated=False,
                industries=[],
                url="/webinars/slides",
                source="api",
                active=True,
                created_at=T0,
                updated_at=T0,
            )
        )


def _audience(services, api, write_key) -> dict[str, int]:
    for user in ("ann", "bob", "cy", "dee", "eli"):
        _person(api, write_key, user, consent={"status": "granted"})
    _person(api, write_key, "nocon")  # consent unknown
    _person(api, write_key, "unsub", consent={"status": "granted"})
    ids = _ids(services)
    with services.engine.begin() as conn:
        conn.execute(update(leads).where(leads.c.id == ids["unsub"]).values(unsubscribed_at=T0))
    return ids


def test_the_full_seminar_path_with_counts_and_rates(services, api, write_key, clock):
    _asset(services)
    ids = _audience(services, api, write_key)
    r = api.post(
        "/api/seminars",
        json={
            "key": "lead-mgmt-101",
            "title": "Lead management 101",
            "kind": "webinar",
            "starts_at": STARTS.isoformat(),
            "ends_at": ENDS.isoformat(),
            "location": "https://meet.example/j/123",
            "asset_key": "webinar-slides",
        },
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    # Invitation: only leads the send rules allow; inviting again mails nobody twice.
    everyone = sorted(ids.values())
    r = api.post("/api/seminars/lead-mgmt-101/invite", json={"lead_ids": everyone})
    assert r.json() == {"invited": 5, "already": 0, "blocked": {"no_consent": 1, "unsubscribed": 1}}
    r = api.post("/api/seminars/lead-mgmt-101/invite", json={"lead_ids": everyone})
    assert r.json()["invited"] == 0 and r.json()["already"] == 5
    invites = _sends(services, "seminar_invite")
    assert sorted(s["lead_id"] for s in invites) == sorted(
        ids[u] for u in ("ann", "bob", "cy", "dee", "eli")
    )
    assert [s["idempotency_key"] for s in invites] == [
        f"seminar:{sid}:invite:{s['lead_id']}" for s in invites
    ]
    assert all(s["category"] == "marketing" and s["seminar_id"] for s in invites)
    key = services.signing.current()
    with services.engine.connect() as conn:
        message = mailing.compose(
            conn, services.settings, invites[0], services.models.active(conn, T0), key=key, now=T0
        )
    text = message.get_body(("plain",)).get_content()
    assert "Lead management 101" in text and "Hi Ann," in text
    # The start is shown in the sales team's time zone (Asia/Seoul in the default model).
    local = STARTS.astimezone(ZoneInfo("Asia/Seoul"))
    assert f"{local:%H:%M} (Asia/Seoul)" in text
    assert message["List-Unsubscribe"]

    # Registration (by id and by email); a repeat is a no-op.
    clock.at = T0 + timedelta(days=1)
    for user in ("ann", "bob", "cy"):
        r = api.post("/api/seminars/lead-mgmt-101/register", json={"lead_id": ids[user]})
        assert r.status_code == 200 and r.json()["new"] is True
    r = api.post("/api/seminars/lead-mgmt-101/register", json={"email": "DEE@deecorp.example"})
    assert r.status_code == 200, r.text
    assert (
        api.post("/api/seminars/lead-mgmt-101/register", json={"lead_id": ids["ann"]}).json()["new"]
        is False
    )
    with services.engine.connect() as conn:
        registered = conn.execute(
            select(func.count()).select_from(events).where(events.c.name == "webinar_registered")
        ).scalar()
    assert registered == 4

    # Reminders: nothing two days before, then one each in the last 24 hours.
    assert _run_due(services, T0 + timedelta(days=1))["reminders"] == 0
    assert _run_due(services, STARTS - timedelta(hours=20))["reminders"] == 4
    assert _run_due(services, STARTS - timedelta(hours=10))["reminders"] == 0
    reminders = _sends(services, "seminar_reminder")
    assert len(reminders) == 4 and {s["category"] for s in reminders} == {"transactional"}

    # Attendance from a CSV of attendee emails: dee did not come.
    clock.at = ENDS + timedelta(minutes=30)
    body = (
        "Name,Email\nAnn,ann@anncorp.example\nBob,BOB@bobcorp.example\n"
        "Cy,cy@cycorp.example\nX,nobody@x.example\n"
    )
    r = api.post(
        "/api/seminars/lead-mgmt-101/attendance", content=body, headers={"content-type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["attended"] == 3 and r.json()["no_show"] == 1
    assert r.json()["unknown_emails"] == ["nobody@x.example"]

    # Follow-ups after the end: slides for attendees, the recording for the no-show.
    counts = _run_due(services, ENDS + timedelta(hours=1))
    assert counts == {"reminders": 0, "followups_attended": 3, "followups_no_show": 1}
    assert _run_due(services, ENDS + timedelta(hours=2)) == {
        "reminders": 0,
        "followups_attended": 0,
        "followups_no_show": 0,
    }
    attended_mail = _sends(services, "followup_attended")
    assert [s["lead_id"] for s in attended_mail] == sorted(ids[u] for u in ("ann", "bob", "cy"))
    assert {s["asset_key"] for s in attended_mail} == {"webinar-slides"}
    assert [s["lead_id"] for s in _sends(services, "followup_no_show")] == [ids["dee"]]

    # ann asks for a quote after the webinar: MQL counts for the seminar.
    clock.at = ENDS + timedelta(days=1)
    r = api.post(
        "/v1/track",
        json={
            "userId": "ann",
            "event": "quote_request",
            "messageId": "q-ann",
            "timestamp": (ENDS + timedelta(days=1)).isoformat(),
        },
        auth=(write_key, ""),
    )
    assert r.status_code == 200
    r = api.get("/api/seminars/lead-mgmt-101")
    assert r.status_code == 200
    funnel = r.json()["funnel"]
    assert {
        k: funnel[k]
        for k in (
            "invited",
            "registered",
            "reminded",
            "attended",
            "no_show",
            "followed_up",
            "mql",
            "opportunity",
        )
    } == {
        "invited": 5,
        "registered": 4,
        "reminded": 4,
        "attended": 3,
        "no_show": 1,
        "followed_up": 4,
        "mql": 1,
        "opportunity": 0,
    }
    assert funnel["rates"] == {
        "register": 0.8,
        "attend": 0.75,
        "no_show": 0.25,
        "follow_up": 1.0,
        "mql": 0.25,
        "opportunity": 0.0,
    }
    assert funnel["emails"]["seminar_invite"]["planned"] == 5
    assert api.get("/api/seminars/funnel").json()["seminars"][0]["key"] == "lead-mgmt-101"
    with services.engine.connect() as conn:
        attended_events = conn.execute(
            select(func.count()).select_from(events).where(events.c.name == "webinar_attended")
        ).scalar()
        score = conn.execute(
            select(lead_states.c.engagement).where(lead_states.c.lead_id == ids["cy"])
        ).scalar()
    assert attended_events == 3 and score > 0


def test_capacity_and_bad_input(services, api, write_key, clock):
    for user in ("ann", "bob", "cy"):
        _person(api, write_key, user, consent={"status": "granted"})
    ids = _ids(services)
    r = api.post(
        "/api/seminars",
        json={"key": "small", "title": "Small", "starts_at": STARTS.isoformat(), "capacity": 2},
    )
    assert r.status_code == 201
    assert api.post("/api/seminars/small/register", json={"lead_id": ids["ann"]}).status_code == 200
    assert api.post("/api/seminars/small/register", json={"lead_id": ids["bob"]}).status_code == 200
    r = api.post("/api/seminars/small/register", json={"lead_id": ids["cy"]})
    assert (
        r.status_code == 409 and r.json()["detail"] == "capacity: seminar small is full (2 places)"
    )
    # Already registered: still fine when full.
    assert api.post("/api/seminars/small/register", json={"lead_id": ids["ann"]}).status_code == 200
    with services.engine.connect() as conn:
        assert (
            conn.execute(
                select(func.count())
                .select_from(seminar_attendees)
                .where(seminar_attendees.c.registered_at.is_not(None))
            ).scalar()
            == 2
        )

    bad = [
        ({"key": "x", "title": "X", "starts_at": "tomorrow"}, "starts_at"),
        ({"key": "Bad Key", "title": "X", "starts_at": STARTS.isoformat()}, "key"),
        (
            {"key": "x", "title": "X", "starts_at": STARTS.isoformat(), "ends_at": T0.isoformat()},
            "ends_at",
        ),
        (
            {
                "key": "x",
                "title": "X",
                "starts_at": STARTS.isoformat(),
                "location": "javascript:alert(1)",
            },
            "location",
        ),
        (
            {"key": "x", "title": "X", "starts_at": STARTS.isoformat(), "asset_key": "nope"},
            "asset_key",
        ),
        ({"key": "x", "title": "X", "starts_at": STARTS.isoformat(), "kind": "party"}, "kind"),
        ({"key": "small", "title": "X", "starts_at": STARTS.isoformat()}, "key"),
    ]
    for body, field in bad:
        r = api.post("/api/seminars", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in str(r.json()["detail"]), (body, r.json())
    r = api.post("/api/seminars/small/invite", json={"lead_ids": [1], "segment": "x"})
    assert r.status_code == 422
    assert api.post("/api/seminars/small/invite", json={"segment": "missing"}).status_code == 404
    assert api.post("/api/seminars/nope/register", json={"lead_id": 1}).status_code == 404
    r = api.post("/api/seminars/small/attendance", json={"attended": ["not-an-email"]})
    assert r.status_code == 422 and r.json()["detail"].startswith("attended:")


def test_invitations_respect_consent_and_unsubscribes_and_are_idempotent(
    services, api, write_key, clock
):
    ids = _audience(services, api, write_key)
    api.post("/api/segments", json={"key": "everyone", "name": "Everyone", "criteria": {}})
    api.post("/api/seminars", json={"key": "w", "title": "W", "starts_at": STARTS.isoformat()})
    r = api.post("/api/seminars/w/invite", json={"segment": "everyone"})
    assert r.json()["invited"] == 5
    for _ in range(2):
        with services.engine.begin() as conn:
            model = services.models.active(conn, T0)
            again = sem.invite(conn, "w", sorted(ids.values()), model, T0 + timedelta(hours=1))
        assert again["invited"] == 0
    mailed = {s["lead_id"] for s in _sends(services, "seminar_invite")}
    assert ids["nocon"] not in mailed and ids["unsub"] not in mailed and len(mailed) == 5
    with services.engine.connect() as conn:
        invited = conn.execute(
            select(func.count())
            .select_from(seminar_attendees)
            .where(seminar_attendees.c.invited_at.is_not(None))
        ).scalar()
    assert invited == 5


def test_a_target_account_attending_our_seminar_is_fast_passed(services, api, write_key, clock):
    _person(api, write_key, "tara", consent={"status": "granted"}, company={"name": "Big Bank"})
    tara = _ids(services)["tara"]
    with services.engine.begin() as conn:
        acct = conn.execute(select(leads.c.account_id).where(leads.c.id == tara)).scalar()
        conn.execute(update(accounts).where(accounts.c.id == acct).values(is_target=True))
    api.post(
        "/api/seminars",
        json={
            "key": "seoul",
            "title": "Seoul seminar",
            "kind": "seminar",
            "starts_at": STARTS.isoformat(),
            "location": "COEX, Seoul",
        },
    )
    clock.at = STARTS + timedelta(hours=3)
    r = api.post("/api/seminars/seoul/attendance", json={"attended": [tara]})
    assert r.status_code == 200 and r.json()["attended"] == 1
    with services.engine.connect() as conn:
        names = list(conn.execute(select(events.c.name).where(events.c.lead_id == tara)).scalars())
        stage = conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == tara)
        ).scalar()
    assert "event_attended" in names and stage == "appointment"


def test_cli(services, db_url, api, write_key, tmp_path, capsys):
    _person(api, write_key, "ann", consent={"status": "granted"})
    base = ["--database-url", db_url]
    # The CLI runs on the wall clock: a webinar well ahead of it.
    starts = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    args = [
        "seminars",
        "create",
        "cli",
        "--title",
        "CLI webinar",
        "--starts-at",
        starts.isoformat(),
        *base,
    ]
    assert run_guarded(cli_app, args) == 0
    assert (
        run_guarded(
            cli_app, ["seminars", "create", "x", "--title", "X", "--starts-at", "2026-05-07", *base]
        )
        != 0
    )
    assert "error: --starts-at: give a time zone offset" in capsys.readouterr().err
    assert (
        run_guarded(
            cli_app, ["seminars", "invite", "cli", "--lead", str(_ids(services)["ann"]), *base]
        )
        == 0
    )
    assert "invited 1" in capsys.readouterr().out
    assert run_guarded(cli_app, ["seminars", "register", "cli", "ann@anncorp.example", *base]) == 0
    sheet = tmp_path / "att.csv"
    sheet.write_text("email\nann@anncorp.example\n", encoding="utf-8")
    assert run_guarded(cli_app, ["seminars", "attendance", "cli", "--csv", str(sheet), *base]) == 0
    assert "attended 1, no-show 0" in capsys.readouterr().out
    assert run_guarded(cli_app, ["seminars", "funnel", "--format", "csv", *base]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("key,invited,registered") and "cli,1,1,0,1,0" in out
    assert run_guarded(cli_app, ["seminars", "show", "nope", *base]) != 0
