"""Target-account discovery on both backends: rank and mark through the API and the CLI,
fit grades of the accounts' leads follow, re-runs clear only their own marks, the pipeline
report shows the addressable market, hostile and bad input."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, update

from leadflow.adapters.db.tables import accounts, lead_states, leads, opportunities
from leadflow.bootstrap import Services
from leadflow.entrypoints.cli import app as cli_app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import reports, targets

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
FORMULA = '=HYPERLINK("http://evil.example","x")'
SCRIPT = "<script>alert(1)</script> Bank"


def _identify(client, key, user, company, title="Manager"):
    r = client.post(
        "/v1/identify",
        json={
            "userId": user,
            "messageId": f"id-{user}",
            "timestamp": T0.isoformat(),
            "traits": {
                "email": f"{user}@{user}.example",
                "first_name": user.title(),
                "title": title,
                "company": company,
                "consent": {"status": "granted"},
            },
        },
        auth=(key, ""),
    )
    assert r.status_code == 200, r.text


def _account(conn, name, industry, employees, country, **extra):
    return conn.execute(
        insert(accounts)
        .values(
            name=name,
            industry=industry,
            employee_count=employees,
            country=country,
            traits={},
            created_at=T0,
            updated_at=T0,
            **extra,
        )
        .returning(accounts.c.id)
    ).scalar_one()


@pytest.fixture
def world(services: Services, client, write_key) -> dict[str, int]:
    """Customers: four large Korean banks (won deals). Prospects with leads: Hanbit Bank
    (a large Korean bank) and Corner Shop (a tiny US retailer). A company list without
    leads: Korea Credit (like the customers), a hostile-named bank, a mid manufacturer.
    Manual Target: a large Japanese insurer made a target by hand (not by look-alike)."""
    services.clock = lambda: NOW
    fin = {"industry": "Financial Services", "country": "KR"}
    _identify(client, write_key, "hana", {"name": "Hanbit Bank", "employees": 3000, **fin})
    _identify(
        client,
        write_key,
        "shop",
        {"name": "Corner Shop", "industry": "Retail", "employees": 8, "country": "US"},
    )
    with services.engine.begin() as conn:
        ids = {r.name: r.id for r in conn.execute(select(accounts.c.id, accounts.c.name)).all()}
        for k, size in enumerate([5000, 2500, 8000, 1500]):
            ids[f"customer{k}"] = _account(conn, f"Customer {k}", "Financial Services", size, "KR")
        ids["korea_credit"] = _account(conn, "Korea Credit", "financial services", 2000, "KR")
        ids["script"] = _account(conn, SCRIPT, "Financial Services", 1200, "KR")
        ids["formula"] = _account(conn, FORMULA, "Manufacturing", 300, "DE")
        ids["manual"] = _account(
            conn, "Manual Target", "Financial Services", 4000, "JP", is_target=True
        )
        for k in range(5):
            ids[f"retail{k}"] = _account(conn, f"Retailer {k}", "Retail", 10 + k, "US")
        deals = []
        for k, amount in enumerate([100.0, 200.0, 300.0, 400.0]):
            for j in range(2):
                deals.append(
                    {
                        "name": f"deal {k}-{j}",
                        "account_id": ids[f"customer{k}"],
                        "amount": amount * (j + 1),
                        "stage": "won",
                        "created_at": T0 - timedelta(days=90),
                        "updated_at": T0 - timedelta(days=30),
                        "closed_at": T0 - timedelta(days=30),
                    }
                )
        deals.append(  # a lost deal on a retailer does not make it a customer
            {
                "name": "lost",
                "account_id": ids["retail0"],
                "amount": 5.0,
                "stage": "lost",
                "created_at": T0,
                "updated_at": T0,
                "closed_at": T0,
            }
        )
        conn.execute(insert(opportunities), deals)
    ids["hanbit"] = ids.pop("Hanbit Bank")
    ids["shop"] = ids.pop("Corner Shop")
    return ids


def _state(services, email):
    with services.engine.connect() as conn:
        return conn.execute(
            select(lead_states.c.fit, lead_states.c.fit_grade)
            .select_from(lead_states.join(leads, leads.c.id == lead_states.c.lead_id))
            .where(leads.c.email == email)
        ).one()


def _accounts(services) -> dict[int, dict]:
    with services.engine.connect() as conn:
        return {
            r["id"]: dict(r)
            for r in conn.execute(
                select(
                    accounts.c.id,
                    accounts.c.name,
                    accounts.c.is_target,
                    accounts.c.target_score,
                    accounts.c.target_value,
                    accounts.c.targeted_at,
                    accounts.c.updated_at,
                )
            ).mappings()
        }


@pytest.fixture
def api(client, admin_token):
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def test_rank_is_read_only_explained_and_valued(world, services, api):
    before = _accounts(services)
    r = api.get("/api/accounts/targets", params={"top": 20})
    assert r.status_code == 200, r.text
    rows = r.json()["targets"]
    names = [t["name"] for t in rows]
    # Customers are never ranked; the Korean banks lead, the tiny retailers trail.
    assert not any(n.startswith("Customer ") for n in names)
    assert set(names[:3]) == {"Hanbit Bank", "Korea Credit", SCRIPT}
    assert names.index("Korea Credit") < names.index("Corner Shop")
    top = rows[0]
    assert top["score"] > 0.5 and top["value_basis"] in {"segment", "industry"}
    assert any(x.startswith("industry=financial_services") for x in top["reasons"])
    assert any(x.startswith("country=KR") for x in top["reasons"])
    shop = next(t for t in rows if t["name"] == "Corner Shop")
    assert shop["score"] < 0.5 and shop["reasons"] == [] and shop["leads"] == 1
    assert next(t for t in rows if t["name"] == "Korea Credit")["leads"] == 0
    # Bank value = mean of the 8 won deals of the financial-services x 1000+ segment.
    assert top["value"] == pytest.approx(375.0) and top["value_deals"] == 8
    assert shop["value_basis"] == "overall" and shop["value"] == pytest.approx(375.0)
    assert _accounts(services) == before


def test_mark_sets_targets_updates_fit_and_replace_clears_only_own_marks(world, services, api):
    fit0, grade0 = _state(services, "hana@hana.example")
    r = api.post("/api/accounts/targets", json={"top": 4})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["won_accounts"] == 4 and report["won_deals"] == 8
    assert report["already_target"] == 1  # Manual Target ranks 4th: scored, never owned
    assert report["marked"] == 3 and report["cleared"] == 0
    assert report["leads_recomputed"] == 1 and report["fit_grade_changed"] == 1
    fit1, grade1 = _state(services, "hana@hana.example")
    assert fit1 == pytest.approx(fit0 + 20) and (grade0, grade1) == ("B", "A")
    acc = _accounts(services)
    for key in ("hanbit", "korea_credit", "script"):
        a = acc[world[key]]
        assert a["is_target"] and a["targeted_at"] is not None and a["target_score"] > 0.5
        assert a["target_value"] == pytest.approx(375.0)
    manual = acc[world["manual"]]
    assert manual["is_target"] and manual["targeted_at"] is None
    assert manual["target_score"] is not None

    # A re-run with a smaller top clears the look-alike marks that fell out, not Manual's
    # flag; the lead of Hanbit (still first) keeps its grade.
    r = api.post("/api/accounts/targets", json={"top": 1})
    assert r.status_code == 200, r.text
    report = r.json()
    assert [t["name"] for t in report["targets"]] == ["Hanbit Bank"]
    assert report["kept"] == 1 and report["cleared"] == 2 and report["unscored"] == 1
    acc = _accounts(services)
    assert acc[world["hanbit"]]["is_target"]
    for key in ("korea_credit", "script"):
        a = acc[world[key]]
        assert not a["is_target"] and a["targeted_at"] is None and a["target_score"] is None
    manual = acc[world["manual"]]
    assert manual["is_target"] and manual["target_score"] is None
    assert _state(services, "hana@hana.example") == (fit1, "A")

    # Without replace nothing is cleared.
    r = api.post("/api/accounts/targets", json={"top": 2, "replace": False})
    assert r.json()["cleared"] == 0 and r.json()["marked"] == 1


def test_unmarking_a_leads_account_lowers_its_fit_again(world, services, api):
    with services.engine.begin() as conn:  # make the retailer look like the customers
        conn.execute(
            update(accounts)
            .where(accounts.c.id == world["shop"])
            .values(industry="Financial Services", employee_count=9000, country="KR")
        )
    fit0, _ = _state(services, "shop@shop.example")
    assert api.post("/api/accounts/targets", json={"top": 4}).status_code == 200
    # The account's data changed without a recompute; marking recomputed its lead.
    fit1, _ = _state(services, "shop@shop.example")
    assert fit1 > fit0 + 19
    with services.engine.begin() as conn:  # it becomes a retailer again
        conn.execute(
            update(accounts)
            .where(accounts.c.id == world["shop"])
            .values(industry="Retail", employee_count=8, country="US")
        )
    r = api.post("/api/accounts/targets", json={"top": 4}).json()
    assert r["cleared"] >= 1
    assert not _accounts(services)[world["shop"]]["is_target"]
    fit2, grade2 = _state(services, "shop@shop.example")
    assert fit2 == pytest.approx(fit0) and grade2 in {"C", "D"}


def test_pipeline_report_shows_the_addressable_market(world, services, api):
    empty = reports.pipeline_report(services.engine, NOW, 0)["addressable_market"]
    assert empty["accounts"] == 1 and empty["value"] == 0.0  # Manual Target, no value yet
    api.post("/api/accounts/targets", json={"top": 4})
    market = reports.pipeline_report(services.engine, NOW, 0)["addressable_market"]
    assert market["accounts"] == 4 and market["valued"] == 4
    assert market["value"] == pytest.approx(4 * 375.0)
    # Industries are grouped like the fit table's keys ("financial services" = "Financial
    # Services"), labelled with the most common spelling.
    assert market["by_industry"] == [
        {"industry": "Financial Services", "accounts": 4, "valued": 4, "value": 1500.0},
    ]
    r = api.get("/api/reports/pipeline", params={"months": 0})
    assert r.json()["addressable_market"]["accounts"] == 4
    # A customer marked by hand is not addressable any more.
    with services.engine.begin() as conn:
        conn.execute(update(accounts).values(is_target=True).where(accounts.c.name == "Customer 0"))
    assert reports.pipeline_report(services.engine, NOW, 0)["addressable_market"]["accounts"] == 4


def test_api_bad_input_and_no_won_accounts(world, services, api):
    before = _accounts(services)
    for params in ({"top": 0}, {"top": 100_001}, {"top": "abc"}, {"top": "1.5"}):
        r = api.get("/api/accounts/targets", params=params)
        assert r.status_code == 422 and "top" in r.text, (params, r.text)
    for body in (
        {"top": 0},
        {"top": -3},
        {"top": 100_001},
        {"top": "5"},
        {"top": 2.5},
        {"top": True},
        {},
        {"top": 3, "drop": "table"},
        {"top": 3, "traits": [""]},
    ):
        r = api.post("/api/accounts/targets", json=body)
        assert r.status_code == 422, (body, r.text)
        field = next(iter(body.keys() - {"top"}), "top") if body else "top"
        assert field in r.text, (body, r.text)
    # Hostile trait keys are data, never SQL.
    r = api.post(
        "/api/accounts/targets",
        json={"top": 2, "traits": ["'; DROP TABLE accounts; --"]},
    )
    assert r.status_code == 200, r.text
    assert "reasons" in r.json()["targets"][0]
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(accounts)).scalar() == len(before)
    assert api.get("/api/accounts/targets", headers={"Authorization": ""}).status_code == 401

    with services.engine.begin() as conn:
        conn.execute(update(opportunities).values(stage="lost"))
    before = _accounts(services)
    r = api.get("/api/accounts/targets", params={"top": 5})
    assert r.status_code == 409 and "no won accounts" in r.json()["detail"]
    r = api.post("/api/accounts/targets", json={"top": 5})
    assert r.status_code == 409 and "nothing was changed" in r.json()["detail"]
    assert _accounts(services) == before


def test_hostile_names_come_back_as_data(world, api):
    rows = api.get("/api/accounts/targets", params={"top": 50}).json()["targets"]
    assert SCRIPT in [t["name"] for t in rows] and FORMULA in [t["name"] for t in rows]


def test_cli_dry_run_mark_list_and_formats(world, services, db_url, capsys):
    base = ["accounts", "targets", "--database-url", db_url]
    before = _accounts(services)
    assert run_guarded(cli_app, [*base, "--top", "3", "--dry-run", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["reasons"]
    assert run_guarded(cli_app, [*base, "--top", "50", "--dry-run", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert {"rank", "name", "score", "value", "value_basis", "reasons"} <= set(parsed[0])
    names = [r["name"] for r in parsed]
    assert "'" + FORMULA in names and FORMULA not in names  # CSV formula neutralised
    assert SCRIPT in names
    assert run_guarded(cli_app, [*base, "--top", "3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "look-alike accounts" in out and "dry run: nothing was changed" in out
    assert _accounts(services) == before

    assert run_guarded(cli_app, [*base, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "marked 3 new target accounts" in out and "1 fit grades" in out
    assert _state(services, "hana@hana.example")[1] == "A"
    args = ["accounts", "list", "--targets", "--database-url", db_url, "--format", "json"]
    assert run_guarded(cli_app, args) == 0
    listed = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in listed}
    assert set(by_name) == {"Hanbit Bank", "Korea Credit", SCRIPT, "Manual Target"}
    assert by_name["Manual Target"]["set_by"] == "other"
    assert by_name["Hanbit Bank"]["set_by"] == "lookalike"
    assert listed[-1]["name"] == "Manual Target"  # the lowest score
    assert run_guarded(cli_app, ["accounts", "list", "--database-url", db_url]) == 0
    assert "Retailer 0" in capsys.readouterr().out

    assert run_guarded(cli_app, [*base, "--top", "3", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kept"] == 3 and report["marked"] == 0 and report["cleared"] == 0

    args = ["report", "pipeline", "--months", "0", "--database-url", db_url]
    assert run_guarded(cli_app, args) == 0
    out = " ".join(capsys.readouterr().out.split())  # the title may wrap
    assert "addressable market: 4 target accounts, value 1125.0" in out
    assert "Financial Services │ 4 │ 3 │ 1125.0" in out


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ("0", "--top: 0 must be between 1 and 100000"),
        ("100001", "--top: 100001 must be between 1 and 100000"),
        ("-5", "--top: -5 must be between"),
        ("abc", "--top: 'abc' is not a whole number"),
        ("2.5", "--top: '2.5' is not a whole number"),
        ("=1+1", "--top: '=1+1' is not a whole number"),
    ],
)
def test_cli_refuses_bad_top(world, services, db_url, capsys, top, message):
    before = _accounts(services)
    code = run_guarded(cli_app, ["accounts", "targets", f"--top={top}", "--database-url", db_url])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert _accounts(services) == before


def test_cli_without_won_accounts_changes_nothing(services, db_url, capsys):
    with services.engine.begin() as conn:
        _account(conn, "Lonely", "Retail", 5, "US")
    before = _accounts(services)
    args = ["accounts", "targets", "--top", "5", "--database-url", db_url]
    assert run_guarded(cli_app, args) == 1
    err = capsys.readouterr().err
    assert "no won accounts" in err and "nothing was changed" in err
    assert _accounts(services) == before
    assert targets.list_accounts  # exported
