"""Dashboard funnel, sales queue, lead scores and model pages (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from leadflow.adapters.db.tables import (
    accounts,
    assignments,
    events,
    lead_models,
    lead_states,
    leads,
    sales_actions,
    stage_changes,
)
from leadflow.core.config import load_default_model
from leadflow.entrypoints.web.funnel import sankey_graph
from leadflow.entrypoints.web.i18n import Translator
from leadflow.services import lifecycle
from leadflow.services import users as user_service
from leadflow.services.lifecycle import default_source

PASSWORD = "correct horse battery"
ROLES = ("admin", "marketer", "sales", "executive")
PAGES = ["/funnel", "/queue", "/model"]
ALLOWED = {
    "admin": {"/funnel", "/queue", "/model"},
    "marketer": {"/funnel", "/model"},
    "sales": {"/queue"},
    "executive": {"/funnel"},
}


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def seed(services) -> dict[str, int]:
    """Three MQLs (a contact request each) handed to two reps, through the real stage
    machine; the dashboard users of every role."""
    now = services.clock()
    ids: dict[str, int] = {}
    with services.engine.begin() as conn:
        for key, owner in (("acme", "Rep One"), ("globex", "Rep Two")):
            ids[key] = conn.execute(
                accounts.insert()
                .values(
                    name=key.title(),
                    domain=f"{key}.example",
                    owner=owner,
                    industry="software",
                    traits={},
                    created_at=now - timedelta(days=30),
                    updated_at=now,
                )
                .returning(accounts.c.id)
            ).scalar_one()
        people = (
            ("mine", "ada@acme.example", "Ada", "acme", "Rep One"),
            ("mine2", "alan@acme.example", "Alan", "acme", "Rep One"),
            ("theirs", "grace@globex.example", "Grace", "globex", "Rep Two"),
        )
        for n, (key, email, first, acct, rep) in enumerate(people):
            lead_id = conn.execute(
                leads.insert()
                .values(
                    email=email,
                    first_name=first,
                    last_name="Tester",
                    account_id=ids[acct],
                    source="webinar",
                    consent_status="granted",
                    attributes={},
                    created_at=now - timedelta(days=20),
                    updated_at=now,
                )
                .returning(leads.c.id)
            ).scalar_one()
            ids[key] = lead_id
            for i, (kind, name, props) in enumerate(
                (
                    # contact details arrive with an identify (a form, an import...)
                    ("identify", None, {"traits": {"email": email, "firstName": first}}),
                    ("page", None, {}),
                    ("track", "content_download", {"asset": "Guide", "asset_type": "white_paper"}),
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
                        page_url="/pricing" if kind == "page" else None,
                        channel="email",
                        occurred_at=now - timedelta(days=12 - i),
                        received_at=now,
                    )
                )
            model = services.models.active(conn, now)
            lifecycle.recompute(conn, [lead_id], model, now)
            conn.execute(
                assignments.insert().values(
                    lead_id=lead_id,
                    active_lead_id=lead_id,
                    rep_key=rep,
                    rule="territory",
                    priority=1.0,
                    assigned_at=now - timedelta(hours=2),
                    due_at=now + timedelta(hours=22),
                    status="routed",
                    summary={"highlights": [f"read the white paper '{first}'s guide'"]},
                )
            )
    for role in ROLES:
        user_service.create_user(
            services.engine,
            email=f"{role}@example.com",
            password=PASSWORD,
            role=role,
            name=f"{role.title()} User",
            sales_rep_key="Rep One" if role == "sales" else None,
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


def confirm_fields(html: str) -> dict[str, str]:
    """The hidden fields of the confirmation a destructive queue action answers with."""
    box = html.split('id="queue-confirm"')[1].split("</form>")[0]
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', box))


def sign_in(client, role: str) -> str:
    page = client.get("/login")
    response = client.post(
        "/login",
        data={
            "email": f"{role}@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_from(page.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    return csrf_from(client.get("/home").text)


def stage_of(services, lead_id: int) -> str:
    with services.engine.connect() as conn:
        return conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
        ).scalar_one()


def count(services, table) -> int:
    with services.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def won_flow_in(html: str) -> int:
    # The figure may be a drill-down link (<a class="drill" ...>1</a>).
    row = re.search(
        r'<tr data-stage="won".*?data-col="flow_in">(?:<a [^>]*>)?([\d,]+)<', html, re.S
    )
    assert row, "the funnel table has no won row"
    return int(row.group(1).replace(",", ""))


# ---------------------------------------------------------------- access


@pytest.mark.parametrize("role", ROLES)
def test_each_role_opens_the_new_pages_it_may_and_gets_403_on_the_others(client, world, role):
    sign_in(client, role)
    for path in PAGES:
        status = client.get(path).status_code
        assert status == (200 if path in ALLOWED[role] else 403), (role, path, status)
    nav = client.get("/home").text
    for path in PAGES:
        assert (f'href="{path}"' in nav) == (path in ALLOWED[role]), (role, path)


def test_signed_out_visitor_is_sent_to_login_from_the_new_pages(client, world):
    for path in PAGES:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")


# ---------------------------------------------------------------- sales queue


def test_sales_rep_sees_only_own_hand_offs_with_their_highlights(client, world):
    sign_in(client, "sales")
    page = client.get("/queue").text
    assert f'id="q-{world["mine"]}"' in page and f'id="q-{world["mine2"]}"' in page
    assert f'id="q-{world["theirs"]}"' not in page and "grace@globex.example" not in page
    # highlights come from the lead's events, dated (the seeded download was 10 days ago)
    assert "read the white paper “Guide” · " in page
    assert "Marketing qualified lead" in page  # the model's display name for mql


def test_queue_actions_without_the_csrf_token_are_refused_and_change_nothing(
    client, services, world
):
    sign_in(client, "sales")
    lead = world["mine"]
    no_token = client.post(f"/queue/{lead}/accept", data={})
    forged = client.post(f"/queue/{lead}/accept", data={"csrf_token": "forged"})
    assert no_token.status_code == 403 and forged.status_code == 403
    assert stage_of(services, lead) == "mql"
    assert count(services, sales_actions) == 0


def test_sales_rep_accepts_qualifies_and_wins_and_the_funnel_counts_the_win(
    client, services, world
):
    lead = world["mine"]
    sign_in(client, "marketer")
    before = won_flow_in(client.get("/funnel").text)
    client.cookies.clear()
    token = sign_in(client, "sales")
    accepted = client.post(
        f"/queue/{lead}/accept", data={"csrf_token": token}, follow_redirects=False
    )
    assert accepted.status_code == 303
    assert accepted.headers["location"] == f"/queue?done=accept&lead={lead}"
    assert stage_of(services, lead) == "appointment"
    assert "accepted: it is now an appointment" in client.get(accepted.headers["location"]).text
    bant = {k: "confirmed" for k in ("budget", "authority", "need", "timeframe")}
    qualified = client.post(
        f"/queue/{lead}/qualify",
        data={"csrf_token": token, **bant, "amount": "25,000,000", "currency": "krw"},
        follow_redirects=False,
    )
    assert qualified.status_code == 303, qualified.text[:500]
    assert stage_of(services, lead) == "opportunity"
    asked = client.post(f"/queue/{lead}/win", data={"csrf_token": token}, follow_redirects=False)
    assert asked.status_code == 200 and stage_of(services, lead) == "opportunity"  # asks first
    won = client.post(f"/queue/{lead}/win", data=confirm_fields(asked.text), follow_redirects=False)
    assert won.status_code == 303
    assert stage_of(services, lead) == "won"
    assert f'id="q-{lead}"' not in client.get("/queue").text  # the hand-off is closed
    client.cookies.clear()
    sign_in(client, "marketer")
    assert won_flow_in(client.get("/funnel").text) == before + 1


def test_an_action_the_stage_machine_refuses_shows_its_reason_not_an_error(client, services, world):
    token = sign_in(client, "sales")
    lead = world["mine2"]
    refused = client.post(f"/queue/{lead}/win", data={"csrf_token": token})
    assert refused.status_code == 409
    assert 'id="queue-error"' in refused.text and "not done" in refused.text
    assert "mql" in refused.text.split('id="queue-error"')[1].split("</div>")[0]
    assert stage_of(services, lead) == "mql"
    via_htmx = client.post(
        f"/queue/{lead}/lose",
        data={"csrf_token": token, "reason": "price"},
        headers={"HX-Request": "true"},
    )
    assert via_htmx.status_code == 200 and 'id="queue-error"' in via_htmx.text
    assert count(services, sales_actions) == 0


def test_reject_needs_a_configured_reason_and_qualify_a_valid_amount(client, services, world):
    token = sign_in(client, "sales")
    lead = world["mine2"]
    unknown = client.post(
        f"/queue/{lead}/reject", data={"csrf_token": token, "reason": "<script>x</script>"}
    )
    assert unknown.status_code in (409, 422)
    assert "<script>x</script>" not in unknown.text
    assert stage_of(services, lead) == "mql"
    asked = client.post(f"/queue/{lead}/reject", data={"csrf_token": token, "reason": "no_budget"})
    rejected = client.post(
        f"/queue/{lead}/reject", data=confirm_fields(asked.text), follow_redirects=False
    )
    assert rejected.status_code == 303 and stage_of(services, lead) == "nurturing"
    mine = world["mine"]
    client.post(f"/queue/{mine}/accept", data={"csrf_token": token})
    bad_amount = client.post(
        f"/queue/{mine}/qualify",
        data={"csrf_token": token, "amount": "lots", "budget": "confirmed"},
    )
    assert bad_amount.status_code == 422 and "amount: not a number" in bad_amount.text
    assert stage_of(services, mine) == "appointment"


def test_sales_rep_acting_on_another_reps_lead_gets_403(client, services, world):
    token = sign_in(client, "sales")
    theirs = world["theirs"]
    response = client.post(f"/queue/{theirs}/accept", data={"csrf_token": token})
    assert response.status_code == 403
    assert stage_of(services, theirs) == "mql"
    assert client.post("/queue/999999/accept", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/queue/{theirs}/explode", data={"csrf_token": token}).status_code == 404


def test_admin_sees_every_hand_off_and_may_act_on_any(client, services, world):
    token = sign_in(client, "admin")
    page = client.get("/queue").text
    for key in ("mine", "mine2", "theirs"):
        assert f'id="q-{world[key]}"' in page
    response = client.post(
        f"/queue/{world['theirs']}/accept", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303 and stage_of(services, world["theirs"]) == "appointment"


# ---------------------------------------------------------------- lead page


def test_lead_page_shows_stage_scores_with_rules_and_stage_history(client, world):
    sign_in(client, "marketer")
    page = client.get(f"/leads/{world['mine']}").text
    assert 'data-stage="mql"' in page
    assert "download_white_paper" in page  # the rule that fired, in the explanation
    history = page.split('id="stage-history"')[1]
    assert "Marketing qualified lead" in history and "Lead acquired" in history


def test_sales_rep_opens_a_lead_handed_to_them_in_another_owners_account(client, services, world):
    with services.engine.begin() as conn:
        conn.execute(
            assignments.update()
            .where(assignments.c.lead_id == world["theirs"])
            .values(rep_key="Rep One")
        )
    sign_in(client, "sales")
    assert client.get(f"/leads/{world['theirs']}").status_code == 200


def test_korean_user_sees_korean_stage_names(client, services, world):
    sign_in(client, "marketer")
    marketer = next(u for u in user_service.list_users(services.engine) if u.role == "marketer")
    user_service.set_locale(services.engine, marketer.id, "ko")
    funnel = client.get("/funnel").text
    assert "유망 리드" in funnel and "리드획득" in funnel and "병목" in funnel
    lead = client.get(f"/leads/{world['mine']}").text
    assert "단계 이력" in lead and "유망 리드" in lead


# ---------------------------------------------------------------- funnel


def test_funnel_period_and_slice_are_validated_and_sliced(client, world):
    sign_in(client, "marketer")
    bad = client.get("/funnel?from=yesterday&by=<b>shoe</b>")
    assert bad.status_code == 400
    assert "is not a date" in bad.text and "unknown slice" in bad.text
    assert "<b>shoe</b>" not in bad.text
    backwards = client.get("/funnel?from=2026-05-01&to=2026-04-01")
    assert backwards.status_code == 400 and "must not be before" in backwards.text
    sliced = client.get("/funnel?by=channel&value=email")
    assert sliced.status_code == 200 and 'data-chart="sankey"' in sliced.text
    assert won_flow_in(sliced.text) == 0
    empty = client.get("/funnel?by=channel&value=nowhere")
    assert empty.status_code == 400 and "no lead has" in empty.text


def test_sankey_moves_back_go_to_a_separate_node_so_the_graph_has_no_cycle():
    model = load_default_model()
    graph = sankey_graph(
        [
            {"source": "(new)", "target": "anonymous", "value": 3},
            {"source": "nurturing", "target": "mql", "value": 2},
            {"source": "mql", "target": "nurturing", "value": 1},
            {"source": "recycle_a", "target": "nurturing", "value": 1},
            {"source": "appointment", "target": "recycle_a", "value": 1},
        ],
        model,
        Translator("ko"),
    )
    edges = {(link["source"], link["target"]) for link in graph["links"]}
    assert ("mql", "nurturing↩") in edges and ("recycle_a", "nurturing↩") in edges
    # no cycle: a depth-first walk never meets a node on its own path
    nexts: dict[str, list[str]] = {}
    for a, b in edges:
        nexts.setdefault(a, []).append(b)

    def walk(node: str, path: set[str]) -> None:
        assert node not in path
        for n in nexts.get(node, []):
            walk(n, path | {node})

    for start in nexts:
        walk(start, set())
    labels = {n["name"]: n["label"] for n in graph["nodes"]}
    assert labels["mql"] == "유망 리드" and labels["(new)"] == "(신규)"


# ---------------------------------------------------------------- model


def _upload(client, token: str, content: bytes, name: str = "candidate.yaml"):
    return client.post(
        "/model/backtest",
        data={"csrf_token": token},
        files={"candidate": (name, content, "application/x-yaml")},
    )


def _stored(services) -> tuple[int, int, int]:
    return count(services, lead_models), count(services, stage_changes), count(services, leads)


def test_model_page_shows_the_active_yaml_escaped_valid_and_its_history(client, world):
    sign_in(client, "marketer")
    page = client.get("/model").text
    assert 'id="model-yaml"' in page and "main_path: [anonymous" in page
    assert 'data-ok="true"' in page
    assert 'id="model-history"' in page and "2024.4" in page
    assert 'id="backtest-form"' not in page  # read-only for marketers


def test_marketer_may_not_upload_a_candidate(client, services, world):
    token = sign_in(client, "marketer")
    before = _stored(services)
    assert _upload(client, token, default_source().encode()).status_code == 403
    assert _stored(services) == before


def test_bad_candidate_models_are_refused_with_the_key_path_and_nothing_is_stored(
    client, services, world
):
    token = sign_in(client, "admin")
    client.get("/model")
    before = _stored(services)
    broken = default_source().replace("half_life_days: 30", "half_life_days: soon")
    response = _upload(client, token, broken.encode())
    assert response.status_code == 422
    assert "engagement.half_life_days" in response.text
    not_utf8 = _upload(client, token, "version: '1'\nname: 한글\n".encode("cp949"))
    assert not_utf8.status_code == 422 and "not UTF-8" in not_utf8.text
    not_yaml = _upload(client, token, b"version: [unclosed\n")
    assert not_yaml.status_code == 422 and 'id="backtest-errors"' in not_yaml.text
    path_like = _upload(client, token, b"/etc/leadflow.yaml")
    assert path_like.status_code == 422 and "(root)" in path_like.text
    empty = _upload(client, token, b"   \n")
    assert empty.status_code == 422 and "empty" in empty.text
    huge = _upload(client, token, b"#" * (1024 * 1024 + 10))
    assert huge.status_code in (413,) and "1 MB" in huge.text
    no_csrf = client.post(
        "/model/backtest", files={"candidate": ("m.yaml", default_source().encode())}
    )
    assert no_csrf.status_code == 403
    assert _stored(services) == before


def test_backtest_of_an_uploaded_candidate_reports_without_applying_it(client, services, world):
    token = sign_in(client, "admin")
    client.get("/model")
    before = _stored(services)
    candidate = (
        default_source()
        .replace('version: "2024.4"', 'version: "2024.4-web"')
        .replace("      - score: 100", "      - score: 5")
    )
    response = _upload(client, token, candidate.encode())
    assert response.status_code == 200, response.text[:800]
    report = response.text.split('id="backtest-report"')[1]
    assert "2024.4-web" in report and 'data-chart="lines"' in report
    assert _stored(services) == before
    with services.engine.connect() as conn:
        active = conn.execute(select(lead_models.c.version).where(lead_models.c.active)).scalar()
    assert active == "2024.4"


def test_default_funnel_period_ends_the_day_after_the_newest_stage_change():
    # The default period ends the day after the newest stage change, not "today".
    from leadflow.entrypoints.web.funnel import default_period

    newest = datetime(2025, 3, 10, 15, 30, tzinfo=UTC)
    period = default_period(newest, datetime(2026, 11, 23, tzinfo=UTC))
    assert period.end == datetime(2025, 3, 11, tzinfo=UTC)
    assert period.start == datetime(2024, 12, 11, tzinfo=UTC)


def test_the_report_store_is_warmed_at_start_up_when_enabled(db_url, tmp_path):
    from fastapi.testclient import TestClient

    from leadflow.bootstrap import build_services
    from leadflow.entrypoints.api import build_app
    from leadflow.settings import Settings

    services = build_services(
        Settings(database_url=db_url, mail_dir=str(tmp_path / "outbox"), warm_reports=True)
    )
    try:
        app = build_app(services)
        with TestClient(app):
            cache = app.state.web_cache
            for _ in range(500):
                if any(isinstance(k, tuple) and k[:1] == ("funnel",) for k in cache._items):
                    break
                threading.Event().wait(0.02)
            assert any(isinstance(k, tuple) and k[:1] == ("funnel",) for k in cache._items)
    finally:
        services.close()
