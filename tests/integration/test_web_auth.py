"""Dashboard sign-in, sessions, CSRF, roles and escaping (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from leadflow.adapters.db.tables import accounts, api_keys, events, leads, web_sessions
from leadflow.entrypoints.cli import app as cli_app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.entrypoints.web.auth import safe_next
from leadflow.entrypoints.web.i18n import EN, KO
from leadflow.services import users as user_service
from leadflow.settings import Settings

PASSWORD = "correct horse battery"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ROLES = ("admin", "marketer", "sales", "executive")


def seed(engine) -> dict[str, int]:
    """Two reps' accounts with two leads each, one lead with a hostile name, some events."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        for key, name, owner in (("acme", "Acme", "Rep One"), ("globex", "Globex", "Rep Two")):
            ids[key] = conn.execute(
                accounts.insert()
                .values(
                    name=name,
                    domain=f"{key}.example",
                    owner=owner,
                    traits={},
                    created_at=NOW,
                    updated_at=NOW,
                )
                .returning(accounts.c.id)
            ).scalar_one()
        people = (
            ("own", "ada@acme.example", "Ada", "Lovelace", "acme"),
            ("own2", "alan@acme.example", "<script>alert(1)</script>", "Turing", "acme"),
            ("other", "grace@globex.example", "Grace", "Hopper", "globex"),
            ("other2", "edsger@globex.example", "Edsger", "Dijkstra", "globex"),
        )
        for key, email, first, last, acct in people:
            ids[key] = conn.execute(
                leads.insert()
                .values(
                    email=email,
                    first_name=first,
                    last_name=last,
                    account_id=ids[acct],
                    source="webinar",
                    consent_status="granted",
                    attributes={},
                    created_at=NOW,
                    updated_at=NOW,
                )
                .returning(leads.c.id)
            ).scalar_one()
        for i in range(3):
            conn.execute(
                events.insert().values(
                    message_id=f"m{i}",
                    type="page" if i else "track",
                    name=None if i else "content_download",
                    lead_id=ids["own"],
                    properties={"asset": "<b>guide</b>"} if not i else {},
                    context={},
                    page_url=f"/pricing?i={i}",
                    channel="email",
                    occurred_at=NOW - timedelta(days=i),
                    received_at=NOW,
                )
            )
    for role in ROLES:
        user_service.create_user(
            engine,
            email=f"{role}@example.com",
            password=PASSWORD,
            role=role,
            name=f"{role.title()} User",
            sales_rep_key="Rep One" if role == "sales" else None,
            now=NOW,
        )
    return ids


def csrf_from(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "page has no CSRF field"
    return found.group(1)


def sign_in(client, email: str, password: str = PASSWORD, next_url: str = ""):
    page = client.get("/login")
    return client.post(
        "/login",
        data={
            "email": email,
            "password": password,
            "csrf_token": csrf_from(page.text),
            "next": next_url,
        },
        follow_redirects=False,
    )


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    """Argon2 with small parameters: the same code path, a fraction of the cost."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def plant(client, value: str | None) -> None:
    """Replace the session cookie in the test client's jar (None removes it)."""
    for cookie in list(client.cookies.jar):
        if cookie.name == "lf_session":
            client.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
    if value is not None:
        client.cookies.set("lf_session", value, domain="testserver.local")


@pytest.fixture
def world(services):
    return seed(services.engine)


def test_signed_out_visitor_is_sent_to_login_with_next(client, world):
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 303 and root.headers["location"] == "/login"
    page = client.get("/leads?q=ada", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/leads%3Fq%3Dada"


def test_sign_in_opens_the_next_page_with_a_hardened_cookie(client, world):
    response = sign_in(client, "ADMIN@example.com", next_url="/accounts")
    assert response.status_code == 303
    assert response.headers["location"] == "/accounts"
    cookie = response.headers["set-cookie"]
    assert "lf_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert client.get("/accounts").status_code == 200


def test_wrong_password_is_refused_and_no_session_is_made(client, services, world):
    response = sign_in(client, "admin@example.com", password="wrong password!!")
    assert response.status_code == 401
    assert "do not match" in response.text
    assert "lf_session" not in response.cookies
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(web_sessions)).scalar_one() == 0
    unknown = sign_in(client, "nobody@example.com")
    assert unknown.status_code == 401


def test_repeated_failed_sign_ins_are_throttled_per_address(client, services, world):
    for _ in range(5):
        assert sign_in(client, "admin@example.com", password="wrong password!!").status_code == 401
    # The sixth try is refused before the password is even checked, right or wrong.
    throttled = sign_in(client, "Admin@Example.com")
    assert throttled.status_code == 429
    assert "Too many failed sign-ins" in throttled.text
    assert int(throttled.headers["retry-after"]) > 0
    assert "lf_session" not in throttled.cookies
    # Another person signing in from the same place is not locked out by it.
    assert sign_in(client, "marketer@example.com").status_code == 303
    client.cookies.clear()
    # Once the window has passed, the right password works again.
    later = services.clock() + timedelta(minutes=16)
    services.clock = lambda: later
    assert sign_in(client, "admin@example.com").status_code == 303


def test_deactivated_user_cannot_sign_in_and_loses_open_sessions(client, services, world):
    assert sign_in(client, "marketer@example.com").status_code == 303
    marketer = next(u for u in user_service.list_users(services.engine) if u.role == "marketer")
    user_service.set_active(services.engine, marketer.id, False)
    assert client.get("/leads", follow_redirects=False).status_code == 303
    assert sign_in(client, "marketer@example.com").status_code == 401


def test_sign_in_without_the_form_token_is_refused(client, world):
    client.get("/login")
    response = client.post(
        "/login",
        data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "lf_session" not in response.cookies


def test_post_without_csrf_token_is_refused_and_changes_nothing(client, services, world):
    sign_in(client, "admin@example.com")
    before = _key_count(services)
    no_token = client.post("/settings/keys", data={"name": "x", "kind": "write"})
    wrong_header = client.post(
        "/settings/keys", data={"name": "x", "kind": "write"}, headers={"X-CSRF-Token": "nope"}
    )
    assert no_token.status_code == 403 and wrong_header.status_code == 403
    assert _key_count(services) == before
    token = csrf_from(client.get("/settings/keys").text)
    via_header = client.post(
        "/settings/keys", data={"name": "htmx", "kind": "write"}, headers={"X-CSRF-Token": token}
    )
    assert via_header.status_code == 200
    assert _key_count(services) == before + 1


def _key_count(services) -> int:
    with services.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(api_keys)).scalar_one()


def test_key_created_on_the_keys_page_works_for_tracking(client, world):
    sign_in(client, "admin@example.com")
    token = csrf_from(client.get("/settings/keys").text)
    page = client.post(
        "/settings/keys", data={"name": "site", "kind": "write", "csrf_token": token}
    )
    key = re.search(r'id="new-key">([^<]+)<', page.text).group(1)
    tracked = client.post("/v1/track", json={"userId": "u1", "event": "x"}, auth=(key, ""))
    assert tracked.status_code == 200


PAGES = ["/home", "/leads", "/accounts", "/settings/keys", "/settings/users"]
ALLOWED = {
    "admin": set(PAGES),
    "marketer": {"/home", "/leads", "/accounts"},
    "sales": {"/home", "/leads", "/accounts"},
    "executive": {"/home", "/accounts"},
}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_opens_its_pages_and_gets_403_elsewhere(client, world, role):
    sign_in(client, f"{role}@example.com")
    for path in PAGES:
        status = client.get(path).status_code
        assert status == (200 if path in ALLOWED[role] else 403), (role, path, status)
    nav = client.get("/home").text
    for path in PAGES:
        assert (f'href="{path}"' in nav) == (path in ALLOWED[role]), (role, path)


def test_sales_rep_sees_only_own_leads_and_gets_403_on_another_reps_lead(client, world):
    sign_in(client, "sales@example.com")
    assert client.get(f"/leads/{world['own']}").status_code == 200
    forbidden = client.get(f"/leads/{world['other']}")
    assert forbidden.status_code == 403
    assert "Hopper" not in forbidden.text
    listing = client.get("/leads").text
    assert "ada@acme.example" in listing and "grace@globex.example" not in listing
    assert client.get(f"/accounts/{world['globex']}").status_code == 403
    assert client.get("/leads/999999").status_code == 404


def test_marketer_opens_any_lead_with_timeline_and_committee(client, world):
    sign_in(client, "marketer@example.com")
    page = client.get(f"/leads/{world['own']}")
    assert page.status_code == 200
    assert "/pricing?i=1" in page.text  # timeline
    assert f'href="/leads/{world["own2"]}"' in page.text  # buying committee
    assert "&lt;b&gt;guide&lt;/b&gt;" in page.text


def test_script_in_a_lead_name_is_rendered_as_text(client, world):
    sign_in(client, "admin@example.com")
    for path in (f"/leads/{world['own2']}", "/leads", f"/leads/{world['own']}"):
        html = client.get(path).text
        assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/leads").text


def test_logout_ends_the_session_on_the_server(client, world):
    sign_in(client, "admin@example.com")
    stolen = client.cookies.get("lf_session")
    token = csrf_from(client.get("/home").text)
    assert (
        client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code
        == 303
    )
    plant(client, stolen)
    assert client.get("/home", follow_redirects=False).status_code == 303


def test_sign_in_issues_a_new_session_instead_of_a_planted_one(client, services, world):
    plant(client, "attacker-chosen-value.0123456789abcdef")
    sign_in(client, "admin@example.com")
    assert client.cookies.get("lf_session") != "attacker-chosen-value.0123456789abcdef"
    # Signing in over an existing session replaces it (and deletes the old one).
    first = client.cookies.get("lf_session")
    plant(client, None)
    login_page = client.get("/login")
    plant(client, first)
    client.post(
        "/login",
        data={
            "email": "executive@example.com",
            "password": PASSWORD,
            "csrf_token": csrf_from(login_page.text),
        },
    )
    second = client.cookies.get("lf_session")
    assert second != first
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(web_sessions)).scalar_one() == 1
    plant(client, first)
    assert client.get("/home", follow_redirects=False).status_code == 303


def test_tampered_session_cookie_is_ignored(client, world):
    sign_in(client, "admin@example.com")
    value = client.cookies.get("lf_session")
    token, _, mac = value.rpartition(".")
    plant(client, token + "." + ("0" * len(mac)))
    assert client.get("/home", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "/%0d%0aLocation:x",
        "\t//evil.example",
    ],
)
def test_next_parameter_never_leaves_the_site(client, world, target):
    response = sign_in(client, "admin@example.com", next_url=target)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/") and not location.startswith("//")
    assert "evil" not in location or location.startswith("/%")


def test_safe_next_keeps_local_paths():
    assert safe_next("/leads?q=x") == "/leads?q=x"
    assert safe_next("https://evil.example") == "/home"
    assert safe_next("/login?next=//evil") == "/home"


def test_security_headers_on_dashboard_pages(client, world):
    response = client.get("/login")
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "same-origin"


def test_language_switch_is_stored_on_the_user(client, services, world):
    sign_in(client, "marketer@example.com")
    token = csrf_from(client.get("/leads").text)
    switched = client.post(
        "/locale",
        data={"locale": "ko", "next": "/leads", "csrf_token": token},
        follow_redirects=False,
    )
    assert switched.headers["location"] == "/leads"
    page = client.get("/leads").text
    assert 'lang="ko"' in page and KO["leads.subtitle"] in page
    user = next(u for u in user_service.list_users(services.engine) if u.role == "marketer")
    assert user.locale == "ko"


def test_time_zone_is_chosen_per_user_and_applied_to_dates(client, services, world):
    sign_in(client, "marketer@example.com")
    lead_id = world["own"]
    before = client.get(f"/leads/{lead_id}").text
    assert "12:00" in before  # created at NOW, 12:00 UTC
    token = csrf_from(before)
    switched = client.post(
        "/timezone",
        data={"timezone": "Asia/Seoul", "next": f"/leads/{lead_id}", "csrf_token": token},
        follow_redirects=False,
    )
    assert switched.status_code == 303
    after = client.get(f"/leads/{lead_id}").text
    assert "21:00" in after and 'value="Asia/Seoul" selected' in after
    user = next(u for u in user_service.list_users(services.engine) if u.role == "marketer")
    assert user.timezone == "Asia/Seoul"
    # Hostile or unknown zones are refused, the stored one stays.
    for bad in ("Mars/Olympus", "../../etc/passwd", "<script>"):
        r = client.post(
            "/timezone", data={"timezone": bad, "csrf_token": token}, follow_redirects=False
        )
        assert r.status_code == 400 and "timezone" in r.text
        assert "<script>" not in r.text
    user = next(u for u in user_service.list_users(services.engine) if u.role == "marketer")
    assert user.timezone == "Asia/Seoul"
    # Without the CSRF token nothing changes.
    r = client.post("/timezone", data={"timezone": "UTC"}, follow_redirects=False)
    assert r.status_code == 403


def test_users_cli_refuses_an_unknown_time_zone(db_url, capsys):
    code = run_guarded(
        cli_app,
        [
            "users",
            "create",
            "tz@example.com",
            "--role",
            "marketer",
            "--password",
            "correct horse battery",
            "--timezone",
            "Nowhere/Town",
            "--database-url",
            db_url,
        ],
    )
    assert code == 1 and "timezone" in capsys.readouterr().err


def test_leads_list_pages_by_cursor_without_gaps_or_repeats(client, services, world):
    with services.engine.begin() as conn:
        for i in range(120):
            conn.execute(
                leads.insert().values(
                    email=f"bulk{i}@bulk.example",
                    first_name="Bulk",
                    last_name=f"N{i}",
                    consent_status="unknown",
                    attributes={},
                    source="import",
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    sign_in(client, "admin@example.com")
    seen: list[str] = []
    url = "/leads?source=import"
    while url:
        html = client.get(url).text
        seen += re.findall(r"bulk\d+@bulk\.example", html)
        nxt = re.search(r'rel="next" href="([^"]+)"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else ""
    assert len(seen) == 120 and len(set(seen)) == 120
    searched = client.get("/leads?q=grace").text
    assert "grace@globex.example" in searched and "ada@acme.example" not in searched
    by_company = client.get("/leads?q=acm").text
    assert "ada@acme.example" in by_company and "grace@globex.example" not in by_company


def test_catalogues_have_the_same_keys_and_korean_stage_names():
    assert set(EN) == set(KO)
    assert KO["stage.lead_acquired"] == "리드획득" and KO["stage.nurturing"] == "리드 육성"


def test_production_refuses_a_placeholder_secret():
    with pytest.raises(ValueError, match="LEADFLOW_SECRET_KEY"):
        Settings(env="production", secret_key="changethis")
    assert Settings(env="production", secret_key="k" * 40).secret_key == "k" * 40


def test_users_cli_creates_and_refuses_duplicates(db_url, capsys):
    args = [
        "users",
        "create",
        "New@Example.com",
        "--role",
        "sales",
        "--password",
        "long enough pw",
        "--database-url",
        db_url,
    ]
    assert run_guarded(cli_app, args) == 0
    assert run_guarded(cli_app, args) == 1
    assert "already exists" in capsys.readouterr().err
    bad = [
        "users",
        "create",
        "x@example.com",
        "--role",
        "boss",
        "--password",
        "long enough pw",
        "--database-url",
        db_url,
    ]
    assert run_guarded(cli_app, bad) == 1


def test_session_cookies_survive_a_key_rotation_for_its_window_only(client, services, world):
    """Cookies are signed with the signing key too (issue 12): after `leadflow secret
    rotate` a signed-in user stays signed in for the grace window, then signs in again."""
    from leadflow.services import signing

    now = [datetime.now(UTC)]
    services.clock = lambda: now[0]
    assert sign_in(client, "admin@example.com").status_code == 303
    assert client.get("/home", follow_redirects=False).status_code == 200
    rotated = signing.rotate(services.engine, now[0], timedelta(hours=2))
    assert rotated.current != rotated.previous
    services.signing.keys(refresh=True)  # as every process does within seconds
    now[0] += timedelta(hours=1)
    assert client.get("/home", follow_redirects=False).status_code == 200
    now[0] += timedelta(hours=1)
    assert client.get("/home", follow_redirects=False).status_code == 303
    # Signing in again issues a cookie under the new key.
    assert sign_in(client, "admin@example.com").status_code == 303
    assert client.get("/home", follow_redirects=False).status_code == 200
