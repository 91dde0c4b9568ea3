"""Real-shaped HubSpot and Salesforce lead exports in, what the file says stored (issue 14).

Each test writes an export the way the CRM does (its column names and date format,
``Select`` / ``-`` / ``--None--`` placeholders, rows without an e-mail, people without a
company, custom columns) and checks every stored field against the generator's own rows,
read directly, never through leadflow: through the service and through the real CLI, on
SQLite and PostgreSQL. A second import changes nothing.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from leadflow.adapters.db.tables import accounts, events, identities, lead_states, leads
from leadflow.bootstrap import Services
from leadflow.core.config import load_model
from leadflow.core.segments import Criteria
from leadflow.core.tracking import parse_batch
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services.importer import ImportSummary, import_leads
from leadflow.services.ingest import ingest
from leadflow.services.lifecycle import recompute_all
from leadflow.services.lifecycle.models import default_source, install_model
from leadflow.services.segments import members_query

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
INDUSTRIES = ["Software", "Manufacturing", "Retail", "Healthcare"]
COUNTRIES = ["United States", "Germany", "South Korea"]
PLANS = ["Enterprise", "Pro", "Starter"]
SOURCES = ["Organic Search", "Paid Search", "Offline Sources", "Referrals"]


@dataclass
class Person:
    """One generated row; ``None`` means the export shows a placeholder (or nothing)."""

    record_id: str
    first: str
    last: str
    email: str | None
    title: str
    company: str | None
    industry: str | None
    employees: int | None
    country: str | None
    source: str | None
    created: datetime
    revenue: int | None
    webinar: bool | None
    plan: str | None
    status: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def people(seed: int, n: int, id_of: Callable[[int], str]) -> list[Person]:
    rng = random.Random(seed)
    found = []
    for i in range(n):
        has_company = i % 3 != 0
        found.append(
            Person(
                record_id=id_of(i),
                first=f"First{i}",
                last=f"Last{i}",
                email=None if i % 7 == 3 else f"person{i}.s{seed}@co{i % 5}.example",
                title=rng.choice(["Analyst", "Buyer", "Coordinator"]),
                company=f"Company {i % 5} s{seed}" if has_company else None,
                industry=rng.choice([*INDUSTRIES, None]),
                employees=rng.choice([12, 80, 400, 2500, None]),
                country=rng.choice([*COUNTRIES, None]),
                source=rng.choice([*SOURCES, None]),
                created=T0 - timedelta(days=rng.randint(1, 700), minutes=rng.randint(0, 1439)),
                revenue=rng.choice([None, 250_000, 1_500_000, 12_000_000]),
                webinar=rng.choice([True, False, None]),
                plan=rng.choice([*PLANS, None]),
                status=rng.choice(["NEW", "OPEN", None]),
            )
        )
    # The same company facts with and without a company: the fit must not differ.
    a, b = found[1], found[0]
    b.industry, b.employees, b.country, b.title = a.industry, a.employees, a.country, a.title
    b.industry, a.industry = "Software", "Software"
    b.employees, a.employees = 400, 400
    return found


def _cell(value: Any, placeholder: str, fmt: Callable[[Any], str] = str) -> str:
    return placeholder if value is None else fmt(value)


def write_hubspot(path: Path, rows: list[Person]) -> Path:
    headers = [
        "Record ID",
        "First Name",
        "Last Name",
        "Email",
        "Job Title",
        "Company Name",
        "Industry",
        "Number of Employees",
        "Country/Region",
        "Lead Status",
        "Original Source",
        "Create Date",
        "Annual Revenue",
        "Attended Webinar",
        "Preferred Plan",
    ]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(headers)
        for p in rows:
            w.writerow(
                [
                    p.record_id,
                    p.first,
                    p.last,
                    p.email or "",
                    p.title,
                    p.company or "",
                    _cell(p.industry, "Select"),
                    _cell(p.employees, "", lambda v: f"{v:,}"),
                    _cell(p.country, "Select"),
                    _cell(p.status, "Select"),
                    _cell(p.source, "-"),
                    p.created.strftime("%Y-%m-%d %H:%M"),
                    _cell(p.revenue, "-"),
                    _cell(p.webinar, "Select", lambda v: "true" if v else "false"),
                    _cell(p.plan, "Select"),
                ]
            )
    return path


def write_salesforce(path: Path, rows: list[Person]) -> Path:
    headers = [
        "Lead ID",
        "First Name",
        "Last Name",
        "Title",
        "Company / Account",
        "Email",
        "Industry",
        "No. of Employees",
        "Country",
        "Lead Source",
        "Created Date",
        "Annual Revenue",
        "Attended Webinar",
        "Preferred Plan",
    ]
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(headers)
        for p in rows:
            w.writerow(
                [
                    p.record_id,
                    p.first,
                    p.last,
                    p.title,
                    p.company or "[not provided]",
                    p.email or "",
                    _cell(p.industry, "--None--"),
                    _cell(p.employees, ""),
                    _cell(p.country, ""),
                    _cell(p.source, "--None--"),
                    p.created.strftime("%-m/%-d/%Y"),
                    _cell(p.revenue, ""),
                    _cell(p.webinar, "", lambda v: "Yes" if v else "No"),
                    _cell(p.plan, "--None--"),
                ]
            )
    return path


EXPORTS = {
    "hubspot": (write_hubspot, lambda i: str(9_000_100 + i), "%Y-%m-%dT%H:%M:00", "create_date"),
    "salesforce": (write_salesforce, lambda i: f"00Q5g00000{i:05d}AB", "%Y-%m-%d", "created_date"),
}


def stored_leads(services: Services) -> dict[str, dict[str, Any]]:
    """Stored leads by e-mail, or by ``crm:<record id>`` for those without one."""
    with services.engine.connect() as conn:
        ids = {
            r.lead_id: r.value
            for r in conn.execute(
                select(identities.c.value, identities.c.lead_id).where(
                    identities.c.value.like("crm:%")
                )
            )
        }
        found = {}
        for r in conn.execute(
            select(leads, accounts.c.name.label("account"))
            .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
            .order_by(leads.c.id)
        ).mappings():
            found[r["email"] or ids[r["id"]]] = dict(r)
    return found


def check_stored(services: Services, rows: list[Person], kind: str) -> None:
    _, _, date_format, date_key = EXPORTS[kind]
    stored = stored_leads(services)
    assert len(stored) == len(rows)
    for p in rows:
        lead = stored[p.email or f"crm:{p.record_id}"]
        assert (lead["first_name"], lead["last_name"], lead["title"]) == (p.first, p.last, p.title)
        assert lead["source"] == p.source
        assert lead["account"] == p.company
        expected: dict[str, Any] = {
            "crm_id": p.record_id,
            date_key: p.created.strftime(date_format),
        }
        if kind == "hubspot" and p.status is not None:
            expected["lead_status"] = p.status
        for key, value in (
            ("annual_revenue", p.revenue),
            ("attended_webinar", p.webinar),
            ("preferred_plan", p.plan),
        ):
            if value is not None:
                expected[key] = value
        if p.company is None:  # no account: the lead keeps its company facts
            for key, value in (
                ("industry", p.industry),
                ("country", p.country),
                ("employees", p.employees),
            ):
                if value is not None:
                    expected[key] = value
        assert lead["attributes"] == expected, (p, lead["attributes"])
    with services.engine.connect() as conn:
        accounts_by_name = {r.name: r for r in conn.execute(select(accounts))}
    for p in rows:
        if p.company is not None:
            # The account's columns fill blanks: the first row of the company that says.
            first = next(q for q in rows if q.company == p.company)
            account = accounts_by_name[p.company]
            if first.industry is not None:
                assert account.industry == first.industry


def import_twice(
    services: Services, path: Path, run: Callable[[Path, datetime], ImportSummary]
) -> ImportSummary:
    summary = run(path, T0)
    with services.engine.connect() as conn:
        before = [
            [tuple(r) for r in conn.execute(select(t).order_by(t.c.id))]
            for t in (leads, accounts, events, identities)
        ]
    again = run(path, T0 + timedelta(days=1))
    with services.engine.connect() as conn:
        after = [
            [tuple(r) for r in conn.execute(select(t).order_by(t.c.id))]
            for t in (leads, accounts, events, identities)
        ]
    assert after == before
    assert (again.created, again.updated, again.rejected) == (0, 0, 0)
    assert again.unchanged == summary.created
    return summary


def via_service(services: Services) -> Callable[[Path, datetime], ImportSummary]:
    def run(path: Path, now: datetime) -> ImportSummary:
        return import_leads(
            services.engine, path, now=now, after=services.after_ingest, allow_without_email=True
        )

    return run


def via_cli(db_url: str, capsys: Any) -> Callable[[Path, datetime], ImportSummary]:
    def run(path: Path, now: datetime) -> ImportSummary:
        code = run_guarded(
            app,
            [
                *("import", "leads", str(path), "--without-email", "--format", "json"),
                *("--no-progress", "--database-url", db_url),
            ],
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        row = json.loads(out)[0]
        return ImportSummary(
            file=row["file"],
            encoding=row["encoding"],
            delimiter=",",
            rows_read=row["rows_read"],
            created=row["created"],
            updated=row["updated"],
            unchanged=row["unchanged"],
            rejected=row["rejected"],
            without_email=row["without_email"],
            company_on_lead=row["company_on_lead"],
            columns=row["columns"],
        )

    return run


@pytest.mark.parametrize("kind", ["hubspot", "salesforce"])
def test_service_import_stores_what_the_export_says(services, tmp_path, kind):
    write, id_of, _, date_key = EXPORTS[kind]
    rows = people(11, 60, id_of)
    path = write(tmp_path / f"{kind}.csv", rows)
    summary = import_twice(services, path, via_service(services))
    assert (summary.rows_read, summary.created, summary.rejected) == (60, 60, 0)
    assert summary.without_email == sum(p.email is None for p in rows)
    assert summary.company_on_lead == sum(
        p.company is None and (p.industry or p.country or p.employees) is not None for p in rows
    )
    check_stored(services, rows, kind)
    assert summary.columns["Annual Revenue"] == "attributes.annual_revenue (number)"
    assert summary.columns["Attended Webinar"] == "attributes.attended_webinar (boolean)"
    assert summary.columns["Preferred Plan"] == "attributes.preferred_plan (text)"
    date_column = "Create Date" if kind == "hubspot" else "Created Date"
    assert summary.columns[date_column] == f"attributes.{date_key} (date)"
    assert summary.columns["Industry"] == "account.industry, else attributes.industry"


@pytest.mark.parametrize("kind", ["hubspot", "salesforce"])
def test_cli_import_stores_what_the_export_says(services, db_url, capsys, tmp_path, kind):
    write, id_of, _, _ = EXPORTS[kind]
    rows = people(23, 40, id_of)
    path = write(tmp_path / f"{kind}.csv", rows)
    summary = import_twice(services, path, via_cli(db_url, capsys))
    assert (summary.rows_read, summary.created) == (40, 40)
    assert summary.without_email == sum(p.email is None for p in rows)
    check_stored(services, rows, kind)


def test_without_the_option_rows_without_email_are_rejected(services, tmp_path):
    rows = people(5, 14, EXPORTS["hubspot"][1])
    path = write_hubspot(tmp_path / "hubspot.csv", rows)
    summary = import_leads(services.engine, path, now=T0)
    missing = sum(p.email is None for p in rows)
    assert (summary.created, summary.rejected) == (14 - missing, missing)


def test_a_re_import_updates_the_lead_without_email_and_keeps_what_a_placeholder_hides(
    services, tmp_path
):
    rows = people(7, 10, EXPORTS["salesforce"][1])
    path = write_salesforce(tmp_path / "sf.csv", rows)
    via_service(services)(path, T0)
    no_mail = next(p for p in rows if p.email is None)
    no_mail.title = "Head of Data"
    no_mail_plan, no_mail.plan = no_mail.plan, None  # the new export shows --None--
    write_salesforce(path, rows)
    summary = via_service(services)(path, T0 + timedelta(days=1))
    assert (summary.created, summary.updated) == (0, 1)
    lead = stored_leads(services)[f"crm:{no_mail.record_id}"]
    assert lead["title"] == "Head of Data"
    assert lead["attributes"].get("preferred_plan") == no_mail_plan


def _fits(services: Services) -> dict[str, float]:
    stored = stored_leads(services)
    with services.engine.connect() as conn:
        fit = dict(conn.execute(select(lead_states.c.lead_id, lead_states.c.fit)).all())
    return {key: fit[lead["id"]] for key, lead in stored.items()}


def test_company_facts_of_a_person_without_company_count_for_fit(services, tmp_path):
    rows = people(3, 12, EXPORTS["hubspot"][1])
    via_service(services)(write_hubspot(tmp_path / "hs.csv", rows), T0)
    fits = _fits(services)
    with_company, without = rows[1], rows[0]
    assert with_company.company is not None and without.company is None
    key = without.email or f"crm:{without.record_id}"
    assert fits[key] == fits[with_company.email or f"crm:{with_company.record_id}"]
    # Industry (Software) and size (400) count: more than the title and country alone.
    assert fits[key] >= 25 + 25


def test_a_fit_rule_on_a_custom_column_changes_the_fit_of_imported_leads(services, tmp_path):
    rows = people(17, 30, EXPORTS["salesforce"][1])
    for p in rows:
        p.title = "Coordinator"  # no seniority points: fits stay below 100 with the rule
    via_service(services)(write_salesforce(tmp_path / "sf.csv", rows), T0)
    before = _fits(services)
    spec = yaml.safe_load(default_source())
    spec["version"] = f"{spec['version']}-revenue"
    spec["fit"]["attributes"] = [
        {"name": "annual_revenue", "min": 1_000_000, "points": 10},
        {"name": "attended_webinar", "values": [True], "points": 3},
    ]
    source = yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
    model = load_model(source)
    with services.engine.begin() as conn:
        install_model(conn, model, source, T0, activate=True)
    services.states.clear()
    recompute_all(services.engine, services.models, T0 + timedelta(minutes=1))
    after = _fits(services)
    for p in rows:
        key = p.email or f"crm:{p.record_id}"
        gained = 10 * ((p.revenue or 0) >= 1_000_000) + 3 * (p.webinar is True)
        assert after[key] == pytest.approx(min(100.0, before[key] + gained)), p
    assert any(after[k] != before[k] for k in after)


def test_segment_criteria_read_typed_custom_columns(services, tmp_path):
    rows = people(29, 30, EXPORTS["hubspot"][1])
    via_service(services)(write_hubspot(tmp_path / "hs.csv", rows), T0)
    stored = stored_leads(services)
    pg = services.engine.dialect.name == "postgresql"
    for criteria, wanted in (
        ({"attributes": {"attended_webinar": [True]}}, [p for p in rows if p.webinar is True]),
        (
            {"attributes": {"annual_revenue": [1_500_000]}},
            [p for p in rows if p.revenue == 1_500_000],
        ),
        (
            {"attributes": {"preferred_plan": ["enterprise"]}},
            [p for p in rows if p.plan == "Enterprise"],
        ),
    ):
        query = members_query(Criteria.model_validate(criteria), T0, pg=pg)
        with services.engine.connect() as conn:
            ids = set(conn.execute(query).scalars())
        assert ids == {stored[p.email or f"crm:{p.record_id}"]["id"] for p in wanted}, criteria


@pytest.mark.parametrize(
    "trait", ["source", "lead_source", "leadSource", "Lead Source", "Original Source"]
)
def test_the_lead_source_can_be_set_through_identify(services, trait):
    message = {
        "type": "identify",
        "userId": f"u-{trait}",
        "messageId": f"m-{trait}",
        "timestamp": T0.isoformat(),
        "traits": {"email": f"{trait.replace(' ', '')}@x.example", trait: "Trade Show"},
    }
    ingest(services.engine, parse_batch({"batch": [message]}, received_at=T0), T0)
    with services.engine.connect() as conn:
        lead = conn.execute(select(leads).where(leads.c.user_id == f"u-{trait}")).mappings().one()
    assert lead["source"] == "Trade Show"


def test_the_lead_source_is_on_the_api_lead_detail(
    services, client, write_key, admin_token, tmp_path
):
    r = client.post(
        "/v1/identify",
        json={"userId": "u-api", "traits": {"email": "api@x.example", "Lead Source": "Webinar"}},
        auth=(write_key, ""),
    )
    assert r.status_code < 300, r.text
    rows = people(31, 8, EXPORTS["hubspot"][1])
    via_service(services)(write_hubspot(tmp_path / "hs.csv", rows), T0)
    stored = stored_leads(services)
    admin = {"Authorization": f"Bearer {admin_token}"}
    body = client.get(f"/api/leads/{stored['api@x.example']['id']}", headers=admin).json()
    assert body["source"] == "Webinar"
    for p in rows:
        lead = stored[p.email or f"crm:{p.record_id}"]
        body = client.get(f"/api/leads/{lead['id']}", headers=admin).json()
        assert body["source"] == p.source
