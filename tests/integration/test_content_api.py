"""The content library through /api/content and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded

NEW = {
    "key": "roi-calculator",
    "title": "ROI calculator",
    "type": "trial",
    "stage": "late",
    "gated": True,
    "industries": ["Retail"],
    "url": "https://acme.test/roi",
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_admin_token_required(client: Any, write_key: str) -> None:
    assert client.get("/api/content").status_code == 401
    assert client.get("/api/content", headers=auth(write_key)).status_code == 401


def test_list_shows_the_models_assets_with_filters(client: Any, admin_token: str) -> None:
    r = client.get("/api/content", headers=auth(admin_token))
    assert r.status_code == 200
    assets = r.json()["assets"]
    assert len(assets) == 17 and {a["source"] for a in assets} == {"config"}

    def keys(**q: Any) -> set[str]:
        r = client.get("/api/content", params=q, headers=auth(admin_token))
        return {a["key"] for a in r.json()["assets"]}

    assert keys(stage="late") == {"demo-video", "pricing", "enterprise-pricing", "trial"}
    assert keys(type="case_study", industry="financial services") == {"case-finance"}
    suits_retail = keys(stage="middle", industry="Retail")
    assert "case-retail" in suits_retail and "webinars" in suits_retail
    assert "case-finance" not in suits_retail
    bad = client.get("/api/content", params={"stage": "soon"}, headers=auth(admin_token))
    assert bad.status_code == 422


def test_create_update_delete_an_api_asset(client: Any, admin_token: str) -> None:
    r = client.post("/api/content", json=NEW, headers=auth(admin_token))
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "api" and r.json()["industries"] == ["Retail"]
    assert client.post("/api/content", json=NEW, headers=auth(admin_token)).status_code == 409
    r = client.patch(
        "/api/content/roi-calculator",
        json={"stage": "middle", "url": "/tools/roi", "title": "ROI <b>calc</b>"},
        headers=auth(admin_token),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["stage"], r.json()["url"]) == ("middle", "/tools/roi")
    assert r.json()["title"] == "ROI <b>calc</b>"  # text; JSON is not HTML
    r = client.patch(
        "/api/content/roi-calculator",
        json={"url": "javascript:alert(1)"},
        headers=auth(admin_token),
    )
    assert r.status_code == 422 and "url" in json.dumps(r.json()["detail"])
    r = client.patch("/api/content/roi-calculator", json={"bogus": 1}, headers=auth(admin_token))
    assert r.status_code == 422
    r = client.patch(
        "/api/content/roi-calculator", json={"active": False}, headers=auth(admin_token)
    )
    assert r.json()["active"] is False
    listed = client.get("/api/content", headers=auth(admin_token)).json()["assets"]
    assert "roi-calculator" not in {a["key"] for a in listed}
    listed = client.get(
        "/api/content", params={"include_inactive": True}, headers=auth(admin_token)
    ).json()["assets"]
    assert "roi-calculator" in {a["key"] for a in listed}
    assert (
        client.delete("/api/content/roi-calculator", headers=auth(admin_token)).status_code == 204
    )
    assert client.get("/api/content/roi-calculator", headers=auth(admin_token)).status_code == 404
    assert (
        client.delete("/api/content/roi-calculator", headers=auth(admin_token)).status_code == 404
    )
    assert (
        client.patch(
            "/api/content/roi-calculator", json={"title": "x"}, headers=auth(admin_token)
        ).status_code
        == 404
    )


def test_config_assets_are_edited_in_leadflow_yaml(client: Any, admin_token: str) -> None:
    for r in (
        client.patch("/api/content/pricing", json={"title": "x"}, headers=auth(admin_token)),
        client.delete("/api/content/pricing", headers=auth(admin_token)),
        client.post("/api/content", json={**NEW, "key": "pricing"}, headers=auth(admin_token)),
    ):
        assert r.status_code == 409
        assert "leadflow.yaml" in r.json()["detail"]
    assert (
        client.get("/api/content/pricing", headers=auth(admin_token)).json()["title"] == "Pricing"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key": "Bad Key"}, "key"),
        ({"key": "../etc"}, "key"),
        ({"type": "podcast"}, "type"),
        ({"stage": "soon"}, "stage"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "JavaScript:alert(1)"}, "url"),
        ({"url": "data:text/html,<script>alert(1)</script>"}, "url"),
        ({"url": "//evil.com/x"}, "url"),
        ({"url": "/\\evil.com"}, "url"),
        ({"url": 'https://acme.test/"><script>'}, "url"),
        ({"title": ""}, "title"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_assets_are_refused(
    client: Any, admin_token: str, change: dict[str, Any], field: str
) -> None:
    r = client.post("/api/content", json={**NEW, **change}, headers=auth(admin_token))
    assert r.status_code == 422
    assert any(field in d["loc"] for d in r.json()["detail"])


def run(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = run_guarded(app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_content_commands(db_url: str, capsys: Any) -> None:
    db = ["--database-url", db_url]
    code, out, _ = run(capsys, "content", "list", "--stage", "late", "--format", "json", *db)
    assert code == 0
    assert {a["key"] for a in json.loads(out)} == {
        "demo-video",
        "pricing",
        "enterprise-pricing",
        "trial",
    }
    code, out, err = run(
        capsys,
        "content",
        "add",
        "=cmd-asset",
        "--title",
        "x",
        "--type",
        "trial",
        "--stage",
        "late",
        "--url",
        "/x",
        *db,
    )
    assert code == 1 and err.startswith("error: key:") and "Traceback" not in err
    code, out, err = run(
        capsys,
        "content",
        "add",
        "roi",
        "--title",
        '=HYPERLINK("http://evil")',
        "--type",
        "trial",
        "--stage",
        "late",
        "--url",
        "https://acme.test/roi",
        "--gated",
        "--industries",
        "Retail, Manufacturing",
        *db,
    )
    assert code == 0, err
    code, out, err = run(
        capsys,
        "content",
        "add",
        "bad",
        "--title",
        "x",
        "--type",
        "trial",
        "--stage",
        "late",
        "--url",
        "javascript:alert(1)",
        *db,
    )
    assert code == 1 and "url" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "content", "update", "roi", "--stage", "middle", *db)
    assert code == 0, err
    code, out, err = run(capsys, "content", "update", "pricing", "--title", "x", *db)
    assert code == 1 and "leadflow.yaml" in err
    code, out, err = run(capsys, "content", "update", "nope", "--title", "x", *db)
    assert code == 1 and "no content asset" in err
    code, out, _ = run(capsys, "content", "list", "--type", "trial", "--format", "csv", *db)
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    roi = next(r for r in table if r["key"] == "roi")
    assert roi["title"].startswith("'=HYPERLINK")  # formula-safe
    assert roi["stage"] == "middle" and roi["source"] == "api"
    code, out, _ = run(capsys, "content", "list", *db)
    assert code == 0 and "roi" in out
    assert run(capsys, "content", "remove", "roi", *db)[0] == 0
    code, _, err = run(capsys, "content", "remove", "pricing", *db)
    assert code == 1 and "leadflow.yaml" in err


def test_cli_forms_and_submissions(db_url: str, client: Any, capsys: Any) -> None:
    db = ["--database-url", db_url]
    code, out, _ = run(capsys, "forms", "list", "--format", "json", *db)
    assert code == 0
    assert [f["key"] for f in json.loads(out)] == ["white-paper", "demo-video"]
    r = client.post(
        "/f/white-paper",
        json={
            "email": "kim@hanbit.test",
            "first_name": "=1+2",
            "last_name": "@SUM(A1)",
            "company": "-Hanbit",
            "title": "<script>",
            "consent": True,
            "anonymousId": "cli-anon",
        },
    )
    assert r.status_code == 200, r.text
    code, out, _ = run(capsys, "forms", "submissions", "white-paper", "--format", "csv", *db)
    assert code == 0
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["first_name"] == "'=1+2" and row["last_name"] == "'@SUM(A1)"
    assert row["company"] == "'-Hanbit" and row["title"] == "<script>"
    assert row["email"] == "kim@hanbit.test" and row["consent"] == "True"
    assert row["asset_key"] == "b2b-lead-management"
    code, out, _ = run(capsys, "forms", "submissions", "white-paper", "--format", "json", *db)
    assert json.loads(out)[0]["first_name"] == "=1+2"  # stored as typed
    code, _, err = run(capsys, "forms", "submissions", "nope", *db)
    assert code == 1 and "no form 'nope'" in err and "white-paper" in err
