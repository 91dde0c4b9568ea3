"""The pipeline forecast from stored opportunities: API and CLI, on both backends."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import insert

from leadflow.adapters.db.tables import opportunities
from leadflow.bootstrap import Services
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded

AS_OF = datetime(2026, 6, 15, tzinfo=UTC)


@pytest.fixture
def deals(services: Services) -> Services:
    rows = []
    base = datetime(2026, 1, 5, tzinfo=UTC)
    for k in range(8):  # history: 8 deals closed within 20 days, 6 won
        created = base + timedelta(days=7 * k)
        rows.append(
            {
                "name": f"closed {k}",
                "amount": 1000.0,
                "stage": "won" if k < 6 else "lost",
                "created_at": created,
                "updated_at": created,
                "closed_at": created + timedelta(days=20),
                "expected_close": None,
            }
        )
    for k, expected in enumerate([date(2026, 6, 30), date(2026, 7, 15), None]):
        created = AS_OF - timedelta(days=10)
        rows.append(
            {
                "name": f"open {k}",
                "amount": 2000.0,
                "stage": "open",
                "created_at": created,
                "updated_at": created,
                "closed_at": None,
                "expected_close": expected,
            }
        )
    with services.engine.begin() as conn:
        conn.execute(insert(opportunities), rows)
    return services


def test_pipeline_api_weights_open_deals_by_measured_win_rate(deals, client, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    r = client.get("/api/reports/pipeline", params={"as_of": "2026-06-15"}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    months = {m["month"]: m for m in body["by_month"]}
    assert set(months) == {"2026-06", "2026-07", "unscheduled"}
    assert months["2026-06"]["weighted"] == pytest.approx(2000 * 6 / 8)
    assert body["open_amount"] == 6000.0
    assert body["win_rates"][0]["closed"] == 8 and body["win_rates"][0]["won"] == 6
    # The six past months were backtested; money won in Jan-Mar shows as actuals.
    actual = {m["month"]: m["actual"] for m in body["backtest"]["months"]}
    assert list(actual) == ["2025-12", "2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]
    assert sum(actual.values()) == 6000.0
    # No target accounts yet: an empty addressable market (see test_targets.py).
    assert body["addressable_market"] == {
        "accounts": 0,
        "valued": 0,
        "value": 0.0,
        "by_industry": [],
    }


def test_pipeline_api_refuses_bad_parameters(deals, client, admin_token):
    auth = {"Authorization": f"Bearer {admin_token}"}
    r = client.get("/api/reports/pipeline", params={"months": "99"}, headers=auth)
    assert r.status_code == 422 and "months" in r.text
    r = client.get("/api/reports/pipeline", params={"as_of": "June"}, headers=auth)
    assert r.status_code == 422 and "as_of" in r.text
    assert client.get("/api/reports/pipeline").status_code == 401


def test_pipeline_cli_formats(deals, db_url, capsys):
    args = ["report", "pipeline", "--as-of", "2026-06-15", "--database-url", db_url]
    assert run_guarded(app, [*args, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["open_deals"] == 3
    assert run_guarded(app, [*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["month"] for r in rows} == {"2026-06", "2026-07", "unscheduled"}
    assert run_guarded(app, args) == 0
    out = capsys.readouterr().out
    assert "win rate by deal age" in out and "forecast vs actual" in out
    assert "addressable market: 0 target accounts" in " ".join(out.split())
    assert run_guarded(app, [*args, "--months", "-1"]) == 1
    assert "--months" in capsys.readouterr().err
    assert (
        run_guarded(app, ["report", "pipeline", "--as-of", "nope", "--database-url", db_url]) == 1
    )
    assert "--as-of" in capsys.readouterr().err
