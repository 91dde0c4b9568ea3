"""Dashboard attribution, KPI, programs, content and forms pages (SQLite and PostgreSQL).

The fixture writes rows straight into the tables (leads, stage changes, events, program
enrolments, email sends, content assets, form submissions, an opportunity) and the tests
read the figures the pages show.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from leadflow.adapters.db.tables import (
    accounts,
    content_assets,
    email_sends,
    events,
    form_submissions,
    leads,
    opportunities,
    program_enrollments,
    stage_changes,
)
from leadflow.entrypoints.web.marketing import safe_href
from leadflow.services import users as user_service

PASSWORD = "correct horse battery"
ROLES = ("admin", "marketer", "sales", "executive")
XSS = "<script>alert(1)</script>"
PAGES = [
    "/attribution",
    "/kpis",
    "/kpis?role=department",
    "/kpis?role=campaign",
    "/programs",
    "/programs/education",
    "/content",
    "/forms",
]
REPORTS = {"/attribution", "/kpis", "/kpis?role=department", "/kpis?role=campaign"}
ALLOWED = {
    "admin": set(PAGES),
    "marketer": set(PAGES),
    "sales": set(),
    "executive": REPORTS,
}
MAIN = ["anonymous", "acquired", "nurturing", "mql", "appointment", "opportunity", "won"]


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def _path(conn, lead_id: int, moves: list[tuple[str, str, datetime]]) -> None:
    for frm, to, at in moves:
        conn.execute(
            stage_changes.insert().values(
                lead_id=lead_id,
                from_stage=frm,
                to_stage=to,
                at=at,
                rule="test",
                model_version="2024.1",
                recorded_at=at,
            )
        )


def _walk(stages: list[str], times: list[datetime]) -> list[tuple[str, str, datetime]]:
    return [(stages[i], stages[i + 1], times[i]) for i in range(len(stages) - 1)]


def _send(conn, n: int, lead_id: int, step: str, status: str, **values: Any) -> None:
    conn.execute(
        email_sends.insert().values(
            idempotency_key=f"program:education:{step}:{lead_id}:{n}",
            message_id=f"<m{n}@test>",
            lead_id=lead_id,
            category="marketing",
            program_key="education",
            step_id=step,
            template="nurture",
            to_email=f"l{lead_id}@acme.example",
            subject="Hello",
            status=status,
            **values,
        )
    )


def _event(conn, n: int, lead_id: int, at: datetime, **values: Any) -> None:
    conn.execute(
        events.insert().values(
            message_id=f"ev-{n}",
            lead_id=lead_id,
            context={},
            occurred_at=at,
            received_at=at,
            **{"properties": {}, "name": None, **values},
        )
    )


def seed(services) -> dict[str, int]:
    now = services.clock()
    d = lambda days: now - timedelta(days=days)  # noqa: E731
    ids: dict[str, int] = {}
    with services.engine.begin() as conn:
        acct = conn.execute(
            accounts.insert()
            .values(
                name="Acme",
                domain="acme.example",
                owner="Rep One",
                traits={},
                created_at=d(60),
                updated_at=now,
            )
            .returning(accounts.c.id)
        ).scalar_one()
        for key, first in (("ada", "Ada"), ("bob", "Bob"), ("cy", "Cy"), ("dee", "Dee")):
            ids[key] = conn.execute(
                leads.insert()
                .values(
                    email=f"{key}@acme.example",
                    first_name=first,
                    last_name="Tester",
                    account_id=acct,
                    source="website",
                    consent_status="granted",
                    attributes={},
                    created_at=d(45),
                    updated_at=now,
                )
                .returning(leads.c.id)
            ).scalar_one()
        ada, bob, cy, dee = ids["ada"], ids["bob"], ids["cy"], ids["dee"]
        # Stage paths: Ada and Bob are won in the period, Cy moved back from mql.
        _path(conn, ada, _walk(MAIN, [d(40), d(28), d(20), d(8), d(7), d(5)]))
        _path(conn, bob, _walk(MAIN, [d(35), d(31), d(10), d(9), d(6), d(4)]))
        _path(conn, cy, [*_walk(MAIN[:4], [d(40), d(35), d(32)]), ("mql", "nurturing", d(29))])
        # Touches: Ada paid_search then webinar; Bob email twice (one a download).
        _event(conn, 1, ada, d(39), type="page", page_url="/pricing", channel="paid_search")
        _event(conn, 2, ada, d(21), type="track", name="webinar_attended", channel="webinar")
        _event(
            conn,
            3,
            bob,
            d(33),
            type="page",
            page_url="https://acme.example/whitepapers/b2b-lead-management/?utm_source=x",
            channel="email",
        )
        _event(
            conn,
            4,
            bob,
            d(11),
            type="track",
            name="content_download",
            channel="email",
            properties={"asset_key": "b2b-lead-management"},
        )
        _event(
            conn,
            5,
            cy,
            d(30),
            type="track",
            name="content_download",
            properties={"asset_key": "b2b-lead-management"},
        )
        _event(conn, 6, cy, d(30), type="page", page_url="/whitepapers/b2b-lead-management")
        # Program "education": enrolments and sends.
        for lead_id, status, reason in (
            (ada, "active", None),
            (bob, "completed", None),
            (cy, "exited", "left_stages"),
        ):
            conn.execute(
                program_enrollments.insert().values(
                    program_key="education",
                    lead_id=lead_id,
                    active_key=f"education:{lead_id}" if status == "active" else None,
                    status=status,
                    step_index=0,
                    enrolled_at=d(31),
                    exited_at=d(29) if status == "exited" else None,
                    exit_reason=reason,
                )
            )
        sent = {"planned_at": d(30), "sent_at": d(30)}
        _send(conn, 1, ada, "welcome", "sent", **sent, opened_at=d(29), clicked_at=d(29))
        _send(conn, 2, bob, "welcome", "sent", **sent, opened_at=d(29))
        _send(conn, 3, cy, "welcome", "skipped", planned_at=d(30), skip_reason="frequency_cap")
        _send(conn, 4, dee, "welcome", "planned", planned_at=now)
        _send(
            conn, 5, ada, "deeper", "sent", planned_at=d(29), sent_at=d(29), unsubscribed_at=d(27)
        )
        _send(
            conn,
            6,
            bob,
            "white-paper",
            "sent",
            planned_at=d(12),
            sent_at=d(12),
            asset_key="b2b-lead-management",
        )
        # The content library (with a hostile URL that must never become a link).
        for key, title, kind, stage, url, industries in (
            (
                "b2b-lead-management",
                "B2B lead management",
                "white_paper",
                "middle",
                "/whitepapers/b2b-lead-management",
                ["Retail"],
            ),
            ("evil", "Evil <b>post</b>", "blog_post", "early", "javascript:alert(1)", []),
            ("pricing", "Pricing", "pricing", "late", "https://acme.example/pricing", []),
        ):
            conn.execute(
                content_assets.insert().values(
                    key=key,
                    title=title,
                    type=kind,
                    stage=stage,
                    gated=kind == "white_paper",
                    industries=industries,
                    url=url,
                    source="api",
                    active=True,
                    created_at=d(50),
                    updated_at=d(50),
                )
            )
        # Form submissions: three of white-paper (one older than 30 days), one demo-video.
        for form, at, fields, lead_id in (
            ("white-paper", d(40), {"email": "old@acme.example", "first_name": "Old"}, ada),
            (
                "white-paper",
                d(3),
                {"email": "x@evil.example", "first_name": XSS, "company": "<i>Evil</i> Inc"},
                None,
            ),
            ("white-paper", d(1), {"email": "bob@acme.example", "first_name": "Bob"}, bob),
            ("demo-video", d(2), {"email": "cy@acme.example", "first_name": "Cy"}, cy),
        ):
            conn.execute(
                form_submissions.insert().values(
                    form_key=form,
                    lead_id=lead_id,
                    fields=fields,
                    consent={"granted": True, "text": "ok"},
                    submitted_at=at,
                )
            )
        conn.execute(
            opportunities.insert().values(
                name="Acme expansion",
                account_id=acct,
                lead_id=ada,
                amount=5000.0,
                currency="KRW",
                expected_close=(now + timedelta(days=40)).date(),
                stage="open",
                created_at=d(7),
                updated_at=d(7),
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


def cell(html: str, row_attr: str, col_attr: str) -> str:
    """The text of the cell ``col_attr`` (a data-col / data-model / data-fig) in the row
    whose opening tag holds ``row_attr``."""
    row = re.search(
        rf"<(?:tr|article)[^>]*{re.escape(row_attr)}[^>]*>(.*?)</(?:tr|article)>", html, re.S
    )
    assert row, f"no row {row_attr}"
    # A figure may be a drill-down link (<a class="drill" ...>3</a>).
    found = re.search(
        rf"<(?:td|dd)[^>]*{re.escape(col_attr)}[^>]*>(?:<a [^>]*>)?([^<]*)<", row.group(1)
    )
    assert found, f"no cell {col_attr} in row {row_attr}"
    return found.group(1).strip()


# ---------------------------------------------------------------- access


@pytest.mark.parametrize("role", ROLES)
def test_each_role_opens_the_pages_it_may_and_gets_403_on_the_others(client, world, role):
    sign_in(client, role)
    for path in PAGES:
        status = client.get(path).status_code
        assert status == (200 if path in ALLOWED[role] else 403), (role, path, status)
    nav = client.get("/home").text
    for path in ("/attribution", "/kpis", "/programs", "/content", "/forms"):
        assert (f'href="{path}"' in nav) == any(p.startswith(path) for p in ALLOWED[role])


def test_signed_out_visitor_is_sent_to_login(client, world):
    for path in PAGES:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")


# ---------------------------------------------------------------- programs


def test_programs_list_shows_enrolment_send_and_conversion_figures(client, world):
    sign_in(client, "marketer")
    html = client.get("/programs").text
    program = 'data-program="education"'
    assert cell(html, program, 'data-fig="enrolled"') == "3"
    assert cell(html, program, 'data-fig="active"') == "1"
    assert cell(html, program, 'data-fig="completed"') == "1"
    assert cell(html, program, 'data-fig="exited"') == "1"
    assert cell(html, program, 'data-fig="sent"') == "4"
    assert cell(html, program, 'data-fig="opened"') == "2"
    assert cell(html, program, 'data-fig="clicked"') == "1"
    # Ada (after welcome and deeper) and Bob (after white-paper) moved forward in 14 days.
    assert cell(html, program, 'data-fig="converted"') == "2"
    # every program of the shipped model is listed, with its localized name
    assert "Educational series" in html and 'data-program="onboarding"' in html


def test_program_page_shows_steps_in_words_and_per_step_figures(client, world):
    sign_in(client, "marketer")
    response = client.get("/programs/education")
    assert response.status_code == 200
    html = response.text
    welcome = 'data-step="welcome"'
    assert cell(html, welcome, 'data-col="planned"') == "1"
    assert cell(html, welcome, 'data-col="sent"') == "2"
    assert cell(html, welcome, 'data-col="skipped"') == "1"
    assert 'data-reason="frequency_cap">frequency_cap: 1<' in html
    assert cell(html, welcome, 'data-col="opened"') == "2"
    assert cell(html, welcome, 'data-col="clicked"') == "1"
    # Ada moved acquired -> nurturing 2 days after; Bob's move came 20 days later: 1.
    assert cell(html, welcome, 'data-col="conversions"') == "1"
    deeper = 'data-step="deeper"'
    assert cell(html, deeper, 'data-col="unsubscribed"') == "1"
    assert cell(html, deeper, 'data-col="conversions"') == "1"
    assert cell(html, 'data-step="white-paper"', 'data-col="conversions"') == "1"
    assert cell(html, 'data-step="case"', 'data-col="sent"') == "0"
    # steps in words: wait, condition, action
    assert "Score at least 20" in html
    assert "Otherwise the step is skipped." in html
    assert "Send “Our white paper on B2B lead management” with B2B 리드 관리 백서" in html
    assert "within 14 days after the step" in html  # the conversion definition
    assert 'data-chart="grouped"' in html
    assert client.get("/programs/nope").status_code == 404


def test_program_page_in_korean(client, services, world):
    sign_in(client, "marketer")
    marketer = next(u for u in user_service.list_users(services.engine) if u.role == "marketer")
    user_service.set_locale(services.engine, marketer.id, "ko")
    html = client.get("/programs/education").text
    assert "교육 시리즈" in html and "점수 20 이상" in html and "리드획득" in html
    assert "14일 안에" in html


# ---------------------------------------------------------------- content


def test_content_library_by_stage_with_consumption_and_safe_links(client, world):
    sign_in(client, "marketer")
    html = client.get("/content").text
    wp = 'data-asset="b2b-lead-management"'
    assert cell(html, wp, 'data-col="downloads"') == "2"
    assert cell(html, wp, 'data-col="views"') == "2"  # full URL with query + site path
    assert cell(html, wp, 'data-col="emails"') == "1"
    middle = html[html.index('id="stage-middle"') : html.index('id="stage-late"')]
    assert "B2B lead management" in middle and "Gated" in middle and "Retail" in middle
    assert 'href="/whitepapers/b2b-lead-management"' in html
    assert 'href="https://acme.example/pricing"' in html
    assert 'href="javascript:' not in html
    assert "<span data-unsafe-url>javascript:alert(1)</span>" in html
    assert "Evil &lt;b&gt;post&lt;/b&gt;" in html and "<b>post</b>" not in html
    retail = client.get("/content?industry=Retail").text
    assert 'data-asset="b2b-lead-management"' in retail and 'data-asset="evil"' in retail


def test_content_page_shows_the_model_library_while_the_table_is_empty(client, services):
    seed_users_only(services)
    sign_in(client, "marketer")
    html = client.get("/content").text
    assert 'id="content-from-config"' in html
    assert 'data-asset="what-is-mql"' in html and 'data-asset="enterprise-pricing"' in html


def seed_users_only(services) -> None:
    for role in ROLES:
        user_service.create_user(
            services.engine,
            email=f"{role}@example.com",
            password=PASSWORD,
            role=role,
            name=role,
            sales_rep_key=None,
            now=services.clock(),
        )


def test_safe_href_only_links_http_and_site_paths():
    assert safe_href("/pricing") == "/pricing"
    assert safe_href("https://x.example/a") == "https://x.example/a"
    for bad in ("javascript:alert(1)", "JavaScript:alert(1)", "//evil.example", "data:text/html,x"):
        assert safe_href(bad) is None, bad
    assert safe_href(' /x"onmouseover=1') is None


# ---------------------------------------------------------------- forms


def test_forms_page_shows_forms_counts_and_escaped_submissions(client, world):
    sign_in(client, "marketer")
    html = client.get("/forms").text
    wp = 'data-form="white-paper"'
    assert cell(html, wp, 'data-fig="total"') == "3"
    assert cell(html, wp, 'data-fig="recent"') == "2"
    assert cell(html, 'data-form="demo-video"', 'data-fig="total"') == "1"
    assert 'href="/f/white-paper"' in html
    assert "I agree to receive marketing email from AcmeCloud" in html
    assert "Work email *" in html
    # the script in a submitted name is text, never markup
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;i&gt;Evil&lt;/i&gt; Inc" in html
    rows = re.findall(r'<tr data-submission="\d+">', html)
    assert len(rows) == 4
    only = client.get("/forms?form=demo-video").text
    assert len(re.findall(r'<tr data-submission="\d+">', only)) == 1


def test_forms_page_names_a_known_visitor_from_the_lead(client, services, world):
    # A known visitor was asked nothing: the submission has no fields of its own.
    with services.engine.begin() as conn:
        conn.execute(
            form_submissions.insert().values(
                form_key="demo-video",
                lead_id=world["dee"],
                fields={},
                consent=None,
                submitted_at=datetime.now(UTC),
            )
        )
    sign_in(client, "marketer")
    html = client.get("/forms?form=demo-video").text
    assert "dee@acme.example" in html and "Dee" in html


# ---------------------------------------------------------------- attribution & KPIs


def test_attribution_shows_every_model_side_by_side(client, world):
    sign_in(client, "executive")
    response = client.get("/attribution")
    assert response.status_code == 200
    html = response.text
    for label in (
        "First touch",
        "Last touch",
        "Linear",
        "Time decay",
        "U-shaped",
        "W-shaped",
        "Markov",
        "Shapley",
    ):
        assert f">{label}</th>" in html, label
    assert 'data-chart="grouped"' in html
    paid = 'data-touch="paid_search"'
    webinar = 'data-touch="webinar"'
    email = 'data-touch="email"'
    assert cell(html, paid, 'data-model="first_touch"') == "1"
    assert cell(html, paid, 'data-model="last_touch"') in ("0", "–")
    assert cell(html, webinar, 'data-model="last_touch"') == "1"
    assert cell(html, paid, 'data-model="linear"') == "0.5"
    assert cell(html, email, 'data-model="linear"') == "1"
    # two won conversions in the default period
    assert re.search(r"Conversions into Won</span>.*?kpi-value\">2<", html, re.S)
    bad = client.get("/attribution?level=planet&touch=x")
    assert bad.status_code == 400
    assert "level: unknown level" in bad.text and "touch: unknown touch" in bad.text


def test_kpis_tabs_show_the_role_figures_and_the_forecast(client, world):
    sign_in(client, "executive")
    html = client.get("/kpis").text
    assert 'data-tab="executive"' in html and 'aria-current="page">Executive<' in html
    assert "2 won leads" in html
    assert 'id="channel-chart"' in html
    assert cell(html, 'data-channel="paid_search"', 'class="num"') == "1"
    assert cell(html, 'data-channel="email"', 'class="num"') == "1"
    month = (datetime.now(UTC) + timedelta(days=40)).strftime("%Y-%m")
    assert f'data-month="{month}"' in html and "5,000" in html
    assert 'id="backtest-chart"' in html
    dept = client.get("/kpis?role=department").text
    assert re.search(r"New MQLs</span>.*?kpi-value\">3<", dept, re.S)
    assert cell(dept, 'data-stage="won"', 'data-col="flow_in"') == "2"
    camp = client.get("/kpis?role=campaign").text
    assert re.search(r"Content downloads</span>.*?kpi-value\">2<", camp, re.S)
    assert client.get("/kpis?role=ceo").status_code == 400


def test_sales_rep_gets_403_on_every_marketing_and_report_page(client, world):
    sign_in(client, "sales")
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 403
        assert "have access" in response.text


def test_attribution_figures_equal_the_report_of_each_model(services, world):
    from leadflow.entrypoints.web.analytics import MODELS, attribution_figures
    from leadflow.services import reports

    now = services.clock()
    with services.engine.begin() as conn:
        model = services.models.active(conn, now)
    store = reports.load_store(services.engine, model)
    period = reports.Period(now - timedelta(days=90), now + timedelta(days=1))
    for level, touch in (("lead", "channel"), ("account", "channel"), ("lead", "campaign")):
        figures = attribution_figures(store, period, level, touch, "won")
        for name in MODELS:
            report = reports.attribution_report(store, period, model=name, level=level, touch=touch)
            for metric in ("conversions", "value"):
                expected = {str(r["touch"]): r[metric] for r in report["credits"]}
                shown = {k: v[metric] for k, v in figures["credits"][name].items()}
                assert shown == pytest.approx(expected), (level, touch, name, metric)
            tops = [m["top_touch"] for m in report["models"]]
            assert figures["tops"][name] == (tops[0] if tops else None)
            assert figures["conversions"] == report["conversions"] == 2
            assert figures["paths"] == report["paths"]
            assert figures["with_touches"] == report["converted_paths_with_touches"]
