"""Nurture programs on both backends: enrolment by stage, due steps, next best content,
the send rules, the API and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import func, insert, select, update

from leadflow.adapters.db.tables import (
    accounts,
    due_work,
    email_sends,
    events,
    lead_states,
    leads,
    program_enrollments,
    signals,
)
from leadflow.bootstrap import Services
from leadflow.core.config import load_model
from leadflow.services import duework, nurture
from leadflow.services.lifecycle import default_source, install_model
from leadflow.services.mailing import plan_email

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
DAY = timedelta(days=1)


# --------------------------------------------------------------------------- helpers


def add_lead(
    services: Services,
    name: str,
    *,
    stage: str = "nurturing",
    consent: str = "granted",
    industry: str | None = None,
    email: str | None = "",
    attributes: dict[str, Any] | None = None,
    **columns: Any,
) -> int:
    """A lead with a stored state (as scoring would leave it), inserted directly."""
    with services.engine.begin() as conn:
        model = services.models.active(conn, T0)
        account_id = None
        if industry is not None:
            account_id = conn.execute(
                insert(accounts)
                .values(name=f"{name} Corp", industry=industry, created_at=T0, updated_at=T0)
                .returning(accounts.c.id)
            ).scalar_one()
        lead_id = conn.execute(
            insert(leads)
            .values(
                email=f"{name}@{name}.example" if email == "" else email,
                first_name=name.title(),
                consent_status=consent,
                account_id=account_id,
                attributes=attributes or {},
                created_at=T0,
                updated_at=T0,
                **columns,
            )
            .returning(leads.c.id)
        ).scalar_one()
        conn.execute(
            insert(lead_states).values(
                lead_id=lead_id,
                stage=stage,
                stage_since=T0,
                engagement=0.0,
                fit=0.0,
                scored_at=T0,
                model_version=model.version,
                model_hash=model.content_hash,
                updated_at=T0,
            )
        )
    return int(lead_id)


def set_stage(services: Services, lead_id: int, stage: str, **values: Any) -> None:
    with services.engine.begin() as conn:
        conn.execute(
            update(lead_states)
            .where(lead_states.c.lead_id == lead_id)
            .values(stage=stage, **values)
        )


def sync(services: Services, now: datetime) -> nurture.SyncReport:
    with services.engine.begin() as conn:
        return nurture.sync_enrolments(conn, services.models.active(conn, now), now)


def tick(services: Services, now: datetime) -> nurture.StepReport:
    sync(services, now)
    return nurture.run_due_steps(services, now, "test-worker", 10_000)


def enrolments(services: Services, lead_id: int) -> list[dict[str, Any]]:
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(program_enrollments)
            .where(program_enrollments.c.lead_id == lead_id)
            .order_by(program_enrollments.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def sends(services: Services, lead_id: int | None = None) -> list[dict[str, Any]]:
    with services.engine.connect() as conn:
        query = select(email_sends).order_by(email_sends.c.id)
        if lead_id is not None:
            query = query.where(email_sends.c.lead_id == lead_id)
        return [dict(r) for r in conn.execute(query).mappings()]


def use_programs(services: Services, programs: list[dict[str, Any]], **nurture_extra: Any) -> None:
    """Activate the shipped model with these programs instead of the shipped ones."""
    spec = yaml.safe_load(default_source())
    spec["version"] = f"{spec['version']}-test"
    spec["nurture"]["programs"] = programs
    spec["nurture"].update(nurture_extra)
    source = yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
    model = load_model(source)
    with services.engine.begin() as conn:
        services.models.active(conn, T0)  # the default model first, as a fresh install has
        install_model(conn, model, source, T0, activate=True)


def subject(text: str) -> dict[str, str]:
    return {"en": text, "ko": text}


# --------------------------------------------------------------------------- enrolment


def test_programs_enrol_by_stage_and_exit_on_stage_change(services):
    a = add_lead(services, "ann", stage="acquired")
    m = add_lead(services, "max", stage="mql")
    dead = add_lead(services, "dee", stage="dead_end")
    erased = add_lead(services, "eve", stage="nurturing", erased_at=T0)
    report = sync(services, T0)
    assert report.enrolled == 2
    assert [(e["program_key"], e["status"]) for e in enrolments(services, a)] == [
        ("education", "active")
    ]
    assert [e["program_key"] for e in enrolments(services, m)] == ["mql-case-studies"]
    assert enrolments(services, dead) == [] and enrolments(services, erased) == []
    assert sync(services, T0).enrolled == 0  # idempotent

    # acquired -> nurturing stays in the education program (both are its stages)
    set_stage(services, a, "nurturing")
    assert sync(services, T0 + DAY).exited == 0
    # nurturing -> mql: leaves education, enters the MQL stream
    set_stage(services, a, "mql")
    report = sync(services, T0 + 2 * DAY)
    assert (report.exited, report.enrolled) == (1, 1)
    rows = enrolments(services, a)
    assert [(e["program_key"], e["status"], e["exit_reason"]) for e in rows] == [
        ("education", "exited", "stage_changed"),
        ("mql-case-studies", "active", None),
    ]
    # a lead sent to the dead end leaves everything and never enrols again
    set_stage(services, m, "dead_end")
    sync(services, T0 + 3 * DAY)
    assert [e["status"] for e in enrolments(services, m)] == ["exited"]
    # the first step of each enrolment is due work: enrolled_at + wait_days
    with services.engine.connect() as conn:
        work = conn.execute(
            select(due_work.c.key, due_work.c.due_at).where(due_work.c.ref_id == rows[1]["id"])
        ).one()
    assert work.key == f"step:{rows[1]['id']}:0" and work.due_at == T0 + 2 * DAY + DAY


def test_a_program_with_a_segment_enrols_only_its_members(services):
    from leadflow.services import segments

    use_programs(
        services,
        [
            {
                "key": "finance-only",
                "name": subject("Finance"),
                "stages": ["nurturing"],
                "segment": "finance",
                "steps": [{"id": "s1", "wait_days": 1, "send": {"subject": subject("Hi")}}],
            }
        ],
    )
    bank = add_lead(services, "bank", industry="Financial Services")
    shop = add_lead(services, "shop", industry="Retail")
    with services.engine.begin() as conn:
        segments.create(
            conn,
            "finance",
            "Finance accounts",
            {"account": {"industry": ["Financial Services"]}},
            T0,
        )
        segments.refresh(conn, "finance", T0)
    sync(services, T0)
    assert [e["program_key"] for e in enrolments(services, bank)] == ["finance-only"]
    assert enrolments(services, shop) == []
    # The account changes industry: the lead leaves the segment, and so the program.
    with services.engine.begin() as conn:
        account_id = conn.execute(select(leads.c.account_id).where(leads.c.id == bank)).scalar()
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(industry="Retail"))
        segments.refresh(conn, "finance", T0 + timedelta(hours=1))
    sync(services, T0 + timedelta(hours=1))
    (row,) = enrolments(services, bank)
    assert row["status"] == "exited"


def test_steps_run_in_order_with_waits_and_complete(services):
    lead_id = add_lead(services, "kim", stage="nurturing")
    r = tick(services, T0)
    assert r.planned == 1  # welcome (wait 0)
    assert tick(services, T0 + 2 * DAY).claimed == 0  # deeper waits 3 days
    r = tick(services, T0 + 3 * DAY)
    assert r.planned == 1
    r = tick(services, T0 + 7 * DAY)  # white paper, 4 days later
    assert r.planned == 1
    # the case step needs score >= 20: skipped, the program completes
    r = tick(services, T0 + 14 * DAY)
    assert (r.claimed, r.planned, dict(r.skipped)) == (1, 0, {"condition": 1})
    (enrolment,) = enrolments(services, lead_id)
    assert enrolment["status"] == "completed" and enrolment["step_index"] == 4
    rows = sends(services, lead_id)
    assert [(s["step_id"], s["status"]) for s in rows] == [
        ("welcome", "planned"),
        ("deeper", "planned"),
        ("white-paper", "planned"),
    ]
    assert rows[2]["asset_key"] == "b2b-lead-management"
    assert rows[0]["idempotency_key"] == f"program:education:welcome:{lead_id}"
    # completed and still nurturing: not enrolled again
    assert sync(services, T0 + 15 * DAY).enrolled == 0


def test_through_tracking_api_sign_up_enrols_and_mql_moves_stream(
    services, client, write_key, admin_token
):
    services.clock = lambda: T0
    body = {
        "userId": "u1",
        "messageId": "id-u1",
        "timestamp": T0.isoformat(),
        "traits": {"email": "lee@bank.example", "consent": {"status": "granted"}},
    }
    assert client.post("/v1/identify", json=body, auth=(write_key, "")).status_code == 200
    with services.engine.connect() as conn:
        lead_id = conn.execute(
            select(leads.c.id).where(leads.c.email == "lee@bank.example")
        ).scalar_one()
        assert (
            conn.execute(
                select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
            ).scalar_one()
            == "acquired"
        )
    assert tick(services, T0).planned == 1
    (welcome,) = sends(services, lead_id)
    assert welcome["asset_key"] == "bant-checklist"  # early content for an acquired lead
    track = {
        "userId": "u1",
        "event": "catalogue_request",
        "messageId": "cat-u1",
        "timestamp": (T0 + DAY).isoformat(),
    }
    services.clock = lambda: T0 + DAY
    assert client.post("/v1/track", json=track, auth=(write_key, "")).status_code == 200
    tick(services, T0 + DAY)
    assert [(e["program_key"], e["status"]) for e in enrolments(services, lead_id)] == [
        ("education", "exited"),
        ("mql-case-studies", "active"),
    ]


# --------------------------------------------------------------------------- content


def test_next_best_content_by_stage_and_industry_skips_consumed(services):
    fin = add_lead(services, "fin", industry="financial services")
    truck = add_lead(services, "truck", industry="Transport & Logistics")
    plain = add_lead(services, "plain")
    with services.engine.begin() as conn:
        conn.execute(
            insert(events),
            [
                {
                    "message_id": "dl-1",
                    "type": "track",
                    "name": "content_download",
                    "lead_id": truck,
                    "properties": {"asset_key": "case-logistics"},
                    "context": {},
                    "page_url": None,
                    "occurred_at": T0 - DAY,
                    "received_at": T0 - DAY,
                },
                {
                    "message_id": "pv-1",
                    "type": "page",
                    "name": None,
                    "lead_id": plain,
                    "properties": {},
                    "context": {},
                    "page_url": "https://acme.example/Whitepapers/b2b-lead-management/",
                    "occurred_at": T0 - DAY,
                    "received_at": T0 - DAY,
                },
            ],
        )
    tick(services, T0)
    picked = {s["lead_id"]: s["asset_key"] for s in sends(services)}
    assert picked[fin] == "case-finance"  # industry-specific first, case-insensitive
    assert picked[truck] == "b2b-lead-management"  # its case study was downloaded
    assert picked[plain] == "data-privacy-marketing"  # the white paper page was viewed
    # the next send skips what was emailed before
    tick(services, T0 + 3 * DAY)
    second = {s["lead_id"]: s["asset_key"] for s in sends(services) if s["step_id"] == "deeper"}
    assert second[fin] == "b2b-lead-management"
    assert second[plain] == "marketing-roi-2024"


# --------------------------------------------------------------------------- send rules


def test_each_send_rule_blocks_and_is_recorded(services):
    ok = add_lead(services, "ok")
    no_consent = add_lead(services, "nc", consent="unknown")
    denied = add_lead(services, "dn", consent="denied")
    unsub = add_lead(services, "un", unsubscribed_at=T0 - DAY)
    bounced = add_lead(services, "bo", bounced_at=T0 - DAY)
    no_email = add_lead(services, "ne", email=None)
    paused = add_lead(services, "pa", stage="recycle_a")
    set_stage(services, paused, "recycle_a", pause_until=T0 + 90 * DAY)
    use_programs(
        services,
        [
            {
                "key": "p",
                "name": subject("P"),
                "stages": ["nurturing", "recycle_a"],
                "steps": [{"id": "one", "send": {"subject": subject("Hi")}}],
            }
        ],
    )
    r = tick(services, T0)
    assert r.planned == 1
    assert dict(r.skipped) == {
        "no_consent": 2,
        "unsubscribed": 1,
        "bounced": 1,
        "no_email": 1,
        "paused": 1,
    }
    by_lead = {s["lead_id"]: s for s in sends(services)}
    assert by_lead[ok]["status"] == "planned"
    for lead_id, reason in [
        (no_consent, "no_consent"),
        (denied, "no_consent"),
        (unsub, "unsubscribed"),
        (bounced, "bounced"),
        (no_email, "no_email"),
        (paused, "paused"),
    ]:
        assert (by_lead[lead_id]["status"], by_lead[lead_id]["skip_reason"]) == ("skipped", reason)
        assert by_lead[lead_id]["idempotency_key"].startswith("skipped:")
    # the shared rule check other senders use (seminars) agrees
    with services.engine.connect() as conn:
        model = services.models.active(conn, T0)
        checked = nurture.send_blockers(
            conn, [ok, no_consent, unsub, bounced, paused, 999_999], "marketing", model, T0
        )
        transactional = nurture.send_blockers(
            conn, [no_consent, unsub, bounced, no_email], "transactional", model, T0
        )
    assert checked == {
        ok: None,
        no_consent: "no_consent",
        unsub: "unsubscribed",
        bounced: "bounced",
        paused: "paused",
        999_999: "no_email",
    }
    assert transactional == {
        no_consent: None,
        unsub: None,
        bounced: "bounced",
        no_email: "no_email",
    }


def test_dead_end_stage_is_refused_by_send_blockers(services):
    dead = add_lead(services, "dead", stage="dead_end")
    with services.engine.connect() as conn:
        model = services.models.active(conn, T0)
        assert nurture.send_blockers(conn, [dead], "marketing", model, T0) == {dead: "stage"}


def test_frequency_cap_two_per_seven_days_across_two_programs(services):
    use_programs(
        services,
        [
            {
                "key": "alpha",
                "name": subject("Alpha"),
                "stages": ["nurturing"],
                "steps": [
                    {"id": "a1", "send": {"subject": subject("A1")}},
                    {"id": "a2", "wait_days": 1, "send": {"subject": subject("A2")}},
                ],
            },
            {
                "key": "beta",
                "name": subject("Beta"),
                "stages": ["nurturing"],
                "steps": [
                    {"id": "b1", "send": {"subject": subject("B1")}},
                    {"id": "b2", "send": {"subject": subject("B2"), "category": "transactional"}},
                ],
            },
        ],
    )
    lead_id = add_lead(services, "cap")
    # a1 and b1 go out at T0; b2 (due at once) runs on the next pass, transactional (not
    # capped); a2 waits a day
    assert tick(services, T0).planned == 2
    assert tick(services, T0).planned == 1
    r = tick(services, T0 + DAY)
    assert (r.planned, r.deferred) == (0, 1)  # a2 hits the cap (2 in 7 days)
    marketing = [
        s
        for s in sends(services, lead_id)
        if s["category"] == "marketing" and s["status"] != "skipped"
    ]
    assert len(marketing) == 2
    with services.engine.connect() as conn:
        due = conn.execute(
            select(due_work.c.due_at).where(due_work.c.status == "pending")
        ).scalar_one()
    assert due == T0 + 7 * DAY  # when the first of the two ages out
    assert tick(services, T0 + 7 * DAY - timedelta(seconds=1)).claimed == 0
    r = tick(services, T0 + 7 * DAY)
    assert r.planned == 1
    steps = [(s["step_id"], s["status"]) for s in sends(services, lead_id)]
    assert sorted(steps) == [
        ("a1", "planned"),
        ("a2", "planned"),
        ("b1", "planned"),
        ("b2", "planned"),
    ]


def test_same_step_never_sent_twice_even_after_reenrolment(services):
    lead_id = add_lead(services, "again")
    tick(services, T0)
    set_stage(services, lead_id, "mql")
    tick(services, T0 + DAY)
    set_stage(services, lead_id, "nurturing")
    report = tick(services, T0 + 2 * DAY)
    assert report.duplicates == 1 and report.planned == 0
    rows = enrolments(services, lead_id)
    education = [e for e in rows if e["program_key"] == "education"]
    assert [e["status"] for e in education] == ["exited", "active"]
    welcome = [s for s in sends(services, lead_id) if s["step_id"] == "welcome"]
    assert len(welcome) == 1


def test_blocked_step_may_still_send_in_a_later_enrolment(services):
    lead_id = add_lead(services, "late", consent="unknown")
    tick(services, T0)
    assert [s["status"] for s in sends(services, lead_id)] == ["skipped"]
    with services.engine.begin() as conn:
        conn.execute(update(leads).where(leads.c.id == lead_id).values(consent_status="granted"))
    set_stage(services, lead_id, "mql")
    tick(services, T0 + DAY)
    set_stage(services, lead_id, "nurturing")
    tick(services, T0 + 2 * DAY)
    welcome = [
        (s["status"], s["skip_reason"])
        for s in sends(services, lead_id)
        if s["step_id"] == "welcome"
    ]
    assert welcome == [("skipped", "no_consent"), ("planned", None)]


def test_set_and_notify_steps_and_condition_exit(services):
    use_programs(
        services,
        [
            {
                "key": "hot",
                "name": subject("Hot"),
                "stages": ["nurturing"],
                "steps": [
                    {
                        "id": "flag",
                        "when": {"attributes": {"role": ["cto"]}},
                        "otherwise": "exit",
                        "set": {"nurture_track": "exec", "vip": True},
                    },
                    {"id": "tell", "notify": "An executive is being nurtured"},
                    {"id": "mail", "send": {"subject": subject("For executives")}},
                ],
            }
        ],
    )
    cto = add_lead(services, "cto", attributes={"role": "CTO"})
    intern = add_lead(services, "intern", attributes={"role": "intern"})
    for _ in range(3):  # each step is due at once: one step per pass
        tick(services, T0)
    with services.engine.connect() as conn:
        attrs = conn.execute(select(leads.c.attributes).where(leads.c.id == cto)).scalar_one()
        notes = conn.execute(select(signals.c.name, signals.c.lead_id, signals.c.data)).all()
    assert attrs == {"role": "CTO", "nurture_track": "exec", "vip": True}
    assert [(n.name, n.lead_id, n.data["note"]) for n in notes] == [
        ("program.notify", cto, "An executive is being nurtured")
    ]
    assert [(e["status"], e["exit_reason"]) for e in enrolments(services, intern)] == [
        ("exited", "condition:flag")
    ]
    assert sync(services, T0 + DAY).enrolled == 0  # not re-enrolled while still nurturing
    assert [s["step_id"] for s in sends(services, cto)] == ["mail"]


def test_expired_lease_is_claimed_again_and_runs_once(services):
    lead_id = add_lead(services, "crash")
    sync(services, T0)
    crashed = duework.claim(services.engine, "w-crashed", T0, ["program_step"], 10, 60)
    assert len(crashed) == 1
    assert duework.claim(services.engine, "w2", T0 + timedelta(seconds=30), ["program_step"]) == []
    r = nurture.run_due_steps(services, T0 + timedelta(seconds=61), "w2", 10)
    assert r.planned == 1
    assert len(sends(services, lead_id)) == 1
    with services.engine.connect() as conn:
        first = conn.execute(
            select(due_work.c.status, due_work.c.claimed_by).where(due_work.c.key.like("%:0"))
        ).one()
    assert tuple(first) == ("done", "w2")


def test_stale_due_work_of_an_exited_enrolment_is_cancelled(services):
    lead_id = add_lead(services, "gone")
    use_programs(
        services,
        [
            {
                "key": "slow",
                "name": subject("Slow"),
                "stages": ["nurturing"],
                "steps": [{"id": "s", "wait_days": 2, "send": {"subject": subject("S")}}],
            }
        ],
    )
    sync(services, T0)
    set_stage(services, lead_id, "mql")
    r = tick(services, T0 + 3 * DAY)
    assert r.stale == 1 and r.planned == 0
    assert sends(services, lead_id) == []


def test_manually_planned_marketing_mail_counts_toward_the_cap(services):
    lead_id = add_lead(services, "seminar")
    with services.engine.begin() as conn:
        for kind in ("invite", "reminder"):
            plan_email(
                conn,
                idempotency_key=f"seminar:1:{kind}:{lead_id}",
                lead_id=lead_id,
                subject="Seminar",
                now=T0 - DAY,
                template="seminar",
            )
    r = tick(services, T0)
    assert (r.planned, r.deferred) == (0, 1)


# --------------------------------------------------------------------------- API and CLI


@pytest.fixture
def api(client, admin_token, services):
    services.clock = lambda: T0
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def test_programs_api_lists_counts_and_enrols(services, api):
    a = add_lead(services, "api", industry="Retail")
    b = add_lead(services, "nocon", consent="unknown")
    tick(services, T0)
    with services.engine.begin() as conn:
        conn.execute(
            update(email_sends)
            .where(email_sends.c.lead_id == a)
            .values(status="sent", sent_at=T0, opened_at=T0, clicked_at=T0)
        )
    r = api.get("/api/programs")
    assert r.status_code == 200
    programs = {p["key"]: p for p in r.json()["programs"]}
    assert set(programs) == {"education", "mql-case-studies", "stay-in-touch", "onboarding"}
    edu = programs["education"]
    assert (edu["enrolled"], edu["active"], edu["completed"], edu["exited"]) == (2, 2, 0, 0)
    welcome = edu["steps"][0]
    assert welcome["id"] == "welcome"
    assert (welcome["sent"], welcome["opens"], welcome["clicks"]) == (1, 1, 1)
    assert welcome["skipped"] == {"no_consent": 1}
    assert edu["steps"][1]["waiting"] == 2

    r = api.get("/api/programs/education/enrolments", params={"status": "active", "limit": 1})
    assert r.status_code == 200 and len(r.json()["enrolments"]) == 1
    assert (
        api.get("/api/programs/education/enrolments", params={"status": "bogus"}).status_code == 422
    )
    assert api.get("/api/programs/nope/enrolments").status_code == 404

    # manual enrolment
    mql = add_lead(services, "mqlman", stage="mql")
    r = api.post("/api/programs/mql-case-studies/enrol", json={"lead_id": mql})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "active"
    r = api.post("/api/programs/mql-case-studies/enrol", json={"lead_id": mql})
    assert r.status_code == 409 and "already enrolled" in r.json()["detail"]
    r = api.post("/api/programs/education/enrol", json={"lead_id": mql})
    assert r.status_code == 409 and "stage 'mql'" in r.json()["detail"]
    dead = add_lead(services, "deadman", stage="dead_end")
    r = api.post("/api/programs/education/enrol", json={"lead_id": dead})
    assert r.status_code == 409 and "dead end" in r.json()["detail"]
    r = api.post("/api/programs/education/enrol", json={"lead_id": 987654})
    assert r.status_code == 404 and "lead 987654" in r.json()["detail"]
    r = api.post("/api/programs/unknown/enrol", json={"lead_id": b})
    assert r.status_code == 404 and "program 'unknown'" in r.json()["detail"]
    assert api.post("/api/programs/education/enrol", json={"lead_id": "1"}).status_code == 422
    assert api.post("/api/programs/education/enrol", json={}).status_code == 422
    bad = api.post("/api/programs/education/enrol", json={"lead_id": 1, "x": 1})
    assert bad.status_code == 422


def test_programs_api_hostile_input(services, api):
    for key in ["<script>alert(1)</script>", "x' OR '1'='1", "=HYPERLINK(1)"]:
        r = api.get(f"/api/programs/{key}/enrolments")
        assert r.status_code in (404, 422)
        assert "<script>" not in r.text or r.headers["content-type"].startswith("application/json")
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(program_enrollments)).scalar_one() == 0
    assert api.get("/api/programs", headers={"Authorization": "Bearer nope"}).status_code == 401


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from leadflow.entrypoints.cli import app
    from leadflow.entrypoints.cli.common import run_guarded

    code = run_guarded(app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_programs_cli(services, db_url, capsys):
    add_lead(services, "cli")
    add_lead(services, "=cmd|' /C calc'!A0", email="formula@x.example")
    code, out, err = run_cli(
        capsys, "programs", "run-due", "--format", "json", "--database-url", db_url
    )
    assert code == 0, err
    totals = json.loads(out)[0]
    assert totals["enrolled"] == 2 and totals["planned"] == 2
    code, out, err = run_cli(
        capsys, "programs", "list", "--format", "json", "--database-url", db_url
    )
    assert code == 0, err
    rows = {r["key"]: r for r in json.loads(out)}
    assert rows["education"]["active"] == 2
    code, out, err = run_cli(
        capsys, "programs", "show", "education", "--format", "csv", "--database-url", db_url
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith("index,id,wait_days")
    assert out.splitlines()[1].startswith("0,welcome")
    code, out, err = run_cli(capsys, "programs", "show", "education", "--database-url", db_url)
    assert code == 0 and "welcome" in out
    code, out, err = run_cli(capsys, "programs", "show", "nope", "--database-url", db_url)
    assert code != 0 and "program 'nope' not found" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
