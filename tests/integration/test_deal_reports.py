"""Deal-level truth in every report, on both backends: a generated set of deals is loaded
through the real paths (CRM updates addressed by ``external_id`` and ``POST
/api/opportunities`` with ``created_at``, ``closed_at``, stage, loss reason, owner, amount
and currency; several deals per person, open deals, two currencies), and every figure of
the KPIs, the pipeline report (forecast, backtest, sales cycle by segment) and the deal
funnel — from the API, the CLI and the KPI page — equals the computation from the rows."""

from __future__ import annotations

import json
import random
import re
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # the services' clock: after every deal
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)  # the forecast date: some deals close after it
FROM, TO = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 10, 1, tzinfo=UTC)
BANDS = (0, 30, 60, 90, 180)
INDUSTRIES = ("software", "retail", "health")
SIZES = {12: "1-49", 120: "50-249", 600: "250-999", 4000: "1000+"}  # the shipped bands
LOSS = ("price", "competitor", "no_decision", None)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture
def api(client, admin_token, services):
    services.clock = Clock(T0)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def _people(n: int = 24) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    return [
        {
            "email": f"buyer{p}@company{p}.example",
            "industry": INDUSTRIES[p % 3],
            "country": ("KR", "DE")[p % 2],
            "employees": list(SIZES)[p % 4],
            "source": rnd.choice(["webinar", "partner"]),
            "plan_tier": ("gold", "silver")[p % 2] if p % 7 != 6 else None,
        }
        for p in range(n)
    ]


def _deals(people: list[dict[str, Any]], seed: int = 14) -> list[dict[str, Any]]:
    """1-4 deals a person, opened over 2024-2025; a quarter still open, the rest won or
    lost (some after AS_OF); USD and EUR; owners rep-a/b/c; half with an expected close."""
    rnd = random.Random(seed)
    deals: list[dict[str, Any]] = []
    for p, person in enumerate(people):
        for k in range(1 + p % 4):
            opened = datetime(2024, 1, 3, 9, 30, tzinfo=UTC) + timedelta(
                days=rnd.randrange(0, 690), minutes=rnd.randrange(0, 600)
            )
            stage = rnd.choice(["open", "won", "won", "lost", "lost"])
            close_day = (opened + timedelta(days=rnd.randrange(2, 200))).date()
            if stage != "open" and close_day >= T0.date():
                stage = "open"
            closed = datetime.combine(close_day, datetime.min.time(), UTC)
            deals.append(
                {
                    "id": f"D-{p:02d}-{k}",
                    "person": person,
                    "stage": stage,
                    "amount": float(rnd.randrange(1_000, 80_000)) + rnd.choice([0, 0.25]),
                    "currency": rnd.choice(["USD", "USD", "EUR"]),
                    "owner": rnd.choice(["rep-a", "rep-b", "rep-c"]),
                    "created_at": opened,
                    "closed_at": closed if stage != "open" else None,
                    # The API needs a loss reason; a CRM update may leave it out.
                    "lost_reason": rnd.choice(LOSS if k % 2 else LOSS[:-1])
                    if stage == "lost"
                    else None,
                    "expected_close": (opened + timedelta(days=rnd.randrange(20, 150))).date()
                    if k % 2 == 0
                    else None,
                    "via": "api" if k % 2 == 0 else "crm",
                }
            )
    return deals


def _load(api, write_key, people, deals) -> None:
    for person in people:
        traits = {k: v for k, v in person.items() if v is not None}
        r = api.post(
            "/v1/identify",
            json={
                "userId": person["email"].split("@")[0],
                "messageId": f"id-{person['email']}",
                "timestamp": "2023-11-01T00:00:00Z",
                "traits": {**traits, "consent": {"status": "granted"}},
            },
            auth=(write_key, ""),
        )
        assert r.status_code == 200, r.text
    leads = {
        row["email"]: row["id"]
        for row in api.get("/api/leads", params={"limit": 100}).json()["items"]
    }
    updates = []
    for d in sorted(deals, key=lambda d: d["id"], reverse=True):  # not in date order
        if d["via"] == "api":
            body: dict[str, Any] = {
                "name": d["id"],
                "external_id": d["id"],
                "lead_id": leads[d["person"]["email"]],
                "amount": d["amount"],
                "currency": d["currency"],
                "owner": d["owner"],
                "created_at": d["created_at"].isoformat(),
                "stage": d["stage"],
            }
            if d["expected_close"] is not None:
                body["expected_close"] = d["expected_close"].isoformat()
            if d["closed_at"] is not None:
                body["closed_at"] = d["closed_at"].isoformat()
            if d["lost_reason"] is not None:
                body["lost_reason"] = d["lost_reason"]
            r = api.post("/api/opportunities", json=body)
            assert r.status_code == 201, r.text
        else:
            update: dict[str, Any] = {
                "external_id": d["id"],
                "update_id": f"{d['id']}:{d['stage']}",
                "lead_email": d["person"]["email"],
                "stage": d["stage"],
                "amount": d["amount"],
                "currency": d["currency"],
                "owner": d["owner"],
                "created_at": d["created_at"].isoformat(),
            }
            if d["closed_at"] is not None:
                update["closed_at"] = d["closed_at"].date().isoformat()
            if d["lost_reason"] is not None:
                update["lost_reason"] = d["lost_reason"]
            updates.append(update)
    r = api.post("/api/crm/updates", json={"updates": updates})
    assert r.status_code == 200 and r.json()["refused"] == 0, r.text


@pytest.fixture
def history(api, write_key) -> list[dict[str, Any]]:
    people = _people()
    deals = _deals(people)
    _load(api, write_key, people, deals)
    return deals


# --------------------------------------------------------------------------- the rows


def _stage_at(d: dict[str, Any], t: datetime) -> str:
    closed = d["closed_at"]
    return d["stage"] if closed is not None and closed < t else "open"


def _days(d: dict[str, Any]) -> float:
    return (d["closed_at"] - d["created_at"]).total_seconds() / 86_400


def _closed_in(deals, start, end, stage=None):
    return [
        d
        for d in deals
        if d["closed_at"] is not None
        and start <= d["closed_at"] < end
        and (stage is None or d["stage"] == stage)
    ]


def _open_at(deals, t):
    return [d for d in deals if d["created_at"] < t and _stage_at(d, t) == "open"]


def _amount(deals) -> float:
    return sum(d["amount"] for d in deals)


def _p90(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def _band_rates(deals, t: datetime) -> list[float | None]:
    """Win rate per age band measured at ``t`` (the definition in docs/reports.md)."""
    closed = [d for d in deals if d["closed_at"] is not None and d["closed_at"] < t]
    rates: list[float | None] = []
    previous = None
    for lower in BANDS:
        alive = [d for d in closed if _days(d) >= lower]
        won = sum(d["stage"] == "won" for d in alive)
        enough = len(alive) >= 5 or (previous is None and alive)
        rate = won / len(alive) if enough else previous
        rates.append(rate)
        previous = rate if rate is not None else previous
    return rates


def _weighted(deals, t: datetime, rates_from, due_before: date | None = None) -> float:
    rates = _band_rates(rates_from, t)
    total = 0.0
    for d in _open_at(deals, t):
        if due_before is not None and (
            d["expected_close"] is None or d["expected_close"] >= due_before
        ):
            continue
        age = (t - d["created_at"]).total_seconds() / 86_400
        rate = [r for lower, r in zip(BANDS, rates, strict=True) if age >= lower][-1]
        total += d["amount"] * (rate or 0.0)
    return total


# --------------------------------------------------------------------------- tests


def test_kpis_agree_with_the_rows_per_currency_on_api_cli_and_page(
    history, api, db_url, capsys, services
):
    deals = history
    currencies = sorted({d["currency"] for d in deals})
    assert currencies == ["EUR", "USD"]
    period = {"from": FROM.date().isoformat(), "to": (TO - timedelta(days=1)).date().isoformat()}
    # The API's "to" is exclusive like the CLI's.
    period["to"] = TO.date().isoformat()
    won = _closed_in(deals, FROM, TO, "won")
    lost = _closed_in(deals, FROM, TO, "lost")
    still = _open_at(deals, TO)
    assert won and lost and still

    mixed = api.get("/api/reports/kpis", params={**period, "role": "executive"}).json()
    k = mixed["kpis"]
    assert (k["won_deals"], k["lost_deals"], k["pipeline_deals"]) == (
        len(won),
        len(lost),
        len(still),
    )
    assert k["win_rate"] == pytest.approx(len(won) / (len(won) + len(lost)))
    # Two currencies: no amount is summed across them.
    assert k["won_revenue"] is None and k["pipeline_value"] is None
    assert mixed["amounts_summed"] is False and mixed["currencies"] == currencies
    per = {r["currency"]: r for r in mixed["money_by_currency"]}
    for code in currencies:
        mine = [d for d in deals if d["currency"] == code]
        w, lo = _closed_in(mine, FROM, TO, "won"), _closed_in(mine, FROM, TO, "lost")
        assert per[code]["won_deals"] == len(w)
        assert per[code]["won_revenue"] == pytest.approx(_amount(w))
        assert per[code]["pipeline_deals"] == len(_open_at(mine, TO))
        assert per[code]["pipeline_value"] == pytest.approx(_amount(_open_at(mine, TO)))
        assert per[code]["win_rate"] == pytest.approx(len(w) / (len(w) + len(lo)))
        one = api.get(
            "/api/reports/kpis", params={**period, "role": "executive", "currency": code}
        ).json()
        assert one["currency"] == code and one["amounts_summed"] is True
        assert one["kpis"]["won_revenue"] == pytest.approx(_amount(w))
        assert one["kpis"]["won_deals"] == len(w)
        assert one["kpis"]["pipeline_value"] == pytest.approx(_amount(_open_at(mine, TO)))
        # The CLI gives the same figures (one query source: the same service).
        args = ["report", "kpis", "--from", period["from"], "--to", period["to"]]
        assert run_guarded(app, [*args, "--currency", code.lower(), "--format", "json",
                                 "--database-url", db_url]) == 0  # fmt: skip
        cli = json.loads(capsys.readouterr().out)
        assert cli["kpis"] == one["kpis"]
    # A currency with no deal, or not a code, is refused naming the field.
    r = api.get("/api/reports/kpis", params={**period, "currency": "JPY"})
    assert r.status_code == 422 and r.json()["field"] == "currency" and "EUR, USD" in r.text
    r = api.get("/api/reports/kpis", params={**period, "currency": "=1+1"})
    assert r.status_code == 422 and "currency" in r.text
    assert run_guarded(app, ["report", "kpis", "--currency", "12", "--database-url", db_url]) == 1
    assert "--currency" in capsys.readouterr().err
    # The CLI's table says why the amounts are missing.
    assert run_guarded(app, ["report", "kpis", "--from", period["from"], "--to", period["to"],
                             "--database-url", db_url]) == 0  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    assert "not summed across currencies" in out and "deals per currency" in out


def test_pipeline_forecast_backtest_and_cycle_by_segment_equal_the_rows(history, api):
    deals = history
    months = 12
    for code in ("USD", "EUR"):
        mine = [d for d in deals if d["currency"] == code]
        body = api.get(
            "/api/reports/pipeline",
            params={"as_of": AS_OF.date().isoformat(), "months": months, "currency": code},
        ).json()
        # Win rates measured from the deals closed before the forecast date, at their
        # true close dates.
        closed = [d for d in mine if d["closed_at"] is not None and d["closed_at"] < AS_OF]
        n_won = sum(d["stage"] == "won" for d in closed)
        assert n_won > 0
        overall = body["win_rates"][0]
        assert (overall["won"], overall["closed"]) == (n_won, len(closed))
        assert overall["win_rate"] == pytest.approx(n_won / len(closed))
        for got, want in zip(body["win_rates"], _band_rates(mine, AS_OF), strict=True):
            assert got["win_rate"] == pytest.approx(want)
        # The weighted pipeline is not zero when there were past wins.
        assert body["open_deals"] == len(_open_at(mine, AS_OF))
        assert body["open_amount"] == pytest.approx(_amount(_open_at(mine, AS_OF)))
        assert body["weighted_amount"] == pytest.approx(_weighted(mine, AS_OF, mine))
        assert body["weighted_amount"] > 0
        # The backtest: each past month's forecast made at its start with what was known
        # then, against the amounts won in it at their true close dates.
        for row in body["backtest"]["months"]:
            start = datetime.strptime(row["month"], "%Y-%m").replace(tzinfo=UTC)
            end = (start + timedelta(days=32)).replace(day=1)
            assert row["actual"] == pytest.approx(_amount(_closed_in(mine, start, end, "won")))
            assert row["forecast"] == pytest.approx(
                _weighted(mine, start, mine, due_before=end.date())
            )
        assert len(body["backtest"]["months"]) == months
        assert sum(r["actual"] for r in body["backtest"]["months"]) > 0
        # Deals per stage as of the forecast date, and the loss reasons.
        per_stage = {r["stage"]: r for r in body["deals_per_stage"]}
        for stage in ("open", "won", "lost"):
            at = [d for d in mine if d["created_at"] < AS_OF and _stage_at(d, AS_OF) == stage]
            assert per_stage[stage]["deals"] == len(at)
            assert per_stage[stage]["amount"] == pytest.approx(_amount(at))
        reasons = {r["reason"]: r["deals"] for r in body["lost_reasons"]}
        lost = [d for d in closed if d["stage"] == "lost"]
        assert sum(reasons.values()) == len(lost)
        # A loss without a reason is stored with the model's catch-all reason.
        stored = [d["lost_reason"] or "other" for d in lost]
        assert reasons == {r: stored.count(r) for r in set(stored)}

    # Without a currency: counts and rates over every deal, amounts per currency.
    body = api.get(
        "/api/reports/pipeline", params={"as_of": AS_OF.date().isoformat(), "by": "industry"}
    ).json()
    assert body["open_amount"] is None and body["weighted_amount"] is None
    assert {r["currency"] for r in body["by_currency"]} == {"EUR", "USD"}
    for row in body["by_currency"]:
        mine = [d for d in deals if d["currency"] == row["currency"]]
        assert row["open_amount"] == pytest.approx(_amount(_open_at(mine, AS_OF)))
        # Each currency's deals weighted by the rates measured on every deal.
        assert row["weighted_amount"] == pytest.approx(_weighted(mine, AS_OF, deals))
    # Sales cycle by segment: deals, win rate, median and p90 days per industry.
    rows = {r["segment"]: r for r in body["by_segment"]}
    assert body["segment_by"] == "industry" and set(rows) == set(INDUSTRIES)
    for industry in INDUSTRIES:
        mine = [d for d in deals if d["person"]["industry"] == industry and d["created_at"] < AS_OF]
        won = [d for d in mine if _stage_at(d, AS_OF) == "won"]
        lost = [d for d in mine if _stage_at(d, AS_OF) == "lost"]
        row = rows[industry]
        assert (row["deals"], row["won"], row["lost"]) == (len(mine), len(won), len(lost))
        assert row["win_rate"] == pytest.approx(len(won) / (len(won) + len(lost)))
        assert row["won_amount"] is None  # two currencies
        cycle = [_days(d) for d in won]
        assert row["won_median_days"] == pytest.approx(statistics.median(cycle))
        assert row["won_p90_days"] == pytest.approx(_p90(cycle))
        both = cycle + [_days(d) for d in lost]
        assert row["closed_median_days"] == pytest.approx(statistics.median(both))
        assert row["closed_p90_days"] == pytest.approx(_p90(both))


@pytest.mark.parametrize(
    ("by", "key"),
    [
        ("owner", lambda d: d["owner"]),
        ("country", lambda d: d["person"]["country"]),
        ("size", lambda d: SIZES[d["person"]["employees"]]),
        ("source", lambda d: d["person"]["source"]),
        ("currency", lambda d: d["currency"]),
        ("plan_tier", lambda d: d["person"]["plan_tier"] or "(none)"),  # a custom attribute
    ],
)
def test_every_segment_counts_the_deals_of_its_value(history, api, by, key):
    deals = [d for d in history if d["created_at"] < AS_OF]
    body = api.get(
        "/api/reports/pipeline",
        params={"as_of": AS_OF.date().isoformat(), "by": by, "currency": "USD"},
    ).json()
    usd = [d for d in deals if d["currency"] == "USD"]
    expected: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in usd:
        expected[key(d)].append(d)
    got = {r["segment"]: r for r in body["by_segment"]}
    assert set(got) == set(expected)
    for value, mine in expected.items():
        won = [d for d in mine if _stage_at(d, AS_OF) == "won"]
        assert got[value]["deals"] == len(mine)
        assert got[value]["won"] == len(won)
        assert got[value]["won_amount"] == pytest.approx(_amount(won))  # one currency
        if won:
            assert got[value]["won_median_days"] == pytest.approx(
                statistics.median(_days(d) for d in won)
            )


def test_segment_and_currency_options_are_refused_clearly(history, api, db_url, capsys):
    r = api.get("/api/reports/pipeline", params={"by": "no_such_attribute"})
    assert r.status_code == 422 and r.json()["field"] == "by"
    assert "no_such_attribute" in r.text
    r = api.get("/api/reports/pipeline", params={"by": "x'); DROP TABLE leads;--"})
    assert r.status_code == 422 and r.json()["field"] == "by"
    r = api.get("/api/reports/pipeline", params={"currency": "GBP"})
    assert r.status_code == 422 and r.json()["field"] == "currency"
    assert api.get("/api/leads", params={"limit": 1}).status_code == 200  # nothing dropped
    base = ["report", "pipeline", "--as-of", AS_OF.date().isoformat(), "--database-url", db_url]
    assert run_guarded(app, [*base, "--by", "<script>"]) == 1
    assert "--by" in capsys.readouterr().err
    # The CLI gives the segment table (CSV: the segments only).
    assert run_guarded(app, [*base, "--by", "industry", "--currency", "EUR"]) == 0
    out = capsys.readouterr().out
    assert "sales cycle" in out and "by industry" in out
    assert run_guarded(app, [*base, "--by", "industry", "--format", "csv"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith("industry,deals,open,won,lost,win_rate")


def test_deal_funnel_counts_deals_per_stage_with_conversions_and_amounts(
    history, api, db_url, capsys
):
    deals = history
    params = {"from": FROM.date().isoformat(), "to": TO.date().isoformat(), "unit": "deal"}
    body = api.get("/api/reports/funnel", params={**params, "currency": "USD"}).json()
    assert body["unit"] == "deal" and body["currency"] == "USD"
    usd = [d for d in deals if d["currency"] == "USD"]
    stages = {r["stage"]: r for r in body["stages"]}
    assert list(stages) == ["open", "won", "lost"]
    opened = [d for d in usd if FROM <= d["created_at"] < TO]
    assert stages["open"]["flow_in"] == len(opened)
    assert stages["open"]["amount_in"] == pytest.approx(_amount(opened))
    for stage in ("open", "won", "lost"):
        start = [d for d in usd if d["created_at"] < FROM and _stage_at(d, FROM) == stage]
        end = [d for d in usd if d["created_at"] < TO and _stage_at(d, TO) == stage]
        assert stages[stage]["balance_start"] == len(start)
        assert stages[stage]["balance_end"] == len(end)
        assert stages[stage]["amount_end"] == pytest.approx(_amount(end))
    for stage in ("won", "lost"):
        closes = _closed_in(usd, FROM, TO, stage)
        assert stages[stage]["flow_in"] == len(closes) == stages["open"][f"out_{stage}"]
        assert stages[stage]["amount_in"] == pytest.approx(_amount(closes))
    won, lost = _closed_in(usd, FROM, TO, "won"), _closed_in(usd, FROM, TO, "lost")
    assert body["win_rate"] == pytest.approx(len(won) / (len(won) + len(lost)))
    steps = {s["step"]: s for s in body["steps"]}
    cohort_won = [d for d in opened if _stage_at(d, TO) == "won"]
    assert steps["opened"]["deals"] == len(opened)
    assert steps["won"]["deals"] == len(cohort_won)
    assert steps["won"]["amount"] == pytest.approx(_amount(cohort_won))
    assert steps["won"]["conversion"] == pytest.approx(len(cohort_won) / len(opened))
    # The lead funnel stays the default; both currencies together give counts, no amounts.
    assert api.get("/api/reports/funnel", params=params | {"unit": "lead"}).json()["unit"] == "lead"
    both = api.get("/api/reports/funnel", params=params).json()
    assert both["stages"][0]["flow_in"] == sum(FROM <= d["created_at"] < TO for d in deals)
    assert both["stages"][0]["amount_in"] is None
    assert {r["currency"] for r in both["money_by_currency"]} == {"EUR", "USD"}
    r = api.get("/api/reports/funnel", params={**params, "by": "channel"})
    assert r.status_code == 422 and r.json()["field"] == "by"
    r = api.get("/api/reports/funnel", params={**params, "unit": "account"})
    assert r.status_code == 422
    # The CLI prints the same figures.
    args = ["report", "funnel", "--unit", "deal", "--from", params["from"], "--to", params["to"]]
    assert run_guarded(app, [*args, "--currency", "USD", "--format", "json",
                             "--database-url", db_url]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["stages"] == body["stages"]
    assert run_guarded(app, [*args, "--database-url", db_url]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "deal funnel" in out and "where they stand" in out and "amounts per currency" in out
    assert run_guarded(app, ["report", "funnel", "--unit", "people", "--database-url", db_url]) == 1
    assert "--unit" in capsys.readouterr().err


def _sign_in(client, services, monkeypatch) -> None:
    from argon2 import PasswordHasher

    from leadflow.services import users as user_service

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    user_service.create_user(
        services.engine,
        email="exec@example.com",
        password="correct horse battery",
        role="executive",
        name="Exec",
        now=T0,
    )
    client.headers.pop("Authorization", None)
    login = client.get("/login").text
    token = login.split('name="csrf_token" value="')[1].split('"')[0]
    r = client.post(
        "/login",
        data={
            "email": "exec@example.com",
            "password": "correct horse battery",
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert r.status_code == 303


def _cell_html(html: str, row: str, col: str) -> str:
    part = html.split(row, 1)[1].split(f'data-col="{col}">', 1)[1]
    return part.split("</td>", 1)[0]


def _cell(html: str, row: str, col: str) -> str:
    """The text a reader sees in one cell, whatever link or emphasis wraps it."""
    return re.sub(r"<[^>]+>", "", _cell_html(html, row, col))


def test_kpi_page_shows_the_same_deal_figures_and_no_cross_currency_sum(
    history, client, services, monkeypatch
):
    _sign_in(client, services, monkeypatch)
    page = client.get(
        "/kpis", params={"role": "executive", "from": "2025-01-01", "to": "2025-09-30"}
    )
    assert page.status_code == 200, page.text[:500]
    text = " ".join(page.text.split())
    # Two currencies: the won revenue and pipeline tiles show no summed amount.
    won_tile = text.split("Won revenue")[1].split('kpi-value">')[1].split("<")[0]
    assert won_tile == "–"
    # The forecast's open deals are the deals open now, as the API and CLI count them.
    open_now = sum(d["closed_at"] is None for d in history)
    assert f"{open_now} open deals · – · weighted –" in text


def test_funnel_page_counts_deals_like_the_api(history, api, client, services, monkeypatch):
    params = {"from": FROM.date().isoformat(), "to": TO.date().isoformat(), "unit": "deal"}
    body = api.get("/api/reports/funnel", params=params).json()
    _sign_in(client, services, monkeypatch)
    # The page's "to" day is included: the same period is from .. TO - 1 day.
    shown = {**params, "to": (TO - timedelta(days=1)).date().isoformat()}
    page = client.get("/funnel", params=shown)
    assert page.status_code == 200, page.text[:500]
    html = page.text
    for row in body["stages"]:
        mark = f'<tr data-stage="{row["stage"]}">'
        for col in ("balance_start", "flow_in", "flow_out", "balance_end"):
            assert _cell(html, mark, col).strip() == f"{row[col]:,}"
            if row[col]:  # a non-zero figure opens the deals behind it
                assert 'href="/deals?' in _cell_html(html, mark, col)
        assert _cell(html, mark, "amount_end").strip() == "–"  # two currencies
    assert 'id="deal-currencies"' in html
    for code in ("EUR", "USD"):
        assert f'<tr data-currency="{code}">' in html
    # An unknown unit is refused with its reason; the lead funnel is shown.
    page = client.get("/funnel", params={**shown, "unit": "<b>x"})
    assert page.status_code == 400 and "&lt;b&gt;x" in page.text and "<b>x" not in page.text
    assert 'id="funnel-table"' in page.text
