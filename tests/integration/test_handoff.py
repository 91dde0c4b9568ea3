"""Sales hand-off end to end through the API and the service layer, on both backends."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from leadflow.adapters.db.tables import (
    assignments,
    lead_states,
    leads,
    opportunities,
    signals,
    stage_changes,
)
from leadflow.services import handoff

SEOUL = ZoneInfo("Asia/Seoul")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=SEOUL)  # a Monday morning in Seoul


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at.astimezone(UTC)

    def __call__(self) -> datetime:
        # Time moves on between calls: sales actions happen one after another.
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture
def clock(services):
    c = Clock(T0)
    services.clock = c
    return c


@pytest.fixture
def api(client, admin_token, clock):
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def _send(client, key, kind, body):
    r = client.post(f"/v1/{kind}", json=body, auth=(key, ""))
    assert r.status_code == 200, r.text


def _mql(client, key, user: str, at: datetime, *, downloads: int = 0) -> None:
    ts = at.isoformat()
    _send(
        client,
        key,
        "identify",
        {
            "userId": user,
            "messageId": f"id-{user}",
            # The sign-up comes first: contact details count from when they were given.
            "timestamp": (at - timedelta(minutes=1)).isoformat(),
            "traits": {"email": f"{user}@acme{user}.example", "consent": {"status": "granted"}},
        },
    )
    for i in range(downloads):
        _send(
            client,
            key,
            "track",
            {
                "userId": user,
                "event": "content_download",
                "timestamp": ts,
                "messageId": f"dl-{user}-{i}",
                "properties": {"asset": f"Guide {i}", "asset_type": "white_paper"},
            },
        )
    _send(
        client,
        key,
        "track",
        {
            "userId": user,
            "event": "catalogue_request",
            "timestamp": ts,
            "messageId": f"cat-{user}",
        },
    )


def _lead_id(services, user: str) -> int:
    with services.engine.connect() as conn:
        return conn.execute(
            select(leads.c.id).where(leads.c.email == f"{user}@acme{user}.example")
        ).scalar_one()


def _stage(services, lead_id: int) -> str:
    with services.engine.connect() as conn:
        return conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
        ).scalar_one()


def _signals(services, lead_id: int) -> list[str]:
    with services.engine.connect() as conn:
        return list(
            conn.execute(
                select(signals.c.name).where(signals.c.lead_id == lead_id).order_by(signals.c.id)
            ).scalars()
        )


def _assignments(services, lead_id: int) -> list[dict]:
    with services.engine.connect() as conn:
        return handoff.assignments_for(conn, lead_id=lead_id)


def _active(services, lead_id: int) -> dict | None:
    with services.engine.connect() as conn:
        return handoff.active_assignment(conn, lead_id)


def _set_capacity(api, capacity: int) -> list[str]:
    reps = api.get("/api/reps").json()["reps"]
    for r in reps:
        assert (
            api.patch(f"/api/reps/{r['key']}", json={"daily_capacity": capacity}).status_code == 200
        )
    return [r["key"] for r in reps]


def test_mql_is_routed_accepted_qualified_and_won(services, api, write_key, clock):
    _mql(api, write_key, "ann", T0, downloads=2)
    lead_id = _lead_id(services, "ann")
    rows = _assignments(services, lead_id)
    assert len(rows) == 1 and rows[0]["status"] == "routed"
    summary = rows[0]["summary"]
    assert "read the white paper 'Guide 0'" in summary["highlights"]
    assert "sent a catalogue request" in summary["highlights"]
    assert summary["score"]["engagement"] > 0
    assert rows[0]["due_at"] > rows[0]["assigned_at"]

    r = api.post(f"/api/leads/{lead_id}/accept", json={"actor": rows[0]["rep_key"]})
    assert r.status_code == 200, r.text
    assert r.json()["stage"] == "appointment"

    r = api.post(f"/api/leads/{lead_id}/qualify", json={"budget": "confirmed", "need": "confirmed"})
    assert r.status_code == 200
    assert r.json()["qualification"] == 50
    assert r.json()["opportunity_id"] is None
    r = api.post(f"/api/leads/{lead_id}/qualify", json={"authority": "likely", "amount": 5e7})
    assert r.status_code == 409
    assert "below the hand-off threshold" in r.json()["detail"]
    r = api.post(
        f"/api/leads/{lead_id}/qualify",
        json={
            "authority": "confirmed",
            "timeframe": "likely",
            "amount": 5e7,
            "currency": "krw",
            "expected_close": "2026-06-30",
            "role": "decision_maker",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stage"] == "opportunity" and body["qualification"] == 87.5
    opp = api.get(f"/api/opportunities/{body['opportunity_id']}").json()
    assert opp["amount"] == 5e7 and opp["currency"] == "KRW" and opp["stage"] == "open"
    assert opp["owner"] == rows[0]["rep_key"]
    assert opp["contacts"] == [
        {"lead_id": lead_id, "email": "ann@acmeann.example", "role": "decision_maker"}
    ]

    r = api.post(f"/api/leads/{lead_id}/won", json={"amount": 6e7})
    assert r.status_code == 200 and r.json()["stage"] == "won"
    opp = api.get(f"/api/opportunities/{body['opportunity_id']}").json()
    assert opp["stage"] == "won" and opp["amount"] == 6e7 and opp["closed_at"]
    names = _signals(services, lead_id)
    for name in ("lead.routed", "lead.accepted", "opportunity.created", "opportunity.won"):
        assert name in names
    history = api.get(f"/api/leads/{lead_id}/stages").json()["changes"]
    assert [c["to_stage"] for c in history][-3:] == ["appointment", "opportunity", "won"]
    assert _active(services, lead_id) is None


def test_lost_deal_goes_to_recycle_b_with_its_reason(services, api, write_key):
    _mql(api, write_key, "bob", T0)
    lead_id = _lead_id(services, "bob")
    r = api.post(f"/api/leads/{lead_id}/accept")
    assert r.status_code == 200, r.text
    bant = {k: "confirmed" for k in ("budget", "authority", "need", "timeframe")}
    assert (
        api.post(f"/api/leads/{lead_id}/qualify", json={**bant, "amount": 100}).status_code == 200
    )
    r = api.post(f"/api/leads/{lead_id}/lost", json={"reason": "nope"})
    assert r.status_code == 422 and r.json()["detail"].startswith("reason: unknown lost reason")
    r = api.post(f"/api/leads/{lead_id}/lost", json={"reason": "price"})
    assert r.status_code == 200 and r.json()["stage"] == "recycle_b"
    with services.engine.connect() as conn:
        opp = conn.execute(select(opportunities)).mappings().one()
    assert opp["stage"] == "lost" and opp["lost_reason"] == "price"
    assert {"opportunity.lost", "lead.recycled"} <= set(_signals(services, lead_id))


def test_not_now_recycles_with_a_pause(services, api, write_key):
    _mql(api, write_key, "cat", T0)
    lead_id = _lead_id(services, "cat")
    api.post(f"/api/leads/{lead_id}/accept")
    r = api.post(f"/api/leads/{lead_id}/not-now", json={"reason": "budget next year"})
    assert r.status_code == 200 and r.json()["stage"] == "recycle_a"
    assert "lead.recycled" in _signals(services, lead_id)


@pytest.mark.parametrize(
    ("reason", "stage"), [("not_interested", "nurturing"), ("student", "dead_end")]
)
def test_reject_reasons_send_back_to_nurturing_or_the_dead_end(
    services, api, write_key, reason, stage
):
    _mql(api, write_key, "dan", T0)
    lead_id = _lead_id(services, "dan")
    r = api.post(f"/api/leads/{lead_id}/reject", json={"reason": reason})
    assert r.status_code == 200, r.text
    assert _stage(services, lead_id) == stage
    [row] = _assignments(services, lead_id)
    assert row["status"] == "rejected" and row["close_reason"] == reason
    # a rejected lead is not queued again until it re-enters the MQL stage
    with services.engine.begin() as conn:
        report = handoff.route_due(conn, services.models.active(conn, T0), T0)
    assert lead_id not in report.lead_ids


def test_bad_inputs_are_refused_naming_the_field(services, api, write_key):
    _mql(api, write_key, "eve", T0)
    lead_id = _lead_id(services, "eve")
    r = api.post(f"/api/leads/{lead_id}/reject", json={"reason": "bogus"})
    assert r.status_code == 422 and "reason" in r.json()["detail"]
    r = api.post(f"/api/leads/{lead_id}/reject", json={"reason": "<script>"})
    assert r.status_code == 422 and "reason" in str(r.json()["detail"])
    r = api.post(f"/api/leads/{lead_id}/qualify", json={"budget": "lots", "amount": 10})
    assert r.status_code == 422 and r.json()["detail"].startswith("budget:")
    r = api.post(f"/api/leads/{lead_id}/qualify", json={"amount": -1})
    assert r.status_code == 422 and "amount" in str(r.json()["detail"])
    r = api.post(f"/api/leads/{lead_id}/qualify", json={"currency": "'; drop"})
    assert r.status_code == 422 and "currency" in str(r.json()["detail"])
    assert api.post("/api/leads/999999/accept").status_code == 404
    r = api.post(f"/api/leads/{lead_id}/not-now")
    assert r.status_code == 409 and "cannot not_now a lead in stage 'mql'" in r.json()["detail"]
    r = api.post("/api/reps", json={"key": "x y", "name": "X", "email": "x@x.example"})
    assert r.status_code == 422 and "key" in str(r.json()["detail"])
    r = api.post(
        "/api/reps", json={"key": "x", "name": "X", "email": "x@x.example", "daily_capacity": -2}
    )
    assert r.status_code == 422 and "daily_capacity" in str(r.json()["detail"])
    r = api.post("/api/reps", json={"key": "minjun.kim", "name": "X", "email": "x@x.example"})
    assert r.status_code == 409
    assert api.patch("/api/reps/nobody", json={"active": False}).status_code == 404
    r = api.post("/api/opportunities", json={"name": "Deal", "account_id": 424242})
    assert r.status_code == 404 and r.json()["detail"].startswith("account_id")
    assert api.get("/api/opportunities/77").status_code == 404
    assert _stage(services, lead_id) == "mql"  # nothing stored by refused calls
    assert len(_assignments(services, lead_id)) == 1


def test_repeated_action_id_is_applied_once(services, api, write_key):
    _mql(api, write_key, "fay", T0)
    lead_id = _lead_id(services, "fay")
    first = api.post(f"/api/leads/{lead_id}/accept", json={"action_id": "acc-1"})
    again = api.post(f"/api/leads/{lead_id}/accept", json={"action_id": "acc-1"})
    assert first.status_code == again.status_code == 200
    assert again.json()["duplicate"] is True
    assert Counter(_signals(services, lead_id))["lead.accepted"] == 1
    bant = {k: "confirmed" for k in ("budget", "authority", "need", "timeframe")}
    body = {**bant, "amount": 10, "action_id": "q-1"}
    a = api.post(f"/api/leads/{lead_id}/qualify", json=body).json()
    b = api.post(f"/api/leads/{lead_id}/qualify", json=body).json()
    assert b["duplicate"] and a["opportunity_id"] == b["opportunity_id"]
    assert len(api.get("/api/opportunities").json()["opportunities"]) == 1


def test_unaccepted_hand_off_is_escalated_then_rerouted(services, api, write_key, clock):
    friday = datetime(2026, 3, 6, 17, 0, tzinfo=SEOUL)
    clock.at = friday
    _mql(api, write_key, "gus", friday)
    lead_id = _lead_id(services, "gus")
    [first] = _assignments(services, lead_id)
    due = datetime(2026, 3, 11, 14, 0, tzinfo=SEOUL)  # 24 working hours after Fri 17:00
    assert timedelta(0) <= first["due_at"] - due < timedelta(seconds=10)
    engine = services.engine

    def sla(at: datetime) -> handoff.SlaReport:
        with engine.begin() as conn:
            return handoff.process_sla(conn, services.models.active(conn, at), at)

    assert sla(datetime(2026, 3, 11, 13, 0, tzinfo=SEOUL)).escalated == []
    report = sla(datetime(2026, 3, 11, 15, 0, tzinfo=SEOUL))
    assert [e["lead_id"] for e in report.escalated] == [lead_id]
    assert report.escalated[0]["overdue_hours"] == pytest.approx(1, abs=0.01)
    report = sla(datetime(2026, 3, 12, 16, 0, tzinfo=SEOUL))  # 8 more working hours
    assert [e["lead_id"] for e in report.rerouted] == [lead_id]
    rows = _assignments(services, lead_id)
    assert [r["status"] for r in rows] == ["rerouted", "routed"]
    assert rows[1]["rep_key"] != rows[0]["rep_key"]
    assert {"lead.escalated", "lead.rerouted"} <= set(_signals(services, lead_id))


def test_capacity_paces_a_campaign_over_days_in_priority_order(services, api, write_key, clock):
    keys = _set_capacity(api, 0)  # the campaign lands while the team is full
    users = [f"u{i:02d}" for i in range(30)]
    for i, user in enumerate(users):
        _mql(api, write_key, user, T0 - timedelta(minutes=i), downloads=i % 4)
    ids = {u: _lead_id(services, u) for u in users}
    assert {_stage(services, i) for i in ids.values()} == {"mql"}
    assert len(api.get("/api/sales/queue").json()["queue"]) == 30
    _set_capacity(api, 2)  # 3 reps x 2 a day
    handed: list[tuple[int, int, str]] = []
    for day in range(6):
        now = T0 + timedelta(days=day, hours=1)
        clock.at = now.astimezone(UTC)
        for _ in range(2):  # routing runs several times a day
            with services.engine.begin() as conn:
                report = handoff.route_due(conn, services.models.active(conn, now), now)
            for lead_id in report.lead_ids:
                handed.append((day, lead_id, ""))
    with services.engine.connect() as conn:
        rows = conn.execute(select(assignments)).mappings().all()
    per_day = Counter((r["assigned_at"].astimezone(SEOUL).date(), r["rep_key"]) for r in rows)
    assert max(per_day.values()) == 2
    assert {k for _, k in per_day} <= set(keys)
    assert sorted(r["lead_id"] for r in rows) == sorted(ids.values())  # once each, none lost
    assert api.get("/api/sales/queue").json()["queue"] == []
    prio = {r["lead_id"]: r["priority"] for r in rows}
    by_day: dict[int, list[float]] = {}
    for day, lead_id, _ in handed:
        by_day.setdefault(day, []).append(prio[lead_id])
    days = sorted(by_day)
    for a, b in itertools.pairwise(days):
        assert min(by_day[a]) >= max(by_day[b])


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_routers_at_once_never_double_assign(services, api, write_key, clock):
    _set_capacity(api, 0)
    for i in range(20):
        _mql(api, write_key, f"c{i:02d}", T0)
    _set_capacity(api, 3)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            with services.engine.begin() as conn:
                handoff.route_due(conn, services.models.active(conn, T0), T0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with services.engine.connect() as conn:
        rows = conn.execute(select(assignments.c.lead_id, assignments.c.rep_key)).all()
    assert len(rows) == 9  # 3 reps x 3, not twice that
    assert len({r.lead_id for r in rows}) == 9
    assert max(Counter(r.rep_key for r in rows).values()) == 3


def _hard_bounce(client, key, user: str, at: datetime) -> None:
    _send(
        client,
        key,
        "track",
        {
            "userId": user,
            "event": "email_bounce",
            "timestamp": at.isoformat(),
            "messageId": f"bounce-{user}",
            "properties": {"bounce_type": "hard"},
        },
    )


@pytest.mark.parametrize("accepted", [False, True])
def test_assigned_mql_that_hard_bounces_is_released(services, api, write_key, clock, accepted):
    _mql(api, write_key, "hal", T0, downloads=2)
    lead_id = _lead_id(services, "hal")
    assigned = _active(services, lead_id)
    assert assigned is not None
    if accepted:
        assert api.post(f"/api/leads/{lead_id}/accept", json={}).status_code == 200
        assert _stage(services, lead_id) == "appointment"
    clock.at = (T0 + timedelta(hours=2)).astimezone(UTC)
    _hard_bounce(api, write_key, "hal", T0 + timedelta(hours=1))
    assert _stage(services, lead_id) == "dead_end"
    assert _active(services, lead_id) is None
    (row,) = _assignments(services, lead_id)
    assert row["id"] == assigned["id"] and row["status"] == "closed"
    assert row["close_reason"].startswith("stage dead_end")
    assert row["close_reason"].endswith(handoff.NOT_ACCEPTED) is not accepted
    # Nothing brings it back: routing and later events leave it alone.
    with services.engine.begin() as conn:
        model = services.models.active(conn, clock())
        assert handoff.enqueue(conn, model, clock()) == 0
        assert handoff.queue(conn) == []
    _send(
        api,
        write_key,
        "page",
        {
            "userId": "hal",
            "timestamp": (T0 + timedelta(hours=1, minutes=30)).isoformat(),
            "messageId": "pv-hal",
            "properties": {"url": "https://example.com/pricing"},
        },
    )
    assert _active(services, lead_id) is None and len(_assignments(services, lead_id)) == 1


def test_a_demo_request_fastpasses_to_sales_and_is_routed(services, api, write_key):
    """Regression (issue 12): ``demo_request``, the event the demo form sends, only earned
    points; the person waited in nurturing and nobody in sales heard of them."""
    _send(
        api,
        write_key,
        "identify",
        {
            "userId": "dee",
            "messageId": "id-dee",
            "timestamp": (T0 - timedelta(minutes=5)).isoformat(),
            "traits": {
                "email": "dee@acmedee.example",
                "title": "Head of IT",
                "consent": {"status": "granted"},
            },
        },
    )
    _send(
        api,
        write_key,
        "track",
        {"userId": "dee", "event": "demo_request", "timestamp": T0.isoformat(), "messageId": "d1"},
    )
    lead_id = _lead_id(services, "dee")
    assert _stage(services, lead_id) == "mql"
    with services.engine.connect() as conn:
        rule = conn.execute(
            select(stage_changes.c.rule).where(
                stage_changes.c.lead_id == lead_id, stage_changes.c.to_stage == "mql"
            )
        ).scalar_one()
    assert rule == "fastpass.demo_request"
    [row] = _assignments(services, lead_id)
    assert row["status"] == "routed"
    assert "lead.routed" in _signals(services, lead_id)


def _attend(client, key, user: str, at: datetime) -> None:
    """A lead of a target account attends our event: the fast-pass to an appointment."""
    _send(
        client,
        key,
        "identify",
        {
            "userId": user,
            "messageId": f"id-{user}",
            "timestamp": (at - timedelta(minutes=5)).isoformat(),
            "traits": {
                "email": f"{user}@acme{user}.example",
                "consent": {"status": "granted"},
                "is_target_account": True,
            },
        },
    )
    _send(
        client,
        key,
        "track",
        {
            "userId": user,
            "event": "event_attended",
            "timestamp": at.isoformat(),
            "messageId": f"att-{user}",
            "properties": {"event_type": "seminar"},
        },
    )


def test_a_lead_fastpassed_to_an_appointment_is_routed_within_capacity(
    services, api, write_key, clock
):
    """Regression (issue 12): a target-account attendee fast-passed straight to the
    appointment stage got no rep, no queue row and no ``lead.routed``."""
    _set_capacity(api, 0)  # the team is full today
    _attend(api, write_key, "eve", T0)
    eve = _lead_id(services, "eve")
    assert _stage(services, eve) == "appointment"
    assert [q["lead_id"] for q in api.get("/api/sales/queue").json()["queue"]] == [eve]
    assert _assignments(services, eve) == []

    keys = _set_capacity(api, 1)  # 3 reps x 1 a day
    users = ["fay", "gus", "hal", "ivy"]
    for i, user in enumerate(users):
        _attend(api, write_key, user, T0 - timedelta(minutes=i + 1))
    ids = [eve, *(_lead_id(services, u) for u in users)]
    assert {_stage(services, i) for i in ids} == {"appointment"}
    with services.engine.connect() as conn:
        rows = conn.execute(select(assignments)).mappings().all()
    assert len(rows) == len(keys) == 3  # capacity, not demand
    assert Counter(r["rep_key"] for r in rows) == Counter(keys)
    assert {r["status"] for r in rows} == {"routed"}
    routed = [r["lead_id"] for r in rows]
    for lead_id in routed:
        assert "lead.routed" in _signals(services, lead_id)
    waiting = [q["lead_id"] for q in api.get("/api/sales/queue").json()["queue"]]
    assert sorted(routed + waiting) == sorted(ids)

    # The rep accepts: the lead already is at the appointment stage, the SLA is met.
    r = api.post(f"/api/leads/{routed[0]}/accept")
    assert r.status_code == 200 and r.json()["stage"] == "appointment"
    assert _active(services, routed[0])["status"] == "accepted"

    # A rep qualifies a waiting one straight away: it leaves the queue, nobody else gets it.
    bant = {k: "confirmed" for k in ("budget", "authority", "need", "timeframe")}
    r = api.post(f"/api/leads/{waiting[0]}/qualify", json={**bant, "amount": 100})
    assert r.status_code == 200 and r.json()["stage"] == "opportunity"
    # Another takes the last waiting one from the queue.
    r = api.post(f"/api/leads/{waiting[1]}/accept", json={"actor": keys[0]})
    assert r.status_code == 200 and r.json()["stage"] == "appointment"
    assert _active(services, waiting[1])["status"] == "accepted"
    assert api.get("/api/sales/queue").json()["queue"] == []

    # A lead sales itself moved to the appointment stage (an accepted MQL) is never queued
    # as if nobody knew it.
    tomorrow = T0 + timedelta(days=1)
    clock.at = tomorrow.astimezone(UTC)
    _mql(api, write_key, "joe", tomorrow)
    joe = _lead_id(services, "joe")
    with services.engine.begin() as conn:
        handoff.route_due(conn, services.models.active(conn, tomorrow), tomorrow)
    assert api.post(f"/api/leads/{joe}/accept").status_code == 200
    assert _stage(services, joe) == "appointment"
    with services.engine.begin() as conn:
        handoff.route_due(conn, services.models.active(conn, tomorrow), tomorrow)
    assert api.get("/api/sales/queue").json()["queue"] == []
    with services.engine.connect() as conn:
        rows = conn.execute(select(assignments)).mappings().all()
    handed = sorted(r["lead_id"] for r in rows)
    assert handed == sorted([*(i for i in ids if i != waiting[0]), joe])  # once each


def _person(client, key, user: str, domain: str, at: datetime) -> None:
    _send(
        client,
        key,
        "identify",
        {
            "userId": user,
            "messageId": f"id-{user}",
            "timestamp": at.isoformat(),
            "traits": {
                "email": f"{user}@{domain}",
                "company": domain.split(".")[0].title(),
                "consent": {"status": "granted"},
            },
        },
    )


def _visit(client, key, user: str, path: str, at: datetime) -> None:
    _send(
        client,
        key,
        "page",
        {
            "userId": user,
            "messageId": f"pv-{user}-{path}-{at.timestamp()}",
            "timestamp": at.isoformat(),
            "properties": {"url": f"https://acme.example{path}"},
        },
    )


def test_a_colleague_at_an_account_that_lost_a_deal_coming_back_alerts_its_owner(
    services, api, write_key, clock
):
    """Regression (issue 12): after a lost deal only that person was watched; a colleague
    at the account visiting 3 times in 14 days after the pause raised nothing."""
    from leadflow.adapters.db.tables import accounts, webhook_deliveries
    from leadflow.services import webhooks

    with services.engine.begin() as conn:
        webhooks.create_endpoint(
            conn, "http://127.0.0.1:9/in", ["lead.returning"], T0, allow_private=True
        )
    # Amy's deal at X Corp is lost.
    _person(api, write_key, "amy", "xcorp.example", T0 - timedelta(days=30))
    amy_asks = {"userId": "amy", "event": "catalogue_request", "timestamp": T0.isoformat()}
    _send(api, write_key, "track", {**amy_asks, "messageId": "cat-amy"})
    with services.engine.connect() as conn:
        amy = conn.execute(
            select(leads.c.id, leads.c.account_id).where(leads.c.email == "amy@xcorp.example")
        ).one()
    bant = {k: "confirmed" for k in ("budget", "authority", "need", "timeframe")}
    assert api.post(f"/api/leads/{amy.id}/accept").status_code == 200
    r = api.post(f"/api/leads/{amy.id}/qualify", json={**bant, "amount": 100})
    assert r.status_code == 200
    r = api.post(f"/api/leads/{amy.id}/lost", json={"reason": "price"})
    assert r.status_code == 200 and r.json()["stage"] == "recycle_b"
    with services.engine.connect() as conn:
        owner = conn.execute(
            select(accounts.c.owner).where(accounts.c.id == amy.account_id)
        ).scalar_one()
    assert owner is not None

    # Months later (the 90-day pause is over) her colleagues come back.
    later = T0 + timedelta(days=120)
    clock.at = later.astimezone(UTC)
    for user, domain in (("ben", "xcorp.example"), ("dot", "xcorp.example"),
                         ("cal", "ycorp.example")):  # fmt: skip
        _person(api, write_key, user, domain, T0 - timedelta(days=20))
    ben_pages = ["/pricing", "/product/a", "/case-studies/manufacturing"]
    for i, path in enumerate(ben_pages):
        _visit(api, write_key, "ben", path, T0 + timedelta(days=100 + 4 * i))
    for i, path in enumerate(["/pricing", "/blog/x"]):  # only twice
        _visit(api, write_key, "dot", path, T0 + timedelta(days=101 + i))
    for i, path in enumerate(["/pricing", "/product/a", "/blog/x"]):  # another account
        _visit(api, write_key, "cal", path, T0 + timedelta(days=101 + i))

    with services.engine.begin() as conn:
        returning = conn.execute(
            select(signals.c.lead_id, signals.c.rule, signals.c.data).where(
                signals.c.name == "lead.returning"
            )
        ).all()
        webhooks.enqueue_new(conn, later)
        deliveries = conn.execute(
            select(webhook_deliveries.c.payload).where(
                webhook_deliveries.c.event_type == "lead.returning"
            )
        ).all()
        ben = conn.execute(
            select(leads.c.id).where(leads.c.email == "ben@xcorp.example")
        ).scalar_one()
    [(lead_id, rule, data)] = returning
    assert (lead_id, rule) == (ben, "return_alert.account")
    pages = [f"https://acme.example{p}" for p in ben_pages]
    assert data["pages"] == pages and data["lost_lead_id"] == amy.id
    [(payload,)] = deliveries
    assert payload["lead"]["email"] == "ben@xcorp.example"
    assert payload["lead"]["owner"] == owner  # the account's rep
    assert payload["data"]["pages"] == pages
    assert payload["data"]["watch"] == "account"
    assert payload["data"]["account_owner"] == owner
