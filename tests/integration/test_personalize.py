"""GET /v1/personalize: content for the visitor's stage and industry (seed 004), through
the FastAPI app and through the real server's fast path, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from leadflow.bootstrap import Services
from leadflow.entrypoints.asgi import build_server_app


def identify(client: Any, key: str, anon: str, email: str, industry: str | None) -> None:
    company: dict[str, Any] = {"name": f"{email.split('@')[1]} Inc"}
    if industry:
        company["industry"] = industry
    r = client.post(
        "/v1/identify",
        json={
            "anonymousId": anon,
            "userId": f"user-{anon}",
            "traits": {"email": email, "first_name": "A", "company": company, "consent": True},
        },
        auth=(key, ""),
    )
    assert r.status_code == 200, r.text


def track(client: Any, key: str, anon: str, event: str, **props: Any) -> None:
    r = client.post(
        "/v1/track",
        json={"anonymousId": anon, "event": event, "properties": props},
        auth=(key, ""),
    )
    assert r.status_code == 200, r.text


def personalize(client: Any, key: str | None, **params: str) -> Any:
    return client.get("/v1/personalize", params=params, auth=(key, "") if key is not None else None)


def keys(body: dict[str, Any]) -> list[str]:
    return [r["key"] for r in body["recommendations"]]


def test_write_key_is_required(client: Any, admin_token: str) -> None:
    r = personalize(client, None, anonymousId="a")
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "*"
    assert personalize(client, "wrong", anonymousId="a").status_code == 401
    assert personalize(client, admin_token, anonymousId="a").status_code == 401


def test_unknown_visitor_gets_early_open_content(client: Any, write_key: str) -> None:
    r = personalize(client, write_key, anonymousId="nobody")
    assert r.status_code == 200
    body = r.json()
    assert (body["stage"], body["evaluation_stage"], body["industry"]) == (
        "anonymous",
        "early",
        None,
    )
    assert set(keys(body)[:4]) == {
        "what-is-mql",
        "lead-scoring-101",
        "bant-checklist",
        "email-nurture-tips",
    }
    assert set(body["recommendations"][0]) == {"key", "title", "type", "url", "gated"}
    assert r.headers["access-control-allow-origin"] == "*"
    # writeKey as a query parameter works too (a website's JS), and the industry hint.
    r = client.get(
        "/v1/personalize",
        params={"anonymousId": "nobody", "writeKey": write_key, "industry": "Retail"},
    )
    assert r.status_code == 200 and r.json()["industry"] == "Retail"
    assert client.get("/v1/personalize", params={"writeKey": write_key}).status_code == 200


def test_financial_and_logistics_visitors_get_different_case_studies(
    client: Any, services: Services, write_key: str
) -> None:
    identify(client, write_key, "fin-anon", "cfo@bank.example", "Financial Services")
    identify(client, write_key, "log-anon", "ops@trucks.example", "Transport & Logistics")
    for anon in ("fin-anon", "log-anon"):
        track(client, write_key, anon, "email_click")  # acquired -> nurturing
    fin = personalize(client, write_key, anonymousId="fin-anon").json()
    log = personalize(client, write_key, userId="user-log-anon").json()
    assert (fin["stage"], fin["evaluation_stage"]) == ("nurturing", "middle")
    assert fin["industry"] == "Financial Services"
    assert log["industry"] == "Transport & Logistics"
    assert keys(fin)[0] == "case-finance" and keys(log)[0] == "case-logistics"
    assert "case-logistics" not in keys(fin) and "case-finance" not in keys(log)
    # A lead's own industry wins over a hint.
    hinted = personalize(client, write_key, anonymousId="fin-anon", industry="Retail").json()
    assert hinted["industry"] == "Financial Services"
    # What was consumed is not recommended again.
    track(
        client,
        write_key,
        "fin-anon",
        "content_download",
        asset_key="case-finance",
        asset_type="case_study",
    )
    again = personalize(client, write_key, anonymousId="fin-anon").json()
    assert "case-finance" not in keys(again)
    # Nothing about the person leaks: only these keys.
    assert set(again) == {"stage", "evaluation_stage", "industry", "recommendations"}


def test_an_unknown_visitor_with_an_industry_hint(client: Any, write_key: str) -> None:
    body = personalize(client, write_key, anonymousId="anon-z", industry="Manufacturing").json()
    assert body["stage"] == "anonymous" and body["industry"] == "Manufacturing"
    assert [r["type"] for r in body["recommendations"][:4]] == ["blog_post"] * 4
    # Only four early assets: the fifth comes from the next stage, for the hinted industry.
    assert keys(body)[4] == "case-manufacturing"


@pytest.mark.parametrize(
    "params",
    [
        {"anonymousId": "x" * 300},
        {"userId": "a\x00b"},
        {"limit": "0"},
        {"limit": "abc"},
        {"limit": "21"},
    ],
)
def test_bad_parameters(client: Any, write_key: str, params: dict[str, str]) -> None:
    r = personalize(client, write_key, **params)
    assert r.status_code == 400 and "detail" in r.json()


def test_hostile_ids_are_just_unknown(client: Any, write_key: str) -> None:
    for value in ("' OR 1=1 --", "<script>alert(1)</script>", "%00", "../../etc/passwd"):
        r = personalize(client, write_key, anonymousId=value, userId=value, industry=value)
        assert r.status_code == 200
        assert r.json()["stage"] == "anonymous"


def test_cors_preflight(client: Any) -> None:
    r = client.options(
        "/v1/personalize",
        headers={
            "Origin": "https://acme.test",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert "Authorization" in r.headers["access-control-allow-headers"]


def test_through_the_real_servers_fast_path(services: Services, write_key: str) -> None:
    with TestClient(build_server_app(services)) as server:
        identify(server, write_key, "fp-anon", "cfo@bank.example", "Financial Services")
        track(server, write_key, "fp-anon", "email_click")
        r = personalize(server, write_key, anonymousId="fp-anon")
        assert r.status_code == 200, r.text
        assert keys(r.json())[0] == "case-finance"
        assert server.options("/v1/personalize").status_code == 204
        # Forms are reached through the server too.
        assert server.get("/f/white-paper").status_code == 200
