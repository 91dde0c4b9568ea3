"""Hosted forms through the real FastAPI app, on SQLite and PostgreSQL: progressive
profiling, consent records, identity stitching, gated assets, hostile input."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update

from leadflow.adapters.db.tables import accounts, events, form_submissions, leads
from leadflow.bootstrap import Services
from leadflow.core.config import load_model
from leadflow.services.lifecycle import default_source, install_model

TOKEN_RE = re.compile(r'name="lf_token" value="([^"]+)"')
ANON_RE = re.compile(r'name="anonymous_id" value="([^"]+)"')
INPUT_RE = re.compile(r'<(?:input|select|textarea) id="lf-([a-z_]+)"')


def shown_fields(html: str) -> list[str]:
    return INPUT_RE.findall(html)


def page_view(client: Any, write_key: str, anonymous_id: str, path: str) -> None:
    r = client.post(
        "/v1/page",
        json={"anonymousId": anonymous_id, "properties": {"url": f"https://acme.test{path}"}},
        auth=(write_key, ""),
    )
    assert r.status_code == 200, r.text


def open_form(client: Any, form: str, **params: str) -> tuple[str, str, str]:
    r = client.get(f"/f/{form}", params=params)
    assert r.status_code == 200, r.text
    token = TOKEN_RE.search(r.text)
    anon = ANON_RE.search(r.text)
    assert token and anon
    return r.text, token.group(1), anon.group(1)


def submit(client: Any, form: str, data: dict[str, str], **kwargs: Any) -> Any:
    return client.post(f"/f/{form}", data=data, follow_redirects=False, **kwargs)


def lead_by_email(services: Services, email: str) -> dict[str, Any]:
    with services.engine.connect() as conn:
        row = conn.execute(select(leads).where(leads.c.email == email)).mappings().one()
    return dict(row)


def rows(services: Services, table: Any, *where: Any) -> list[dict[str, Any]]:
    with services.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).where(*where)).mappings()]


WHITE_PAPER = {
    "email": "Minji.Kim@Hanbit.co.kr",
    "first_name": "Minji",
    "last_name": "Kim",
    "company": "Hanbit Logistics",
    "title": "CMO",
    "consent": "on",
}


def test_unknown_visitor_sees_the_form_in_english_or_korean(client: Any) -> None:
    html, _token, anon = open_form(client, "white-paper", anonymousId="anon-new")
    assert "<title>Download the white paper</title>" in html
    assert shown_fields(html) == ["email", "first_name", "last_name", "company", "title"]
    assert "I agree to receive marketing email from AcmeCloud" in html
    assert 'name="lf_website"' in html  # the honeypot
    assert anon == "anon-new"
    assert "/static/css/forms.css" in html and "https://" not in html.split("<body")[0]
    ko = client.get("/f/white-paper", params={"lang": "ko"})
    assert "백서 다운로드" in ko.text and "회사 이메일" in ko.text and 'lang="ko"' in ko.text
    by_header = client.get("/f/white-paper", headers={"Accept-Language": "ko-KR,ko;q=0.9"})
    assert "백서 다운로드" in by_header.text
    css = client.get("/static/css/forms.css")
    assert css.status_code == 200 and ".lf-card" in css.text


def test_unknown_form_is_404(client: Any) -> None:
    assert client.get("/f/nope").status_code == 404
    assert client.post("/f/nope", data={"email": "a@b.co"}).status_code == 404
    assert client.get("/f/nope/embed.js").status_code == 404
    assert client.get("/f/<script>").status_code == 404


def test_submission_creates_the_lead_records_consent_and_joins_anonymous_history(
    client: Any, services: Services, write_key: str
) -> None:
    page_view(client, write_key, "anon-1", "/blog/what-is-mql")
    _html, token, anon = open_form(client, "white-paper", anonymousId="anon-1")
    r = submit(
        client,
        "white-paper",
        {
            **WHITE_PAPER,
            "lf_token": token,
            "anonymous_id": anon,
            "lang": "en",
            "page_url": "https://acme.test/whitepapers",
        },
        headers={"User-Agent": "pytest-browser"},
    )
    assert r.status_code == 200, r.text
    assert "Thank you, Minji!" in r.text
    assert 'href="/whitepapers/b2b-lead-management"' in r.text
    lead = lead_by_email(services, "minji.kim@hanbit.co.kr")
    assert (lead["first_name"], lead["last_name"], lead["title"]) == ("Minji", "Kim", "CMO")
    assert lead["consent_status"] == "granted"
    assert lead["consent_method"] == "form:white-paper"
    assert lead["consent_at"] is not None
    account = rows(services, accounts, accounts.c.id == lead["account_id"])[0]
    assert account["name"] == "Hanbit Logistics"
    # The anonymous page view before the form now belongs to the lead.
    history = rows(services, events, events.c.anonymous_id == "anon-1")
    assert {e["lead_id"] for e in history} == {lead["id"]}
    by_name = {(e["type"], e["name"]): e for e in history}
    assert ("page", None) in by_name
    assert by_name[("track", "form_submit")]["properties"]["form"] == "white-paper"
    download = by_name[("track", "content_download")]["properties"]
    assert download["asset_key"] == "b2b-lead-management"
    assert download["asset_type"] == "white_paper"
    [sub] = rows(services, form_submissions)
    assert sub["lead_id"] == lead["id"] and sub["form_key"] == "white-paper"
    assert sub["asset_key"] == "b2b-lead-management"
    assert sub["anonymous_id"] == "anon-1"
    assert sub["page_url"] == "https://acme.test/whitepapers"
    assert sub["ip"] and sub["user_agent"] == "pytest-browser"
    assert sub["fields"]["email"] == "minji.kim@hanbit.co.kr"
    consent = sub["consent"]
    assert consent["granted"] is True and consent["lang"] == "en"
    assert consent["text"].startswith("I agree to receive marketing email")
    assert consent["page_url"] == "https://acme.test/whitepapers" and consent["at"]


def test_progressive_profiling_asks_only_what_is_unknown(client: Any, services: Services) -> None:
    _, token, anon = open_form(client, "white-paper", anonymousId="anon-2")
    assert (
        submit(
            client, "white-paper", {**WHITE_PAPER, "lf_token": token, "anonymous_id": anon}
        ).status_code
        == 200
    )
    html, token, anon = open_form(client, "white-paper", anonymousId="anon-2")
    assert shown_fields(html) == ["phone", "industry"]  # known fields are hidden
    assert "Minji" not in html and "hanbit" not in html.lower()  # nothing known is shown
    r = submit(
        client,
        "white-paper",
        {
            "phone": "+82 10-1234-5678",
            "industry": "Transport & Logistics",
            "consent": "on",
            "lf_token": token,
            "anonymous_id": anon,
        },
    )
    assert r.status_code == 200, r.text
    lead = lead_by_email(services, "minji.kim@hanbit.co.kr")
    assert lead["phone"] == "+82 10-1234-5678"
    account = rows(services, accounts, accounts.c.id == lead["account_id"])[0]
    assert account["industry"] == "Transport & Logistics"
    assert len(rows(services, form_submissions)) == 2
    html, _, _ = open_form(client, "white-paper", anonymousId="anon-2")
    assert shown_fields(html) == []  # everything known: only the consent box and the button
    # A different visitor still gets the full form.
    html, _, _ = open_form(client, "white-paper", anonymousId="anon-other")
    assert shown_fields(html)[0] == "email"


def test_known_contact_goes_straight_to_late_stage_content(client: Any, services: Services) -> None:
    html, token, anon = open_form(client, "demo-video", anonymousId="anon-3")
    assert shown_fields(html) == ["email", "first_name", "company"]
    r = submit(
        client,
        "demo-video",
        {
            "email": "lee@corp.example",
            "first_name": "Lee",
            "company": "Corp",
            "lf_token": token,
            "anonymous_id": anon,
        },
    )
    assert r.status_code == 200 and "/product/demo-video" in r.text
    lead = lead_by_email(services, "lee@corp.example")
    assert lead["consent_status"] == "unknown"  # the box was not ticked: nothing assumed
    for _ in range(2):  # a reload counts once
        r = client.get("/f/demo-video", params={"anonymousId": "anon-3"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/product/demo-video"
    downloads = rows(services, events, events.c.name == "content_download")
    assert len(downloads) == 2  # the form submission's, and one direct
    assert {d["lead_id"] for d in downloads} == {lead["id"]}
    # The e-mail hint does not make a visitor known (anyone can type an address).
    r = client.get(
        "/f/demo-video",
        params={"email": "lee@corp.example", "anonymousId": "anon-x"},
        follow_redirects=False,
    )
    assert r.status_code == 200 and shown_fields(r.text) == ["email", "first_name", "company"]
    assert 'value="lee@corp.example"' in r.text
    # Middle-stage content still asks a known contact (for what is not known yet).
    html, _, _ = open_form(client, "white-paper", anonymousId="anon-3")
    assert shown_fields(html) == ["last_name", "title"]


def test_the_analytics_js_cookie_identifies_the_visitor(client: Any, services: Services) -> None:
    _, token, anon = open_form(client, "demo-video", anonymousId="cookie-anon")
    submit(
        client,
        "demo-video",
        {
            "email": "c@corp.example",
            "first_name": "C",
            "company": "Co",
            "lf_token": token,
            "anonymous_id": anon,
        },
    )
    client.cookies.set("ajs_anonymous_id", "%22cookie-anon%22")
    try:
        r = client.get("/f/demo-video", follow_redirects=False)
    finally:
        client.cookies.clear()
    assert r.status_code == 303


def test_field_level_errors_rerender_the_form_or_return_json(
    client: Any, services: Services
) -> None:
    _, token, anon = open_form(client, "white-paper", anonymousId="anon-4")
    r = submit(
        client,
        "white-paper",
        {
            "email": "not-an-email",
            "first_name": "",
            "company": "X" * 300,
            "lf_token": token,
            "anonymous_id": anon,
        },
    )
    assert r.status_code == 400
    assert "is not a valid email address" in r.text
    assert r.text.count("is required") == 1  # first_name
    assert "is too long" in r.text
    assert 'value="not-an-email"' in r.text  # what was typed is kept
    assert 'aria-invalid="true"' in r.text
    ko = submit(
        client, "white-paper", {"email": "x", "lang": "ko", "lf_token": token, "anonymous_id": anon}
    )
    assert ko.status_code == 400 and "올바른 이메일 주소가 아닙니다" in ko.text
    j = client.post("/f/white-paper", json={"email": "bad", "anonymousId": "anon-4"})
    assert j.status_code == 400
    body = j.json()
    assert body["errors"] == {
        "email": "is not a valid email address",
        "first_name": "is required",
        "company": "is required",
    }
    assert "email: is not a valid email address" in body["detail"]
    assert j.headers["access-control-allow-origin"] == "*"
    assert rows(services, form_submissions) == []
    assert rows(services, leads) == []


def test_json_submission(client: Any, services: Services) -> None:
    r = client.post(
        "/f/white-paper",
        json={**WHITE_PAPER, "consent": True, "anonymousId": "anon-json", "lang": "ko"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "success": True,
        "asset": {
            "key": "b2b-lead-management",
            "title": "B2B 리드 관리 백서",
            "type": "white_paper",
            "url": "/whitepapers/b2b-lead-management",
        },
        "redirect": None,
    }
    [sub] = rows(services, form_submissions)
    assert sub["consent"]["text"].startswith("AcmeCloud의 마케팅 이메일")
    assert lead_by_email(services, "minji.kim@hanbit.co.kr")["consent_status"] == "granted"
    # The same address again updates the same lead.
    r = client.post(
        "/f/white-paper",
        json={**WHITE_PAPER, "title": "CEO", "anonymousId": "anon-json-2"},
    )
    assert r.status_code == 200
    assert len(rows(services, leads)) == 1
    assert lead_by_email(services, "minji.kim@hanbit.co.kr")["title"] == "CEO"
    sql = "'; DROP TABLE leads; --"
    r = client.post(
        "/f/white-paper", json={**WHITE_PAPER, "title": sql, "anonymousId": "anon-json-3"}
    )
    assert r.status_code == 200
    assert lead_by_email(services, "minji.kim@hanbit.co.kr")["title"] == sql


def test_a_fresh_opt_in_on_a_form_resubscribes_but_an_unticked_box_does_not(
    client: Any, services: Services
) -> None:
    email = "minji.kim@hanbit.co.kr"
    unticked = {k: v for k, v in WHITE_PAPER.items() if k != "consent"}
    assert client.post("/f/white-paper", json={**unticked, "anonymousId": "a1"}).status_code == 200
    lead_id = lead_by_email(services, email)["id"]
    with services.engine.begin() as conn:
        conn.execute(
            update(leads).where(leads.c.id == lead_id).values(unsubscribed_at=datetime.now(UTC))
        )
    # Submitting again without ticking consent leaves the unsubscribe in place...
    assert client.post("/f/white-paper", json={**unticked, "anonymousId": "a2"}).status_code == 200
    assert lead_by_email(services, email)["unsubscribed_at"] is not None
    # ...an explicit opt-in on the form re-subscribes.
    r = client.post("/f/white-paper", json={**unticked, "consent": True, "anonymousId": "a3"})
    assert r.status_code == 200
    assert lead_by_email(services, email)["unsubscribed_at"] is None


def test_script_in_a_name_is_stored_as_text_and_rendered_escaped(
    client: Any, services: Services
) -> None:
    evil = "<script>alert(1)</script>"
    _, token, anon = open_form(client, "white-paper", anonymousId="anon-5")
    r = submit(
        client,
        "white-paper",
        {
            **WHITE_PAPER,
            "first_name": evil,
            "title": '"><img src=x onerror=alert(1)>',
            "lf_token": token,
            "anonymous_id": anon,
        },
    )
    assert r.status_code == 200
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert lead_by_email(services, "minji.kim@hanbit.co.kr")["first_name"] == evil
    # Re-rendered after an error: escaped too.
    _, token, anon = open_form(client, "white-paper", anonymousId="anon-6")
    r = submit(
        client,
        "white-paper",
        {
            "email": "bad",
            "first_name": evil,
            "company": '"><script>x()</script>',
            "lf_token": token,
            "anonymous_id": anon,
        },
    )
    assert r.status_code == 400
    assert "<script>" not in r.text.replace("<script src", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    # Hints in the URL are escaped as well.
    r = client.get("/f/white-paper", params={"email": '"><script>alert(1)</script>'})
    assert "<script>alert(1)" not in r.text


def test_csrf_token_is_required_signed_and_bound_to_the_visitor(
    client: Any, services: Services
) -> None:
    _, token, anon = open_form(client, "white-paper", anonymousId="victim-anon")
    base = {**WHITE_PAPER, "anonymous_id": anon}
    for bad in (
        None,
        "",
        "123.abc",
        token[:-1] + ("0" if token[-1] != "0" else "1"),
        "9999999999." + token.split(".")[1],
        "0." + token.split(".")[1],
    ):
        data = dict(base)
        if bad is not None:
            data["lf_token"] = bad
        r = submit(client, "white-paper", data)
        assert r.status_code == 400
        assert "This form has expired" in r.text
        assert 'value="Minji"' in r.text  # what was typed is kept for the retry
    # A token made for one visitor does not carry another visitor's anonymous id.
    _, attacker_token, _ = open_form(client, "white-paper", anonymousId="attacker-anon")
    r = submit(client, "white-paper", {**base, "lf_token": attacker_token})
    assert r.status_code == 400
    # A token of another form is refused as well.
    _, demo_token, _ = open_form(client, "demo-video", anonymousId="victim-anon")
    assert submit(client, "white-paper", {**base, "lf_token": demo_token}).status_code == 400
    j = client.post(
        "/f/white-paper",
        data={**base, "lf_token": "x"},
        headers={"Accept": "application/json"},
    )
    assert j.status_code == 400 and "lf_token" in j.json()["errors"]
    assert rows(services, form_submissions) == [] and rows(services, leads) == []


def test_honeypot_looks_like_success_but_stores_nothing(client: Any, services: Services) -> None:
    _, token, anon = open_form(client, "white-paper", anonymousId="bot")
    r = submit(
        client,
        "white-paper",
        {
            **WHITE_PAPER,
            "lf_token": token,
            "anonymous_id": anon,
            "lf_website": "http://spam.example",
        },
    )
    assert r.status_code == 200 and "Thank you" in r.text
    assert "/whitepapers/" not in r.text
    r = client.post("/f/white-paper", json={**WHITE_PAPER, "lf_website": "x"})
    assert r.status_code == 200 and r.json()["asset"] is None
    assert rows(services, form_submissions) == [] and rows(services, leads) == []


def test_oversized_and_unsupported_bodies(client: Any, services: Services) -> None:
    big = "x" * (65 * 1024)
    r = client.post("/f/white-paper", data={"email": "a@b.co", "message": big})
    assert r.status_code == 413
    r = client.post(
        "/f/white-paper",
        content=json.dumps({"a": big}),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = client.post("/f/white-paper", files={"f": ("a.txt", b"x")})
    assert r.status_code == 415
    r = client.post(
        "/f/white-paper", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]
    r = client.post("/f/white-paper", json=["a"])
    assert r.status_code == 400
    r = client.post(
        "/f/white-paper",
        content=b"email=%ff%fe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert rows(services, form_submissions) == []


def _with_redirect(services: Services, redirect: str) -> None:
    data = yaml.safe_load(default_source())
    data["version"] = f"{data['version']}-redirect"
    data["nurture"]["forms"][0]["redirect"] = redirect
    source = yaml.safe_dump(data, allow_unicode=True)
    model = load_model(source)
    with services.engine.begin() as conn:
        install_model(conn, model, source, datetime.now(UTC), activate=True)


def test_redirect_is_a_site_path_only(client: Any, services: Services) -> None:
    _with_redirect(services, "/thanks?from=form")
    _, token, anon = open_form(client, "white-paper", anonymousId="anon-r")
    r = submit(client, "white-paper", {**WHITE_PAPER, "lf_token": token, "anonymous_id": anon})
    assert r.status_code == 303 and r.headers["location"] == "/thanks?from=form"
    for evil in ("//evil.com", "https://evil.com", "/\\evil.com", "javascript:alert(1)"):
        with pytest.raises(ValueError):
            _with_redirect(services, evil)


def test_embed_script_and_config(client: Any, services: Services) -> None:
    js = client.get("/f/white-paper/embed.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("application/javascript")
    assert 'var FORM = "white-paper";' in js.text
    assert "innerHTML" not in js.text and "ajs_anonymous_id" in js.text
    cfg = client.get(
        "/f/white-paper/embed.json",
        params={"anonymousId": "anon-e", "lang": "ko", "pageUrl": "https://acme.test/x"},
    )
    assert cfg.status_code == 200
    assert cfg.headers["access-control-allow-origin"] == "*"
    body = cfg.json()
    assert body["skip"] is False and body["anonymousId"] == "anon-e"
    assert [f["name"] for f in body["fields"]] == [
        "email",
        "first_name",
        "last_name",
        "company",
        "title",
    ]
    assert body["title"] == "백서 다운로드"
    # The embed posts form-encoded with the token and reads JSON back (CORS).
    r = client.post(
        "/f/white-paper",
        data={**WHITE_PAPER, "lf_token": body["token"], "anonymous_id": "anon-e"},
        headers={"Accept": "application/json", "Origin": "https://acme.test"},
    )
    assert r.status_code == 200 and r.json()["success"] is True
    assert r.headers["access-control-allow-origin"] == "*"
    # A known contact asking for late content: no form.
    cfg = client.get("/f/demo-video/embed.json", params={"anonymousId": "anon-e"}).json()
    assert cfg == {
        "skip": True,
        "asset": {
            "key": "demo-video",
            "title": "Demo video",
            "type": "demo_video",
            "url": "/product/demo-video",
        },
    }
