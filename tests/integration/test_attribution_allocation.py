"""``report attribution --allocation removal|path`` through the CLI and the API, and
``--touch channel`` with the company's own channels (both backends): Markov credits equal the
core's on the same journeys, written out here by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
import yaml
from sqlalchemy import insert

from leadflow.adapters.db.tables import events, leads, stage_changes
from leadflow.bootstrap import Services
from leadflow.core.attribution import attribute
from leadflow.core.config import load_model
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services.lifecycle.models import default_source, install_model

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RANGE = ["--from", "2026-03-01", "--to", "2026-03-16"]
# lead -> (touch channels in order, won)
JOURNEYS = {
    1: (["paid_search", "email"], True),
    2: (["social"], False),
    3: (["email", "social"], True),
    4: (["paid_search"], False),
    5: (["email"], True),
    6: (["social", "paid_search", "email"], True),
    7: (["social", "social"], False),
}


def day(d: float) -> datetime:
    return T0 + timedelta(days=d)


@pytest.fixture
def journeys_world(services: Services) -> Services:
    changes, evts = [], []
    for lead, (channels, won) in JOURNEYS.items():
        steps = [("anonymous", "acquired")]
        if won:
            steps += [("acquired", "opportunity"), ("opportunity", "won")]
        for i, (a, b) in enumerate(steps):
            at = day(1 + 3 * i)
            changes.append(
                {
                    "lead_id": lead,
                    "from_stage": a,
                    "to_stage": b,
                    "at": at,
                    "rule": "t",
                    "model_version": "2024.1",
                    "cause": None,
                    "recorded_at": at,
                }
            )
        for i, channel in enumerate(channels):
            at = day(1 + i)
            evts.append(
                {
                    "message_id": f"m{lead}-{i}",
                    "type": "page",
                    "name": None,
                    "lead_id": lead,
                    "properties": {},
                    "context": {},
                    "page_url": "https://x.example/pricing",
                    "channel": channel,
                    "occurred_at": at,
                    "received_at": at,
                }
            )
    with services.engine.begin() as conn:
        conn.execute(
            insert(leads),
            [
                {"id": i, "email": f"p{i}@example.com", "created_at": day(1), "updated_at": day(1)}
                for i in JOURNEYS
            ],
        )
        conn.execute(insert(stage_changes), changes)
        conn.execute(insert(events), evts)
    return services


def expected(allocation: str) -> dict[str, float]:
    rows = [
        {"path_id": lead, "at": day(i), "channel": ch}
        for lead, (channels, _) in JOURNEYS.items()
        for i, ch in enumerate(channels)
    ]
    conv = pl.DataFrame(
        {
            "path_id": list(JOURNEYS),
            "converted": [won for _, won in JOURNEYS.values()],
            "value": [1.0 if won else 0.0 for _, won in JOURNEYS.values()],
        }
    )
    res = attribute(pl.DataFrame(rows), conv, model="markov", allocation=allocation)
    return dict(res.credits.select("touch", "conversions").iter_rows())


def markov_credits(data: dict) -> dict[str, float]:
    return {r["touch"]: r["conversions"] for r in data["credits"] if r["model"] == "markov_order_1"}


def cli(capsys: pytest.CaptureFixture[str], db_url: str, *args: str) -> tuple[int, str, str]:
    code = run_guarded(app, ["report", "attribution", *args, "--database-url", db_url])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_allocation_removal_is_the_default_and_path_is_per_path(
    journeys_world: Services, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    removal, path = expected("removal_share"), expected("per_touch")
    assert removal != pytest.approx(path)  # the two allocations really differ here
    code, out, _ = cli(capsys, db_url, *RANGE, "--model", "markov", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["allocation"] == "removal" and data["conversions"] == 4
    assert markov_credits(data) == pytest.approx(removal)
    assert "ChannelAttribution" in data["definitions"]["allocation"]
    code, out, _ = cli(
        capsys, db_url, *RANGE, "--model", "markov", "--allocation", "path", "--format", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["allocation"] == "path"
    assert markov_credits(data) == pytest.approx(path)
    assert sum(markov_credits(data).values()) == pytest.approx(4.0)
    code, out, _ = cli(capsys, db_url, *RANGE, "--model", "markov")
    assert code == 0 and "markov allocation: removal" in out


def test_cli_unknown_allocation_is_refused_naming_the_option(
    journeys_world: Services, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, db_url, *RANGE, "--allocation", "<script>")
    assert code == 1 and "--allocation: unknown value" in err


def test_api_allocation(journeys_world: Services, client: Any, admin_token: str) -> None:
    auth = {"Authorization": f"Bearer {admin_token}"}
    params = {"from": "2026-03-01", "to": "2026-03-16", "model": "markov"}
    got = client.get("/api/reports/attribution", params=params, headers=auth)
    assert got.status_code == 200, got.text
    assert got.json()["allocation"] == "removal"
    assert markov_credits(got.json()) == pytest.approx(expected("removal_share"))
    got = client.get(
        "/api/reports/attribution", params={**params, "allocation": "path"}, headers=auth
    )
    assert got.status_code == 200
    assert markov_credits(got.json()) == pytest.approx(expected("per_touch"))
    bad = client.get(
        "/api/reports/attribution", params={**params, "allocation": "both"}, headers=auth
    )
    assert bad.status_code == 422 and "allocation" in bad.text


OWN_CHANNELS = [
    {"name": "partner", "match": [{"utm_source": ["partnerco"]}]},
    {"name": "g2", "match": [{"referrer": ["g2.com"]}]},
]


@pytest.fixture
def own_channels_world(journeys_world: Services) -> Services:
    """Two more touches the built-in grouping calls direct and referral; the company's own
    taxonomy calls them partner and g2."""
    extra = [
        (1, "partnerco", None, "direct"),
        (3, None, "https://www.g2.com/products/x", "referral"),
    ]
    with journeys_world.engine.begin() as conn:
        conn.execute(
            insert(events),
            [
                {
                    "message_id": f"extra-{lead}",
                    "type": "page",
                    "name": None,
                    "lead_id": lead,
                    "properties": {},
                    "context": {},
                    "page_url": "https://x.example/pricing",
                    "referrer": referrer,
                    "utm_source": source,
                    "channel": stored,
                    "occurred_at": day(2.5),
                    "received_at": day(2.5),
                }
                for lead, source, referrer, stored in extra
            ],
        )
    return journeys_world


def linear_by_channel(data: dict) -> dict[str, float]:
    return {r["touch"]: r["conversions"] for r in data["credits"] if r["model"] == "linear"}


def test_touch_channel_reports_the_companys_own_channels(
    own_channels_world: Services, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = (*RANGE, "--model", "linear", "--format", "json")
    code, out, _ = cli(capsys, db_url, *args)
    assert code == 0
    before = linear_by_channel(json.loads(out))
    # built-in grouping: lead 1 = paid_search, email, direct; lead 3 = email, social, referral
    assert before["direct"] == pytest.approx(1 / 3) and before["referral"] == pytest.approx(1 / 3)
    assert "partner" not in before

    data = yaml.safe_load(default_source())
    data["channels"] = OWN_CHANNELS
    data["version"] = data["version"] + "-channels"
    source = yaml.safe_dump(data)
    with own_channels_world.engine.begin() as conn:
        install_model(conn, load_model(source), source, day(0), activate=True)
    code, out, _ = cli(capsys, db_url, *args)
    assert code == 0
    after = linear_by_channel(json.loads(out))
    assert after["partner"] == pytest.approx(1 / 3) and after["g2"] == pytest.approx(1 / 3)
    assert "direct" not in after and "referral" not in after
    # every other touch keeps its built-in channel and credit
    same = {k: v for k, v in before.items() if k not in ("direct", "referral")}
    assert {k: after[k] for k in same} == pytest.approx(same)
    assert sum(after.values()) == pytest.approx(4.0)


def test_cli_shapley_game_conversion_rate(
    journeys_world: Services, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = (*RANGE, "--model", "shapley", "--format", "json")
    code, out, _ = cli(capsys, db_url, *args, "--shapley-game", "conversion_rate")
    assert code == 0
    (model,) = json.loads(out)["models"]
    assert model["model"] == "shapley_conversion_rate"
    assert model["parameters"]["method"] == "coalitions"  # 3 channels: exact, no error
    assert model["parameters"]["max_std_error_conversions"] == 0.0
    credits = [r["conversions"] for r in json.loads(out)["credits"]]
    assert sum(credits) == pytest.approx(4.0)
    code, _, err = cli(capsys, db_url, *RANGE, "--shapley-game", "vibes")
    assert code == 1 and "--shapley-game: unknown value" in err
