"""CRM history backfill through the real CLI, on SQLite and PostgreSQL (issue 14).

The main test generates a Salesforce opportunities export of more than 5,000 deals over two
years (several deals per person, one person with two open deals at once, ``-`` and
``Select`` placeholders, blank e-mails, custom columns, a currency column, amounts with
thousands separators and a ``$``, Salesforce's date formats, a company-specific stage name),
imports it with ``leadflow import opportunities`` and checks, against values computed
directly from the generated rows (never through leadflow): won revenue, win rate, average,
median and p90 sales cycle, deals per stage and open pipeline in the pipeline report and the
executive KPIs; every stage-log entry the deals wrote at the deal's own dates; a re-import
changing nothing; one deal's update touching no other deal. Smaller tests cover HubSpot and
Pipedrive column sets, accounts, activities, a bad and hostile file, and the CRM update API's
open deal with a past created date.
"""

from __future__ import annotations

import csv
import json
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from leadflow.adapters.db.tables import (
    accounts,
    events,
    lead_states,
    leads,
    opportunities,
    opportunity_contacts,
    sales_actions,
    stage_changes,
)
from leadflow.bootstrap import Services
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services.reports import Period, kpis, load_store, pipeline_report

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
START = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
SF_HEADERS = [
    "Id",
    "Name",
    "AccountId",
    "AccountName",
    "ContactEmail",
    "ContactRole",
    "Amount",
    "CurrencyIsoCode",
    "StageName",
    "CreatedDate",
    "CloseDate",
    "LossReason",
    "OwnerId",
    "Product",
    "Region__c",
    "Seats__c",
    "Renewal__c",
    "Signed_On__c",
]
OPEN_STAGES = ["Prospecting", "Qualification", "Negotiation/Review"]
LOSS = {"Price": "price", "Competitor": "competitor", "No Decision": "no_decision"}
LOSS_OTHER = ["-", "Budget cut", ""]  # placeholder, unknown reason, blank -> "other"


@dataclass
class Deal:
    id: str
    email: str | None
    account: str
    account_id: str
    outcome: str  # open | won | lost
    stage_name: str
    opened: datetime
    close_day: date
    amount: float
    loss: str = ""
    role: str = ""
    product: str = "Core"
    region: str | None = None
    seats: int | None = None
    renewal: bool | None = None
    signed_on: date | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def closed(self) -> datetime | None:
        if self.outcome == "open":
            return None
        return datetime(self.close_day.year, self.close_day.month, self.close_day.day, tzinfo=UTC)

    def row(self) -> list[str]:
        amount = f"{self.amount:,.2f}"
        if int(self.amount) % 7 == 0:
            amount = "$" + amount
        return [
            self.id,
            f"{self.account} - {self.id[-6:]}",
            self.account_id,
            self.account,
            self.email or "",
            self.role,
            amount,
            "USD",
            self.stage_name,
            self.opened.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
            self.close_day.isoformat(),
            self.loss,
            f"0055g00000{len(self.account) % 7:04d}XyZAA",
            self.product,
            "Select" if self.region is None else self.region,
            "" if self.seats is None else f"{self.seats:,}",
            "" if self.renewal is None else ("true" if self.renewal else "false"),
            "-" if self.signed_on is None else self.signed_on.isoformat(),
        ]


TWIN = "twin@twinco.example"


def generate(seed: int = 14, people: int = 1_750) -> list[Deal]:
    """More than 5,000 deals created over two years (2024-01 .. 2025-10), every close
    before ``AS_OF``; a person's deal dates never coincide (the stage log is exact)."""
    rnd = random.Random(seed)
    deals: list[Deal] = []
    n = 0

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"0065g{n:08d}AbCAQ"

    for p in range(people):
        email: str | None = f"buyer{p}@acct{p % 420}.example"
        if p % 60 == 7:
            email = None  # CRM-only deals: no contact e-mail in the export
        used: set[datetime] = set()
        for _ in range(1 + rnd.randrange(5)):
            while True:
                opened = START + timedelta(
                    days=rnd.randrange(0, 660), minutes=rnd.randrange(0, 9 * 60)
                )
                close_day = (opened + timedelta(days=rnd.randrange(1, 120))).date()
                midnight = datetime(close_day.year, close_day.month, close_day.day, tzinfo=UTC)
                if opened not in used and midnight not in used:
                    used |= {opened, midnight}
                    break
            outcome = rnd.choices(["won", "lost", "open"], weights=[3, 5, 2])[0]
            if outcome == "won":
                stage = rnd.choice(["Closed Won", "Closed Won", "Contract Signed"])
            elif outcome == "lost":
                stage = "Closed Lost"
            else:
                stage = rnd.choice(OPEN_STAGES)
            loss = ""
            if outcome == "lost":
                loss = rnd.choice([*LOSS, *LOSS, *LOSS_OTHER])
            deals.append(
                Deal(
                    id=next_id(),
                    email=email,
                    account=f"Account {p % 420}",
                    account_id=f"0015g{p % 420:08d}AbCAQ",
                    outcome=outcome,
                    stage_name=stage,
                    opened=opened,
                    close_day=close_day,
                    amount=rnd.randrange(1_000, 250_000) + rnd.choice([0, 0.5, 0.25]),
                    loss=loss,
                    role=rnd.choice(["", "Decision Maker", "Economic Buyer", "Evaluator"]),
                    product=rnd.choice(["Core", "Analytics", "Platform"]),
                    region=rnd.choice(["EMEA", "APAC", "Americas", None]),
                    seats=rnd.choice([None, 5, 40, 1_200]),
                    renewal=rnd.choice([True, False, None]),
                    signed_on=rnd.choice([None, close_day]),
                )
            )
    # One person with two deals open at once (A then B), both still open.
    for day in (date(2025, 2, 5), date(2025, 3, 11)):
        deals.append(
            Deal(
                id=next_id(),
                email=TWIN,
                account="Twin Co",
                account_id="0015gTWIN0000AbCAQ",
                outcome="open",
                stage_name="Negotiation/Review",
                opened=datetime(day.year, day.month, day.day, 10, tzinfo=UTC),
                close_day=date(2026, 6, 30),
                amount=48_000.0 if day.month == 2 else 12_500.5,
            )
        )
    return deals


def write_salesforce(path: Path, deals: list[Deal]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(SF_HEADERS)
        for d in sorted(deals, key=lambda d: d.id, reverse=True):  # id order, not by date
            w.writerow(d.row())
    return path


def cli(db_url: str, capsys: Any, kind: str, path: Path, *extra: str) -> dict[str, Any]:
    code = run_guarded(
        app,
        [
            *("import", kind, str(path), *extra, "--format", "json", "--no-progress"),
            *("--database-url", db_url),
        ],
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    summary: dict[str, Any] = json.loads(out)[0]
    return summary


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def snapshot(services: Services) -> dict[str, Any]:
    """Every stored row the backfill writes, in a comparable form."""
    with services.engine.connect() as conn:
        out: dict[str, Any] = {}
        for table, key in (
            (opportunities, opportunities.c.external_id),
            (opportunity_contacts, opportunity_contacts.c.id),
            (sales_actions, sales_actions.c.action_id),
            (accounts, accounts.c.id),
            (leads, leads.c.id),
        ):
            out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(key))]
        out["stage_changes"] = [
            tuple(r)
            for r in conn.execute(
                select(
                    stage_changes.c.lead_id,
                    stage_changes.c.from_stage,
                    stage_changes.c.to_stage,
                    stage_changes.c.at,
                    stage_changes.c.rule,
                ).order_by(stage_changes.c.lead_id, stage_changes.c.at, stage_changes.c.id)
            )
        ]
        out["events"] = conn.execute(select(func.count()).select_from(events)).scalar_one()
    return out


def stored_deals(services: Services) -> dict[str, dict[str, Any]]:
    with services.engine.connect() as conn:
        rows = conn.execute(select(opportunities)).mappings().all()
    return {r["external_id"]: dict(r) for r in rows}


def days(deal: Deal) -> float:
    assert deal.closed is not None
    return (deal.closed - deal.opened).total_seconds() / 86_400


def test_salesforce_export_of_5000_deals_loads_as_history(services, db_url, tmp_path, capsys):
    deals = generate()
    assert len(deals) >= 5_000
    path = write_salesforce(tmp_path / "opportunities.csv", deals)

    summary = cli(db_url, capsys, "opportunities", path, "--stage", "Contract Signed=won")
    with capsys.disabled():
        print(
            f"\nbackfill: {summary['rows_read']} deals in {summary['seconds']} s "
            f"({summary['rows_per_second']} rows/s) on {services.engine.dialect.name}"
        )
    assert summary["rejected"] == 0, summary
    assert summary["created"] == len(deals)
    assert summary["columns"]["Region__c"] == "attributes.region__c (text)"
    assert summary["columns"]["Seats__c"] == "attributes.seats__c (number)"
    assert summary["columns"]["Renewal__c"] == "attributes.renewal__c (boolean)"
    assert summary["columns"]["Signed_On__c"] == "attributes.signed_on__c (date)"

    # Every deal as the file gives it.
    stored = stored_deals(services)
    assert len(stored) == len(deals)
    for d in deals:
        s = stored[d.id]
        assert s["stage"] == d.outcome, d
        assert s["amount"] == d.amount
        assert s["currency"] == "USD"
        assert _utc(s["created_at"]) == d.opened
        assert _utc(s["closed_at"]) == d.closed
        assert s["expected_close"] == (d.close_day if d.outcome == "open" else None)
        assert s["product"] == d.product
        if d.outcome == "lost":
            assert s["lost_reason"] == LOSS.get(d.loss, "other")
        attrs = s["attributes"]
        assert attrs.get("region__c") == d.region
        assert attrs.get("seats__c") == d.seats
        assert attrs.get("renewal__c") == d.renewal
        assert attrs.get("signed_on__c") == (d.signed_on.isoformat() if d.signed_on else None)
        assert (s["lead_id"] is None) == (d.email is None)

    # Reports equal what the file says.
    won = [d for d in deals if d.outcome == "won"]
    lost = [d for d in deals if d.outcome == "lost"]
    open_ = [d for d in deals if d.outcome == "open"]
    won_revenue = sum(d.amount for d in won)
    first_close = min(d.close_day for d in won + lost)
    months = (AS_OF.year - first_close.year) * 12 + AS_OF.month - first_close.month
    report = pipeline_report(services.engine, AS_OF, months=months)
    assert sum(m["actual"] for m in report["backtest"]["months"]) == pytest.approx(won_revenue)
    overall = report["win_rates"][0]
    assert (overall["won"], overall["closed"]) == (len(won), len(won) + len(lost))
    assert overall["win_rate"] == pytest.approx(len(won) / (len(won) + len(lost)))
    for outcome, group in (("won", won), ("lost", lost)):
        cycles = [days(d) for d in group]
        got = report["sales_cycle"][outcome]
        assert got["deals"] == len(cycles)
        assert got["mean_days"] == pytest.approx(statistics.fmean(cycles))
        assert got["median_days"] == pytest.approx(statistics.median(cycles))
        assert got["p90_days"] == pytest.approx(
            statistics.quantiles(cycles, n=10, method="inclusive")[8]
        )
    per_stage = {r["stage"]: r["deals"] for r in report["deals_per_stage"]}
    assert per_stage == {"won": len(won), "lost": len(lost), "open": len(open_)}
    with services.engine.connect() as conn:
        model = services.models.active(conn, AS_OF)
    exe = kpis(load_store(services.engine, model), Period(START, AS_OF), "executive")["kpis"]
    assert exe["won_revenue"] == pytest.approx(won_revenue)
    assert exe["won_deals"] == len(won)
    assert exe["pipeline_deals"] == len(open_)
    assert exe["pipeline_value"] == pytest.approx(sum(d.amount for d in open_))

    # The stage log, at the deals' own dates.
    check_stage_log(services, model, deals)

    # A re-import changes nothing: no row, no value, no stage change, not even updated_at.
    before = snapshot(services)
    again = cli(db_url, capsys, "opportunities", path, "--stage", "Contract Signed=won")
    assert (again["created"], again["updated"], again["rejected"]) == (0, 0, 0)
    assert again["unchanged"] == len(deals)
    assert again["stage_actions"] == 0
    assert snapshot(services) == before

    # One deal's update (A of the person with two open deals is won) touches no other deal.
    a, b = [d for d in deals if d.email == TWIN]
    won_a = replace(a, outcome="won", stage_name="Closed Won", close_day=date(2025, 12, 15))
    won_a.amount = 51_000.0
    changed = [won_a if d.id == a.id else d for d in deals]
    write_salesforce(path, changed)
    third = cli(db_url, capsys, "opportunities", path, "--stage", "Contract Signed=won")
    assert (third["created"], third["updated"], third["unchanged"]) == (0, 1, len(deals) - 1)
    after = stored_deals(services)
    for ext, row in before_deals(before).items():
        if ext != a.id:
            assert after[ext] == row, ext
    assert after[a.id]["stage"] == "won" and after[a.id]["amount"] == 51_000.0
    assert _utc(after[a.id]["closed_at"]) == datetime(2025, 12, 15, tzinfo=UTC)
    assert after[b.id]["stage"] == "open" and after[b.id]["amount"] == 12_500.5
    twin_log = log_of(services, TWIN)
    opp, won_stage = model.stage_for("opportunity"), model.stage_for("won")
    assert (opp, a.opened, "actions.open_deal") in twin_log
    assert (won_stage, datetime(2025, 12, 15, tzinfo=UTC), "actions.win") in twin_log
    # ...and the other people's logs are as they were.
    others = [c for c in before["stage_changes"] if c[0] != lead_id(services, TWIN)]
    now_others = [c for c in snapshot(services)["stage_changes"] if c[0] != lead_id(services, TWIN)]
    assert now_others == others


def before_deals(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [c.name for c in opportunities.columns]
    return {
        row[names.index("external_id")]: dict(zip(names, row, strict=True))
        for row in snap["opportunities"]
    }


def lead_id(services: Services, email: str) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(select(leads.c.id).where(leads.c.email == email)).scalar_one())


def log_of(services: Services, email: str) -> list[tuple[str, datetime, str]]:
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(stage_changes.c.to_stage, stage_changes.c.at, stage_changes.c.rule)
            .join(leads, leads.c.id == stage_changes.c.lead_id)
            .where(leads.c.email == email)
            .order_by(stage_changes.c.at, stage_changes.c.id)
        ).all()
    return [(r.to_stage, _utc(r.at), r.rule) for r in rows]


def check_stage_log(services: Services, model: Any, deals: list[Deal]) -> None:
    """Per person, from the file alone: the first deal's created date puts it at the
    opportunity stage; its first won deal's close date at the won stage (once); a lost
    deal's close date moves it (by the model's ``lose``) exactly when no other deal of
    the person was open then and none was won before."""
    opp, won_stage = model.stage_for("opportunity"), model.stage_for("won")
    by_person: dict[str, list[Deal]] = defaultdict(list)
    for d in deals:
        if d.email is not None:
            by_person[d.email].append(d)
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(
                leads.c.email,
                stage_changes.c.to_stage,
                stage_changes.c.at,
                stage_changes.c.rule,
            ).join(leads, leads.c.id == stage_changes.c.lead_id)
        ).all()
    logs: dict[str, list[tuple[str, datetime, str]]] = defaultdict(list)
    for r in rows:
        logs[r.email].append((r.to_stage, _utc(r.at), r.rule))
    assert set(by_person) <= set(logs)
    for email, mine in by_person.items():
        log = logs[email]
        first_open = min(d.opened for d in mine)
        assert (opp, first_open, "actions.open_deal") in log, email
        opens = {at for _, at, rule in log if rule == "actions.open_deal"}
        assert opens <= {d.opened for d in mine}, email
        wins = [(to, at) for to, at, rule in log if rule == "actions.win"]
        won = [d for d in mine if d.outcome == "won"]
        first_win = min((d.closed for d in won if d.closed), default=None)
        assert wins == ([(won_stage, first_win)] if first_win else []), email
        expected_losses = set()
        for d in mine:
            if d.outcome != "lost" or d.closed is None:
                continue
            c = d.closed
            other_open = any(
                o is not d and o.opened <= c and (o.closed is None or o.closed > c) for o in mine
            )
            won_before = first_win is not None and first_win < c
            if not other_open and not won_before:
                expected_losses.add(c)
        losses = {at for _, at, rule in log if rule == "actions.lose"}
        assert losses == expected_losses, email


def test_a_bad_file_is_rejected_with_reasons_and_stores_nothing_wrong(
    services, db_url, tmp_path, capsys
):
    good = tmp_path / "good.csv"
    with open(good, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "Id",
                "Name",
                "ContactEmail",
                "Amount",
                "CurrencyIsoCode",
                "StageName",
                "CreatedDate",
                "CloseDate",
                "LossReason",
            ]
        )
        w.writerow(
            [
                "006WON",
                "Won deal",
                "w@x.example",
                "1,000",
                "USD",
                "Closed Won",
                "2024-01-09T09:30:00.000+0000",
                "2024-02-01",
                "",
            ]
        )
    cli(db_url, capsys, "opportunities", good)
    before = stored_deals(services)["006WON"]

    bad = tmp_path / "bad.csv"
    rows = [
        # (values..., the column the reason names)
        [
            "006A",
            "ok",
            "a@x.example",
            "2,500.00",
            "EUR",
            "Prospecting",
            "2024-03-01T09:00:00.000+0000",
            "2024-05-01",
            "",
        ],
        [
            "006B",
            "bad date",
            "b@x.example",
            "100",
            "USD",
            "Closed Won",
            "yesterday",
            "2024-05-01",
            "",
        ],
        [
            "006C",
            "negative",
            "c@x.example",
            "-100",
            "USD",
            "Closed Won",
            "2024-03-01T09:00:00.000+0000",
            "2024-05-01",
            "",
        ],
        [
            "006D",
            "no currency",
            "d@x.example",
            "100",
            "",
            "Closed Won",
            "2024-03-01T09:00:00.000+0000",
            "2024-05-01",
            "",
        ],
        [
            "006E",
            "unknown stage",
            "e@x.example",
            "100",
            "USD",
            "Signed by CFO",
            "2024-03-01T09:00:00.000+0000",
            "2024-05-01",
            "",
        ],
        [
            "006F",
            "close before open",
            "f@x.example",
            "100",
            "USD",
            "Closed Lost",
            "2024-03-01T09:00:00.000+0000",
            "2024-02-01",
            "Price",
        ],
        [
            "006G",
            "bad email",
            "not-an-email",
            "100",
            "USD",
            "Closed Won",
            "2024-03-01T09:00:00.000+0000",
            "2024-05-01",
            "",
        ],
        [
            "006H",
            "no close",
            "h@x.example",
            "100",
            "USD",
            "Closed Won",
            "2024-03-01T09:00:00.000+0000",
            "",
            "",
        ],
        [
            "006WON",
            "reopened as lost",
            "w@x.example",
            "1,000",
            "USD",
            "Closed Lost",
            "2024-01-09T09:30:00.000+0000",
            "2024-02-01",
            "Price",
        ],
        [
            "'; DROP TABLE opportunities; --",
            '=HYPERLINK("http://evil")',
            "i@x.example",
            "<b>9</b>",
            "USD",
            "Prospecting",
            "2024-03-01T09:00:00.000+0000",
            "",
            "",
        ],
        [
            "'; DELETE FROM leads; --",
            "<script>alert(1)</script>",
            "j@x.example",
            "10",
            "USD",
            "Prospecting",
            "2024-03-01T09:00:00.000+0000",
            "",
            "",
        ],
    ]
    with open(bad, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "Id",
                "Name",
                "ContactEmail",
                "Amount",
                "CurrencyIsoCode",
                "StageName",
                "CreatedDate",
                "CloseDate",
                "LossReason",
            ]
        )
        w.writerows(rows)
    summary = cli(db_url, capsys, "opportunities", bad)
    assert summary["created"] == 2 and summary["rejected"] == 9, summary
    with open(summary["rejects_file"], encoding="utf-8", newline="") as f:
        reasons = {r["Id"]: r["reason"] for r in csv.DictReader(f)}
    assert reasons["006B"].startswith("CreatedDate: 'yesterday' is not a date")
    assert reasons["006C"] == "Amount: must not be negative"
    assert reasons["006D"].startswith("CurrencyIsoCode: missing currency")
    assert reasons["006E"].startswith("StageName: unknown stage 'Signed by CFO'")
    assert reasons["006F"].startswith("CloseDate: 2024-02-01 is before the deal was created")
    assert reasons["006G"].startswith("ContactEmail: invalid email")
    assert reasons["006H"].startswith("CloseDate: missing close date for a won deal")
    assert "already won" in reasons["006WON"]
    # The hostile id is a reject only for its amount; its formula cell is neutralised.
    hostile = next(k for k in reasons if "DROP TABLE" in k)
    assert reasons[hostile] == "Amount: '<b>9</b>' is not an amount"
    with open(summary["rejects_file"], encoding="utf-8") as f:
        assert "'=HYPERLINK" in f.read()
    stored = stored_deals(services)
    assert set(stored) == {"006WON", "006A", "'; DELETE FROM leads; --"}
    assert stored["006WON"] == before
    assert stored["'; DELETE FROM leads; --"]["name"] == "<script>alert(1)</script>"
    assert stored["006A"]["currency"] == "EUR" and stored["006A"]["amount"] == 2_500.0
    # Without a currency column nothing is assumed: --currency says it.
    assert cli(db_url, capsys, "opportunities", bad, "--currency", "usd")["created"] == 1
    assert stored_deals(services)["006D"]["currency"] == "USD"


def test_hubspot_deals_export(services, db_url, tmp_path, capsys):
    path = tmp_path / "hubspot-deals.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "Record ID",
                "Deal Name",
                "Deal Stage",
                "Amount",
                "Create Date",
                "Close Date",
                "Associated Company",
                "Deal owner",
                "Closed Lost Reason",
                "Pipeline",
                "Associated Contact",
            ]
        )
        w.writerow(
            [
                "9001",
                "Big one",
                "closedwon",
                "12,000",
                "2023-01-09 09:30",
                "2023-03-01 00:00",
                "Acme",
                "Jane Rep",
                "",
                "Sales Pipeline",
                "Ann Lee (ann@acme.example)",
            ]
        )
        w.writerow(
            [
                "9002",
                "Small",
                "closedlost",
                "€ 3.500,00",
                "2023-02-01 10:00",
                "2023-04-02",
                "Acme",
                "Jane Rep",
                "Competitor",
                "Sales Pipeline",
                "bo@acme.example",
            ]
        )
        w.writerow(
            [
                "9003",
                "Open",
                "appointmentscheduled",
                "",
                "2023-05-01 10:00",
                "2023-09-01",
                "Beta",
                "Jim Rep",
                "",
                "Sales Pipeline",
                "",
            ]
        )
    summary = cli(db_url, capsys, "opportunities", path, "--currency", "EUR")
    assert (summary["created"], summary["rejected"]) == (3, 0), summary
    deals = stored_deals(services)
    assert deals["9001"]["stage"] == "won" and deals["9001"]["amount"] == 12_000
    assert deals["9002"]["stage"] == "lost" and deals["9002"]["amount"] == 3_500
    assert deals["9002"]["currency"] == "EUR" and deals["9002"]["lost_reason"] == "competitor"
    assert deals["9003"]["lead_id"] is None and deals["9003"]["amount"] is None
    assert deals["9003"]["expected_close"] == date(2023, 9, 1)
    assert deals["9001"]["owner"] == "Jane Rep"
    assert deals["9001"]["attributes"]["pipeline"] == "Sales Pipeline"
    with services.engine.connect() as conn:
        model = services.models.active(conn, AS_OF)
        names = {
            r.external_id: r.name
            for r in conn.execute(
                select(opportunities.c.external_id, accounts.c.name).join(
                    accounts, accounts.c.id == opportunities.c.account_id
                )
            )
        }
    assert names == {"9001": "Acme", "9002": "Acme", "9003": "Beta"}
    ann = log_of(services, "ann@acme.example")
    assert (model.stage_for("won"), datetime(2023, 3, 1, tzinfo=UTC), "actions.win") in ann


def test_pipedrive_deals_export(services, db_url, tmp_path, capsys):
    path = tmp_path / "pipedrive-deals.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "Deal - ID",
                "Deal - Title",
                "Deal - Value",
                "Deal - Currency",
                "Deal - Status",
                "Deal - Stage",
                "Deal - Deal created",
                "Deal - Won time",
                "Deal - Lost time",
                "Deal - Lost reason",
                "Deal - Organization",
                "Person - Email",
                "Deal - Owner",
                "Deal - Source",
            ]
        )
        w.writerow(
            [
                "17",
                "Alpha",
                "5000",
                "GBP",
                "won",
                "Proposal Made",
                "2023-01-09 09:30:00",
                "2023-02-10 16:00:00",
                "",
                "",
                "Alpha Ltd",
                "al@alpha.example",
                "Kim",
                "Web",
            ]
        )
        w.writerow(
            [
                "18",
                "Beta",
                "1,250.50",
                "GBP",
                "lost",
                "Qualified",
                "2023-03-09 09:30:00",
                "",
                "2023-03-20 12:00:00",
                "No decision",
                "Alpha Ltd",
                "al@alpha.example",
                "Kim",
                "Select",
            ]
        )
        w.writerow(
            [
                "19",
                "Gamma",
                "700",
                "GBP",
                "open",
                "Contact Made",
                "2023-04-01 08:00:00",
                "",
                "",
                "",
                "Gamma",
                "ga@gamma.example",
                "Kim",
                "Referral",
            ]
        )
    summary = cli(db_url, capsys, "opportunities", path)
    assert (summary["created"], summary["rejected"]) == (3, 0), summary
    deals = stored_deals(services)
    assert deals["17"]["stage"] == "won"
    assert _utc(deals["17"]["closed_at"]) == datetime(2023, 2, 10, 16, tzinfo=UTC)
    assert deals["18"]["stage"] == "lost" and deals["18"]["lost_reason"] == "no_decision"
    assert _utc(deals["18"]["closed_at"]) == datetime(2023, 3, 20, 12, tzinfo=UTC)
    assert deals["19"]["stage"] == "open" and deals["19"]["currency"] == "GBP"
    assert deals["17"]["attributes"]["deal_source"] == "Web"
    assert "deal_source" not in deals["18"]["attributes"]  # "Select" is no value
    with services.engine.connect() as conn:
        model = services.models.active(conn, AS_OF)
    # The customer's later deal closes alone: the person stays won.
    al = log_of(services, "al@alpha.example")
    assert [rule for _, _, rule in al if rule.startswith("actions.")] == [
        "actions.open_deal",
        "actions.win",
    ]
    ga = log_of(services, "ga@gamma.example")
    assert (model.stage_for("opportunity"), datetime(2023, 4, 1, 8, tzinfo=UTC)) in [
        (to, at) for to, at, _ in ga
    ]


def test_accounts_then_deals_attach_to_them(services, db_url, tmp_path, capsys):
    path = tmp_path / "accounts.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "Id",
                "Name",
                "Website",
                "Industry",
                "NumberOfEmployees",
                "AnnualRevenue",
                "BillingCountry",
                "OwnerId",
                "Tier__c",
                "Founded__c",
            ]
        )
        w.writerow(
            [
                "001A",
                "Acme",
                "https://www.acme.example/",
                "Software",
                "1,200",
                "$12,000,000",
                "Germany",
                "005X",
                "Gold",
                "1999",
            ]
        )
        w.writerow(["001B", "Beta", "-", "Select", "", "-", "Select", "005Y", "Silver", "-"])
    summary = cli(db_url, capsys, "accounts", path)
    assert (summary["created"], summary["rejected"]) == (2, 0), summary
    assert summary["columns"]["Tier__c"] == "traits.tier__c (text)"
    assert summary["columns"]["Founded__c"] == "traits.founded__c (number)"
    with services.engine.connect() as conn:
        rows = {
            r.external_id: r
            for r in conn.execute(select(accounts).order_by(accounts.c.id)).mappings()
        }
    acme = rows["001A"]
    assert (acme["name"], acme["domain"], acme["industry"]) == ("Acme", "acme.example", "Software")
    assert (acme["employee_count"], acme["country"], acme["owner"]) == (1200, "Germany", "005X")
    assert acme["traits"] == {
        "revenue": 12_000_000,
        "tier__c": "Gold",
        "founded__c": 1999,
        "website": "https://www.acme.example/",
    }
    assert rows["001B"]["industry"] is None and rows["001B"]["traits"] == {"tier__c": "Silver"}
    before = snapshot(services)
    again = cli(db_url, capsys, "accounts", path)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)
    assert snapshot(services) == before

    deals = tmp_path / "deals.csv"
    with open(deals, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Id", "AccountId", "Amount", "CurrencyIsoCode", "StageName", "CreatedDate"])
        w.writerow(["006Z", "001A", "10", "USD", "Prospecting", "2024-01-09T09:30:00.000+0000"])
    summary = cli(db_url, capsys, "opportunities", deals)
    assert (summary["created"], summary["accounts_created"]) == (1, 0)
    assert stored_deals(services)["006Z"]["account_id"] == acme["id"]


def test_activities_are_touches_at_their_dates(services, db_url, tmp_path, capsys):
    path = tmp_path / "activities.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["Activity Date", "Type", "Channel", "Campaign", "Subject", "Email", "Duration__c"]
        )
        w.writerow(
            [
                "2024-02-01 09:30",
                "Webinar Attended",
                "webinar",
                "Q1 Webinar",
                "Pipeline 101",
                "ann@acme.example",
                "45",
            ]
        )
        w.writerow(
            [
                "2024-02-03T10:00:00.000+0000",
                "Email Click",
                "email",
                "Nurture 3",
                "Case study",
                "ann@acme.example",
                "-",
            ]
        )
        w.writerow(["2/5/2024", "Ad Click", "cpc", "Brand", "", "bo@beta.example", ""])
        w.writerow(["2024-02-06", "Meeting", "", "", "Demo", "", ""])
        w.writerow(["soon", "Meeting", "", "", "Demo", "cy@c.example", ""])
        w.writerow(["2024-02-07", "Meeting", "", "", "=cmd|' /C calc'!A0", "not-mail", ""])
    summary = cli(db_url, capsys, "activities", path)
    assert (summary["created"], summary["rejected"], summary["leads_created"]) == (3, 3, 2)
    with open(summary["rejects_file"], encoding="utf-8", newline="") as f:
        rejected = list(csv.DictReader(f))
    assert [r["reason"] for r in rejected] == [
        "Email: missing email",
        "Activity Date: 'soon' is not a date (or not between 1900 and 2999)",
        "Email: invalid email 'not-mail'",
    ]
    assert rejected[2]["Subject"].startswith("'=cmd")  # neutralised in the rejects file
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(
                events.c.name,
                events.c.occurred_at,
                events.c.channel,
                events.c.utm_campaign,
                events.c.properties,
                leads.c.email,
            )
            .join(leads, leads.c.id == events.c.lead_id)
            .where(events.c.type == "track")
            .order_by(events.c.occurred_at)
        ).all()
    got = [(r.name, _utc(r.occurred_at), r.channel, r.utm_campaign, r.email) for r in rows]
    assert got == [
        (
            "webinar_attended",
            datetime(2024, 2, 1, 9, 30, tzinfo=UTC),
            "webinar",
            "Q1 Webinar",
            "ann@acme.example",
        ),
        (
            "email_click",
            datetime(2024, 2, 3, 10, tzinfo=UTC),
            "email",
            "Nurture 3",
            "ann@acme.example",
        ),
        ("ad_click", datetime(2024, 2, 5, tzinfo=UTC), "paid_search", "Brand", "bo@beta.example"),
    ]
    assert rows[0].properties["duration__c"] == 45
    assert rows[0].properties["content"] == "Pipeline 101"
    # Scored at their dates: the webinar counted in ann's fold.
    with services.engine.connect() as conn:
        engagement = conn.execute(
            select(lead_states.c.engagement)
            .join(leads, leads.c.id == lead_states.c.lead_id)
            .where(leads.c.email == "ann@acme.example")
        ).scalar_one()
    assert engagement is not None
    before = snapshot(services)
    again = cli(db_url, capsys, "activities", path)
    assert (again["created"], again["unchanged"]) == (0, 3)
    assert snapshot(services) == before


def test_crm_update_of_a_deal_opened_in_the_past_moves_its_person_then(
    client, admin_token, write_key, services
):
    client.headers["Authorization"] = f"Bearer {admin_token}"
    r = client.post(
        "/v1/identify",
        json={"userId": "u1", "traits": {"email": "early@x.example"}},
        auth=(write_key, ""),
    )
    assert r.status_code == 200, r.text
    r = client.post(
        "/api/crm/updates",
        json={
            "external_id": "crm-open-1",
            "update_id": "u-1",
            "lead_email": "early@x.example",
            "stage": "open",
            "amount": 100,
            "currency": "USD",
            "created_at": "2024-02-05T10:00:00Z",
        },
    )
    assert r.status_code == 200, r.text
    with services.engine.connect() as conn:
        model = services.models.active(conn, AS_OF)
    log = log_of(services, "early@x.example")
    assert (model.stage_for("opportunity"), datetime(2024, 2, 5, 10, tzinfo=UTC)) in [
        (to, at) for to, at, _ in log
    ]


def test_a_report_with_a_row_per_contact_role_is_one_deal(services, db_url, tmp_path, capsys):
    path = tmp_path / "contact-roles.csv"
    head = ["Id", "Amount", "CurrencyIsoCode", "StageName", "CreatedDate", "CloseDate"]
    deal = ["006R", "9,000", "USD", "Closed Won", "2024-01-09T09:30:00.000+0000", "2024-03-01"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*head, "ContactEmail", "Role"])
        w.writerow([*deal, "cfo@r.example", "Economic Buyer"])
        w.writerow([*deal, "it@r.example", "Technical Buyer"])
        w.writerow([*deal[:1], "9,999", *deal[2:], "x@r.example", "User"])  # not the same deal
    summary = cli(db_url, capsys, "opportunities", path)
    assert (summary["created"], summary["rejected"], summary["contacts_added"]) == (1, 1, 2)
    with services.engine.connect() as conn:
        roles = {
            r.email: r.role
            for r in conn.execute(
                select(leads.c.email, opportunity_contacts.c.role).join(
                    leads, leads.c.id == opportunity_contacts.c.lead_id
                )
            )
        }
    assert roles == {"cfo@r.example": "economic_buyer", "it@r.example": "technical_evaluator"}
    assert stored_deals(services)["006R"]["lead_id"] == lead_id(services, "cfo@r.example")
    again = cli(db_url, capsys, "opportunities", path)
    assert (again["created"], again["updated"], again["contacts_added"]) == (0, 0, 0)
