"""A rep's day in the dashboard's sales queue, on SQLite and PostgreSQL: ranked sections
with counts, claim from the waiting pool within capacity (and its refusals), admins
assign and reassign, two reps claiming one lead, destructive actions confirmed first,
qualify messages that say what changed, and notes, calls and tasks on the lead."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import (
    accounts,
    assignments,
    events,
    lead_notes,
    lead_states,
    leads,
    ready_queue,
    sales_reps,
)
from leadflow.services import handoff, lifecycle
from leadflow.services import users as user_service
from leadflow.services.handoff import claiming

PASSWORD = "correct horse battery"
ME = "minjun.kim"
OTHER = "seoyeon.lee"


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def _lead(conn, services, n: int, account_id: int | None = None) -> int:
    now = services.clock()
    email = f"person{n}@example.org"
    lead_id = conn.execute(
        leads.insert()
        .values(
            email=email,
            first_name=f"Person{n}",
            last_name="Tester",
            title="Head of IT",
            account_id=account_id,
            source="webinar",
            consent_status="granted",
            attributes={},
            created_at=now - timedelta(days=20),
            updated_at=now,
        )
        .returning(leads.c.id)
    ).scalar_one()
    for i, (kind, name, props) in enumerate(
        (
            ("identify", None, {"traits": {"email": email}}),
            ("page", None, {}),
            ("track", "content_download", {"asset": "Price list", "asset_type": "pricing"}),
            ("track", "content_download", {"asset": "Price list", "asset_type": "pricing"}),
            ("track", "contact_request", {}),
        )
    ):
        conn.execute(
            events.insert().values(
                message_id=f"m-{n}-{i}",
                type=kind,
                name=name,
                lead_id=lead_id,
                properties=props,
                context={},
                page_url="https://example.com/pricing" if kind == "page" else None,
                channel="email",
                occurred_at=now - timedelta(days=10 - i, hours=n),
                received_at=now,
            )
        )
    model = services.models.active(conn, now)
    lifecycle.recompute(conn, [lead_id], model, now)
    return lead_id


def seed(services, waiting: int = 3) -> dict[str, Any]:
    """``waiting`` MQLs in the ready queue (no account), one more whose account belongs to
    the other rep, the config's reps (this rep's capacity: 2 a day) and the users."""
    now = services.clock()
    ids: dict[str, Any] = {}
    with services.engine.begin() as conn:
        model = services.models.active(conn, now)
        handoff.sync_config_reps(conn, model, now)
        conn.execute(update(sales_reps).where(sales_reps.c.key == ME).values(daily_capacity=2))
        account = conn.execute(
            accounts.insert()
            .values(
                name="Owned Co",
                domain="owned.example",
                owner=OTHER,
                traits={},
                created_at=now,
                updated_at=now,
            )
            .returning(accounts.c.id)
        ).scalar_one()
        ids["pool"] = [_lead(conn, services, n) for n in range(waiting)]
        ids["owned"] = _lead(conn, services, 99, account)
        handoff.enqueue(conn, model, now)
    for role, key in (("admin", None), ("sales", ME), ("sales2", OTHER), ("marketer", None)):
        user_service.create_user(
            services.engine,
            email=f"{role}@example.com",
            password=PASSWORD,
            role="sales" if role == "sales2" else role,
            name=role.title(),
            sales_rep_key=key,
            now=now,
        )
    return ids


@pytest.fixture
def world(services):
    return seed(services)


def csrf_from(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "page has no CSRF field"
    return found.group(1)


def sign_in(client, who: str) -> str:
    client.cookies.clear()
    page = client.get("/login")
    response = client.post(
        "/login",
        data={
            "email": f"{who}@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_from(page.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    return csrf_from(client.get("/home").text)


def confirm_fields(html: str) -> dict[str, str]:
    box = html.split('id="queue-confirm"')[1].split("</form>")[0]
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', box))


def notice(html: str) -> str:
    found = re.search(r'id="queue-notice">(.*?)</div>', html, re.S)
    return found.group(1) if found else ""


def error(html: str) -> str:
    found = re.search(r'id="queue-error">(.*?)</div>', html, re.S)
    return found.group(1) if found else ""


def open_assignment(services, lead_id: int) -> dict[str, Any] | None:
    with services.engine.connect() as conn:
        return handoff.active_assignment(conn, lead_id)


def stage_of(services, lead_id: int) -> str:
    with services.engine.connect() as conn:
        return conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
        ).scalar_one()


def queued(services) -> set[int]:
    with services.engine.connect() as conn:
        return set(conn.execute(select(ready_queue.c.lead_id)).scalars())


def section(html: str, key: str) -> str:
    return html.split(f'id="section-{key}"')[1].split("</section>")[0]


def claim_and_accept(client, token: str, lead_id: int) -> None:
    assert client.post(f"/queue/{lead_id}/claim", data={"csrf_token": token}).status_code == 200
    accepted = client.post(
        f"/queue/{lead_id}/accept", data={"csrf_token": token}, follow_redirects=False
    )
    assert accepted.status_code == 303


# ---------------------------------------------------------------- sections and claims


def test_a_rep_sees_the_waiting_pool_counted_and_ranked_with_reasons_and_dated_highlights(
    client, services, world
):
    sign_in(client, "sales")
    page = client.get("/queue").text
    pool = section(page, "pool")
    assert 'data-total="4"' in page.split('id="section-pool"')[1][:200]
    for lead_id in [*world["pool"], world["owned"]]:
        assert f'id="q-{lead_id}"' in pool
    assert 'data-rank="1"' in pool and "Why now:" in pool
    assert "Recent request: a call back (6 d ago)" in pool  # the contact request, 6 days ago
    # dated, de-duplicated: two downloads of one price list are one line
    assert "downloaded the price list “Price list” · 2×, last " in pool
    assert "No highlights recorded" not in pool
    assert "Today: 0 of 2 new leads" in page


def test_a_rep_claims_within_capacity_and_is_told_why_at_capacity(client, services, world):
    token = sign_in(client, "sales")
    first, second, third = world["pool"]
    done = client.post(f"/queue/{first}/claim", data={"csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/queue?done=claim")
    page = client.get(done.headers["location"]).text
    assert "is yours now (1 of 2 new leads today)" in notice(page)
    assert f'id="q-{first}"' in section(page, "mine")
    held = open_assignment(services, first)
    assert held is not None and held["rep_key"] == ME and held["rule"] == "claim"
    assert held["status"] == "routed" and held["due_at"] > held["assigned_at"]
    assert client.post(f"/queue/{second}/claim", data={"csrf_token": token}).status_code == 200
    refused = client.post(f"/queue/{third}/claim", data={"csrf_token": token})
    assert refused.status_code == 409
    assert "At capacity: 2 of 2 new leads today" in error(refused.text)
    assert third in queued(services) and open_assignment(services, third) is None
    # the card says so before the rep tries
    assert 'data-claim-refusal="capacity"' in client.get("/queue").text


def test_a_rep_cannot_claim_against_the_accounts_owner_or_a_lead_already_taken(
    client, services, world
):
    token = sign_in(client, "sales")
    owned = client.post(f"/queue/{world['owned']}/claim", data={"csrf_token": token})
    assert owned.status_code == 409
    assert f"Its account belongs to {OTHER}" in error(owned.text)
    assert open_assignment(services, world["owned"]) is None
    lead = world["pool"][0]
    assert client.post(f"/queue/{lead}/claim", data={"csrf_token": token}).status_code == 200
    other = sign_in(client, "sales2")
    taken = client.post(f"/queue/{lead}/claim", data={"csrf_token": other})
    assert taken.status_code == 409 and f"{ME} already has it" in error(taken.text)
    assert open_assignment(services, lead)["rep_key"] == ME  # type: ignore[index]


def test_two_reps_claiming_one_lead_at_once_one_wins_the_other_is_told(db_url, services, world):
    lead = world["pool"][0]
    engines = [create_db_engine(db_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def run(engine: Engine, rep: str) -> None:
        barrier.wait()
        try:
            with engine.begin() as conn:
                now = services.clock()
                model = services.models.active(conn, now)
                results[rep] = claiming.claim(conn, model, lead, rep, now, actor=rep)
        except claiming.ClaimRefused as exc:
            results[rep] = exc
        except BaseException as exc:  # reported below
            results[rep] = ("crashed", exc)

    threads = [
        threading.Thread(target=run, args=(e, r)) for e, r in zip(engines, (ME, OTHER), strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    won = [r for r, v in results.items() if isinstance(v, claiming.ClaimResult)]
    lost = [v for v in results.values() if isinstance(v, claiming.ClaimRefused)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].reason.key == "taken" and lost[0].reason.values["rep"] == won[0]
    assert f"{won[0]} already has it" in str(lost[0])
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(assignments.c.rep_key).where(assignments.c.lead_id == lead)
        ).all()
    assert [r.rep_key for r in rows] == won
    assert lead not in queued(services)


# ---------------------------------------------------------------- admins


def test_admin_assigns_a_waiting_lead_and_reassigns_it_within_capacity(client, services, world):
    token = sign_in(client, "admin")
    lead = world["pool"][0]
    page = client.get("/queue").text
    assert page.index('id="section-pool"') < page.index('id="section-mine"')  # pool first
    done = client.post(
        f"/queue/{lead}/assign", data={"csrf_token": token, "rep": OTHER}, follow_redirects=False
    )
    assert done.status_code == 303
    assert f"assigned to {OTHER}" in notice(client.get(done.headers["location"]).text)
    first = open_assignment(services, lead)
    assert first is not None and first["rep_key"] == OTHER and first["rule"] == "manual"
    moved = client.post(
        f"/queue/{lead}/assign",
        data={"csrf_token": token, "rep": "jiho.park"},
        follow_redirects=False,
    )
    assert moved.status_code == 303
    now_held = open_assignment(services, lead)
    assert now_held is not None and now_held["rep_key"] == "jiho.park"
    with services.engine.connect() as conn:
        old = (
            conn.execute(select(assignments).where(assignments.c.id == first["id"]))
            .mappings()
            .one()
        )
    assert old["status"] == "rerouted" and old["close_reason"] == "reassigned"
    unknown = client.post(f"/queue/{lead}/assign", data={"csrf_token": token, "rep": "nobody"})
    assert unknown.status_code == 409 and "There is no sales rep" in error(unknown.text)
    full = client.post(
        f"/queue/{world['pool'][1]}/assign",
        data={"csrf_token": token, "rep": ME},
        follow_redirects=False,
    )
    assert full.status_code == 303
    with services.engine.begin() as conn:
        conn.execute(update(sales_reps).where(sales_reps.c.key == ME).values(daily_capacity=1))
    at_cap = client.post(f"/queue/{world['pool'][2]}/assign", data={"csrf_token": token, "rep": ME})
    assert at_cap.status_code == 409 and "At capacity: 1 of 1" in error(at_cap.text)
    rep_token = sign_in(client, "sales")
    forbidden = client.post(f"/queue/{lead}/assign", data={"csrf_token": rep_token, "rep": ME})
    assert forbidden.status_code == 403


def test_admin_accepting_a_waiting_lead_chooses_the_rep_instead_of_owning_it(
    client, services, world
):
    token = sign_in(client, "admin")
    lead = world["pool"][0]
    nobody = client.post(f"/queue/{lead}/accept", data={"csrf_token": token})
    assert nobody.status_code == 422 and "choose the rep" in error(nobody.text)
    assert stage_of(services, lead) == "mql" and open_assignment(services, lead) is None
    done = client.post(
        f"/queue/{lead}/accept", data={"csrf_token": token, "rep": OTHER}, follow_redirects=False
    )
    assert done.status_code == 303 and stage_of(services, lead) == "appointment"
    held = open_assignment(services, lead)
    assert held is not None and held["rep_key"] == OTHER and held["status"] == "accepted"


# ---------------------------------------------------------------- confirmations


def test_reject_and_close_ask_first_and_only_the_confirmed_request_acts(client, services, world):
    token = sign_in(client, "sales")
    lead = world["pool"][0]
    claim_and_accept(client, token, lead)
    asked = client.post(f"/queue/{lead}/reject", data={"csrf_token": token, "reason": "student"})
    assert asked.status_code == 200 and stage_of(services, lead) == "appointment"
    box = asked.text.split('id="queue-confirm"')[1].split("</div>\n  </div>")[0]
    assert f"Reject lead {lead}?" in box and "Stage: " in box and " → " in box
    assert "sends the lead to the dead end" in box  # "student" is a dead-end reason
    fields = confirm_fields(asked.text)
    forged = client.post(f"/queue/{lead}/reject", data={**fields, "confirm": "0" * 40})
    assert 'id="queue-confirm"' in forged.text and stage_of(services, lead) == "appointment"
    swapped = client.post(f"/queue/{lead}/reject", data={**fields, "reason": "no_budget"})
    assert 'id="queue-confirm"' in swapped.text and stage_of(services, lead) == "appointment"
    done = client.post(f"/queue/{lead}/reject", data=fields, follow_redirects=False)
    assert done.status_code == 303 and stage_of(services, lead) == "dead_end"
    said = notice(client.get(done.headers["location"]).text)
    assert f"(#{lead}) rejected: now " in said  # what changed, with the new stage
    again = client.post(f"/queue/{lead}/reject", data=fields, follow_redirects=False)
    assert again.status_code == 403  # replaying it: the hand-off is no longer the rep's


# ---------------------------------------------------------------- qualify messages


def test_qualify_says_what_changed_and_what_is_missing(client, services, world):
    token = sign_in(client, "sales")
    lead = world["pool"][0]
    claim_and_accept(client, token, lead)
    unknown = dict.fromkeys(("budget", "authority", "need", "timeframe"), "unknown")
    done = client.post(
        f"/queue/{lead}/qualify", data={"csrf_token": token, **unknown}, follow_redirects=False
    )
    assert done.status_code == 303
    said = notice(client.get(done.headers["location"]).text)
    assert "Nothing changed" in said and "qualified" not in said
    assert "Qualification 0 of 75: add budget, authority, need to hand off." in said
    two = {**unknown, "budget": "confirmed", "authority": "confirmed"}
    done = client.post(
        f"/queue/{lead}/qualify", data={"csrf_token": token, **two}, follow_redirects=False
    )
    said = notice(client.get(done.headers["location"]).text)
    assert "budget, authority recorded." in said
    assert "Qualification 50 of 75: add need to hand off." in said
    refused = client.post(
        f"/queue/{lead}/qualify", data={"csrf_token": token, **two, "amount": "1000000"}
    )
    assert refused.status_code == 409
    assert "Qualification 50 of 75: add need to hand off." in error(refused.text)
    assert stage_of(services, lead) == "appointment"


# ---------------------------------------------------------------- notes, calls, tasks


def test_notes_calls_and_tasks_are_logged_on_the_lead_and_bad_input_is_refused(
    client, services, world
):
    token = sign_in(client, "sales")
    lead = world["pool"][0]
    claim_and_accept(client, token, lead)
    task = client.post(
        f"/queue/{lead}/note",
        data={
            "csrf_token": token,
            "kind": "task",
            "body": "Send <b>the deck</b>",
            "due": "2030-01-15",
        },
        follow_redirects=False,
    )
    assert task.status_code == 303
    page = client.get("/queue").text
    card = page.split(f'id="q-{lead}"')[1].split("</article>")[0]
    assert "Open tasks: 1" in card and "Send &lt;b&gt;the deck&lt;/b&gt;" in card
    empty = client.post(
        f"/queue/{lead}/note", data={"csrf_token": token, "kind": "call", "body": " "}
    )
    assert empty.status_code == 422 and "body: must not be empty" in error(empty.text)
    no_due = client.post(
        f"/queue/{lead}/note", data={"csrf_token": token, "kind": "task", "body": "x"}
    )
    assert no_due.status_code == 422 and "due: a task needs a due date" in error(no_due.text)
    bad_kind = client.post(
        f"/queue/{lead}/note", data={"csrf_token": token, "kind": "sms", "body": "x"}
    )
    assert bad_kind.status_code == 422 and "kind:" in error(bad_kind.text)
    with services.engine.connect() as conn:
        rows = conn.execute(select(lead_notes)).mappings().all()
    assert len(rows) == 1 and rows[0]["author"] == ME and rows[0]["due_at"] is not None
    done = client.post(
        f"/queue/{lead}/task_done", data={"csrf_token": token, "note": str(rows[0]["id"])},
        follow_redirects=False,
    )  # fmt: skip
    assert done.status_code == 303
    with services.engine.connect() as conn:
        assert conn.execute(select(lead_notes.c.done_at)).scalar_one() is not None
    sign_in(client, "marketer")
    fragment = client.get(f"/queue/{lead}/notes").text
    assert "Send &lt;b&gt;the deck&lt;/b&gt;" in fragment and "<form" not in fragment
    other_lead = world["pool"][1]
    rep2 = sign_in(client, "sales2")
    assert client.get(f"/queue/{other_lead}/notes").status_code == 403
    assert (
        client.post(f"/queue/{lead}/note", data={"csrf_token": rep2, "body": "x"}).status_code
        == 403
    )


# ---------------------------------------------------------------- filters and pages


def test_long_sections_are_paged_and_filters_narrow_them(client, services):
    ids = seed(services, waiting=12)
    sign_in(client, "admin")
    page = client.get("/queue").text
    pool = section(page, "pool")
    assert pool.count('class="card queue-item') == 10 and "Page 1 of 2" in pool
    second = section(client.get("/queue?pool_page=2").text, "pool")
    assert second.count('class="card queue-item') == 3
    only_accepted = client.get("/queue?status=accepted").text
    assert 'id="section-pool"' not in only_accepted
    overdue = section(client.get("/queue?overdue=1").text, "pool")
    assert overdue.count('class="card queue-item') == 0  # just queued: nobody waited an SLA
    with services.engine.begin() as conn:
        conn.execute(
            update(ready_queue)
            .where(ready_queue.c.lead_id == ids["pool"][0])
            .values(queued_at=services.clock() - timedelta(days=10))
        )
    late = client.get("/queue?overdue=1").text
    assert section(late, "pool").count('class="card queue-item') == 1
    assert f'id="q-{ids["pool"][0]}"' in late and "past the SLA" in late
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ready_queue)).scalar_one() == 13


def test_the_queue_in_korean_has_no_raw_keys(client, services, world):
    token = sign_in(client, "sales")
    client.post(f"/queue/{world['pool'][0]}/claim", data={"csrf_token": token})
    client.post("/locale", data={"csrf_token": token, "locale": "ko"})
    page = client.get("/queue").text
    assert "담당자 대기" in page and "내 리드" in page and "지금 연락할 이유:" in page
    assert "가격표 다운로드" in page and "2회, 최근" in page
    assert not re.findall(r">[^<]*\bqueue\.[a-z_.]+", page)  # no untranslated key shows


def test_the_api_claims_assigns_and_logs_notes_with_the_same_rules(client, services, admin_token):
    ids = seed(services)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    lead = ids["pool"][0]
    claimed = client.post(f"/api/leads/{lead}/claim", json={"rep": ME})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["rep"] == ME and claimed.json()["used_today"] == 1
    again = client.post(f"/api/leads/{lead}/claim", json={"rep": OTHER})
    assert again.status_code == 409 and f"{ME} already has it" in again.text
    moved = client.post(f"/api/leads/{lead}/assign", json={"rep": OTHER})
    assert moved.status_code == 200 and moved.json()["previous_rep"] == ME
    no_due = client.post(f"/api/leads/{lead}/notes", json={"kind": "task", "body": "Call back"})
    assert no_due.status_code == 422 and "due" in no_due.text
    note = client.post(
        f"/api/leads/{lead}/notes",
        json={"kind": "task", "body": "Call back", "due_at": "2030-01-02T09:00:00+09:00"},
    )
    assert note.status_code == 200 and note.json()["kind"] == "task"
    listed = client.get(f"/api/leads/{lead}/notes").json()["items"]
    assert [n["body"] for n in listed] == ["Call back"]
    assert client.get("/api/leads/999999/notes").status_code == 404
