"""``leadflow report ...``: formats, charts, errors (both backends)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from leadflow.adapters.db.tables import events, leads, sales_actions, stage_changes
from leadflow.bootstrap import Services
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded

T0 = datetime(2026, 3, 1, tzinfo=UTC)
EVIL = '=HYPERLINK("http://evil.example","x")'
RANGE = ["--from", "2026-03-01", "--to", "2026-03-16"]


def day(d: float) -> datetime:
    return T0 + timedelta(days=d)


@pytest.fixture
def world(services: Services) -> Services:
    """Lead 1: campaign EVIL, acquired d1 -> nurturing d2 -> mql d3 (amount 700 later won).
    Lead 2: campaign spring, acquired d1, stays."""

    def change(lead: int, a: str, b: str, at: datetime) -> dict:
        return {
            "lead_id": lead,
            "from_stage": a,
            "to_stage": b,
            "at": at,
            "rule": "t",
            "model_version": "2024.1",
            "cause": None,
            "recorded_at": at,
        }

    def event(i: int, lead: int, at: datetime, campaign: str, channel: str) -> dict:
        return {
            "message_id": f"m{i}",
            "type": "page",
            "name": None,
            "lead_id": lead,
            "properties": {},
            "context": {},
            "page_url": "https://x.example/pricing",
            "channel": channel,
            "utm_campaign": campaign,
            "occurred_at": at,
            "received_at": at,
        }

    with services.engine.begin() as conn:
        conn.execute(
            insert(leads),
            [
                {"id": i, "email": f"p{i}@example.com", "created_at": day(1), "updated_at": day(1)}
                for i in (1, 2)
            ],
        )
        conn.execute(
            insert(stage_changes),
            [
                change(1, "anonymous", "acquired", day(1)),
                change(1, "acquired", "nurturing", day(2)),
                change(1, "nurturing", "mql", day(3)),
                change(1, "mql", "appointment", day(4)),
                change(1, "appointment", "opportunity", day(5)),
                change(1, "opportunity", "won", day(6)),
                change(2, "anonymous", "acquired", day(1)),
            ],
        )
        conn.execute(
            insert(events),
            [
                event(1, 1, day(1), EVIL, "paid_search"),
                event(2, 1, day(2.5), "spring", "email"),
                event(3, 2, day(1), "spring", "social"),
            ],
        )
        conn.execute(
            insert(sales_actions),
            [
                {
                    "action_id": "q1",
                    "lead_id": 1,
                    "name": "qualify",
                    "at": day(5),
                    "amount": 700.0,
                    "created_at": day(5),
                },
            ],
        )
    return services


def run(capsys: pytest.CaptureFixture[str], db_url: str, *args: str) -> tuple[int, str, str]:
    code = run_guarded(app, ["report", *args, "--database-url", db_url])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_funnel_formats(world: Services, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db_url, "funnel", *RANGE, "--format", "json")
    assert code == 0
    rows = {r["stage"]: r for r in json.loads(out)["stages"]}
    assert rows["acquired"]["flow_in"] == 2 and rows["acquired"]["balance_end"] == 1
    code, out, _ = run(capsys, db_url, "funnel", *RANGE, "--by", "campaign", "--format", "csv")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    campaigns = {r["campaign"] for r in table}
    assert "'" + EVIL in campaigns and EVIL not in campaigns  # neutralised formula
    acquired = {r["campaign"]: r["flow_in"] for r in table if r["stage"] == "acquired"}
    assert acquired == {"'" + EVIL: "1", "spring": "1"}
    code, out, _ = run(capsys, db_url, "funnel", *RANGE)
    assert code == 0 and "acquired" in out and "bottleneck" in out


def test_funnel_html_chart_is_self_contained(
    world: Services, db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chart = tmp_path / "flows.html"
    code, _, err = run(capsys, db_url, "funnel", *RANGE, "--chart", str(chart))
    assert code == 0 and "chart written" in err
    page = chart.read_text(encoding="utf-8")
    assert "<svg" in page and "anonymous -&gt; acquired: 2" in page
    assert not re.search(r"<script[^>]+src=", page, re.I)
    assert not re.search(r"(src|href)=\"https?://", page, re.I)


def test_attribution_outputs_and_chart(
    world: Services, db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(
        capsys, db_url, "attribution", *RANGE, "--model", "first_touch", "--format", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["conversion_value"] == 700.0
    assert data["credits"][0]["touch"] == "paid_search" and data["credits"][0]["value"] == 700.0
    chart = tmp_path / "attr.html"
    code, out, _ = run(
        capsys,
        db_url,
        "attribution",
        *RANGE,
        "--chart",
        str(chart),
        "--touch",
        "campaign",
        "--format",
        "csv",
    )
    assert code == 0 and "<svg" in chart.read_text(encoding="utf-8")
    assert any(r["touch"] == "'" + EVIL for r in csv.DictReader(io.StringIO(out)))
    png = tmp_path / "attr.png"
    pytest.importorskip("matplotlib")
    code, _, _ = run(capsys, db_url, "attribution", *RANGE, "--chart", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_suggest_points_writes_a_checkable_model(
    world: Services, db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "suggested.yaml"
    code, out, _ = run(
        capsys, db_url, "attribution", *RANGE, "--suggest-points", "--out", str(out_file)
    )
    assert code == 0 and out.startswith("--- leadflow.yaml")
    code = run_guarded(app, ["model", "check", str(out_file)])
    assert code == 0 and "ok: model 2024.4-suggested" in capsys.readouterr().out


def test_kpis_and_campaigns(
    world: Services, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, db_url, "kpis", "--role", "executive", *RANGE, "--format", "json")
    assert code == 0 and json.loads(out)["kpis"]["won_revenue"] == 700.0
    code, out, _ = run(capsys, db_url, "kpis", "--role", "department", *RANGE)
    assert code == 0 and "sales_acceptance" in out
    code, out, _ = run(capsys, db_url, "campaigns", *RANGE, "--format", "json")
    assert code == 0 and {r["campaign"] for r in json.loads(out)["forms"]} == {EVIL, "spring"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["funnel", "--from", "yesterday"], "--from: 'yesterday' is not a date"),
        (["funnel", "--from", "2026-03-10", "--to", "2026-03-01"], "must be after"),
        (["funnel", "--by", "shoe_size"], "--by: unknown value 'shoe_size'"),
        (["attribution", "--model", "magic"], "--model: unknown value 'magic'"),
        (["attribution", "--order", "4"], "--order: 4"),
        (["attribution", "--to-stage", "paradise", *RANGE], "--to-stage: unknown stage"),
        (["kpis", "--role", "ceo"], "--role: unknown value 'ceo'"),
        (["funnel", "--chart", "out.pdf"], "--chart"),
        (["attribution", "--out", "x.yaml"], "--out: only with --suggest-points"),
    ],
)
def test_errors_are_one_line(
    world: Services,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, _, err = run(capsys, db_url, *args)
    assert code == 1
    assert message in err and "Traceback" not in err and err.count("\n") == 1
