"""Smart lists on SQLite and PostgreSQL: every filter and sort returns exactly the leads
computed in Python from the seed; hostile text is only data."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from leadflow.adapters.db.tables import (
    accounts,
    events,
    form_submissions,
    lead_states,
    leads,
    program_enrollments,
    segment_members,
    segments,
)
from leadflow.core.lead_lists import ListQueryError, parse
from leadflow.services import lead_lists

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
OWNERS = ("Rep One", "Rep Two", None)
SOURCES = ("webinar", "tradeshow", "web")
GRADES = ("A", "B", "C")
PROGRAMS = ("education", "reengage")
CAMPAIGNS = ("spring", "summer")
FORMS = ("contact", "demo")
COMPANIES = (
    ("Acme Corp", "acme.example"),
    ("Globex", "globex.example"),
    ("Hooli 100%", "hooli.example"),
    ("Initech_Labs", "initech.example"),
    ("<b>Umbrella</b>", "umbrella.example"),
)
FIRST = ("ada", "grace", "alan", "barbara", "linus", "o'brien")
LAST = ("lovelace", "hopper", "turing", "liskov", "torvalds")


@dataclass
class Person:
    id: int
    email: str
    first_name: str
    last_name: str
    company: str | None
    domain: str | None
    owner: str | None
    source: str
    created_at: datetime
    stage: str
    engagement: float | None
    fit: float | None
    grade: str | None
    attributes: dict[str, Any]
    activity: list[datetime] = field(default_factory=list)
    campaigns: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    forms: set[str] = field(default_factory=set)

    @property
    def last_activity(self) -> datetime | None:
        return max(self.activity) if self.activity else None


def seed(services) -> list[Person]:
    rng = random.Random(15)
    model = services.active_model()
    stages = list(model.stages)
    people: list[Person] = []
    with services.engine.begin() as conn:
        account_ids: list[tuple[int, str, str, str | None]] = []
        for i, (name, domain) in enumerate(COMPANIES):
            owner = OWNERS[i % len(OWNERS)]
            aid = conn.execute(
                accounts.insert()
                .values(
                    name=name,
                    domain=domain,
                    owner=owner,
                    traits={},
                    created_at=NOW,
                    updated_at=NOW,
                )
                .returning(accounts.c.id)
            ).scalar_one()
            account_ids.append((aid, name, domain, owner))
        segment_ids = {}
        for key in ("vip", "churned"):
            segment_ids[key] = conn.execute(
                segments.insert()
                .values(key=key, name=key, criteria={}, created_at=NOW, updated_at=NOW)
                .returning(segments.c.id)
            ).scalar_one()
        message = 0
        for i in range(60):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            account = rng.choice([*account_ids, None])
            created = NOW - timedelta(days=rng.randint(1, 300), minutes=i)
            attributes: dict[str, Any] = {}
            if rng.random() < 0.6:
                attributes["tier"] = rng.choice(["gold", "silver", "100%"])
            if rng.random() < 0.6:
                attributes["seats"] = rng.choice([5, 12, 40, 250])
            if rng.random() < 0.2:
                attributes["seats"] = "many"  # text where a number is usual: never in a range
            email = f"{first}.{last}.{i}@{account[2] if account else 'mail.example'}"
            lead_id = conn.execute(
                leads.insert()
                .values(
                    email=email,
                    first_name=first.title(),
                    last_name=last.title(),
                    account_id=account[0] if account else None,
                    source=rng.choice(SOURCES),
                    consent_status="granted",
                    attributes=attributes,
                    created_at=created,
                    updated_at=created,
                )
                .returning(leads.c.id)
            ).scalar_one()
            scored = rng.random() < 0.85
            stage = rng.choice(stages) if scored else model.initial_stage
            person = Person(
                id=lead_id,
                email=email,
                first_name=first.title(),
                last_name=last.title(),
                company=account[1] if account else None,
                domain=account[2] if account else None,
                owner=account[3] if account else None,
                source="",
                created_at=created,
                stage=stage,
                engagement=float(rng.randint(0, 120)) if scored else None,
                fit=float(rng.randint(0, 100)) if scored else None,
                grade=rng.choice([*GRADES, None]) if scored else None,
                attributes=attributes,
            )
            person.source = (
                conn.execute(leads.select().where(leads.c.id == lead_id)).mappings().one()["source"]
            )
            if scored:
                conn.execute(
                    lead_states.insert().values(
                        lead_id=lead_id,
                        stage=stage,
                        engagement=person.engagement,
                        fit=person.fit,
                        fit_grade=person.grade,
                        qualification=0.0,
                        scored_at=NOW,
                        model_version="test",
                        model_hash="test",
                        updated_at=NOW,
                    )
                )
            for _ in range(rng.choice([0, 0, 1, 2, 3])):
                message += 1
                at = NOW - timedelta(days=rng.randint(0, 90), hours=rng.randint(0, 23))
                campaign = rng.choice([*CAMPAIGNS, None])
                conn.execute(
                    events.insert().values(
                        message_id=f"m{message}",
                        type="track",
                        name="page_view",
                        lead_id=lead_id,
                        properties={},
                        context={},
                        utm_campaign=campaign,
                        occurred_at=at,
                        received_at=at,
                    )
                )
                person.activity.append(at)
                if campaign:
                    person.campaigns.add(campaign)
            for program in PROGRAMS:
                roll = rng.random()
                if roll < 0.3:
                    conn.execute(
                        program_enrollments.insert().values(
                            program_key=program,
                            lead_id=lead_id,
                            active_key=f"{program}:{lead_id}",
                            status="active",
                            enrolled_at=NOW,
                        )
                    )
                    person.programs.add(program)
                elif roll < 0.45:  # left the program: not "enrolled"
                    conn.execute(
                        program_enrollments.insert().values(
                            program_key=program,
                            lead_id=lead_id,
                            status="exited",
                            enrolled_at=NOW,
                            exited_at=NOW,
                        )
                    )
            for key, sid in segment_ids.items():
                if rng.random() < 0.3:
                    conn.execute(
                        segment_members.insert().values(
                            segment_id=sid, lead_id=lead_id, joined_at=NOW
                        )
                    )
                    person.segments.add(key)
            for form in FORMS:
                if rng.random() < 0.25:
                    conn.execute(
                        form_submissions.insert().values(
                            form_key=form, lead_id=lead_id, fields={}, submitted_at=NOW
                        )
                    )
                    person.forms.add(form)
            people.append(person)
    return people


@pytest.fixture
def world(services):
    return seed(services)


def ids_of(services, params: dict[str, Any], rep: str | None = None) -> list[int]:
    model = services.active_model()
    query = parse({**params, "size": "1000"}, stages=model.stages)
    page = lead_lists.list_page(services.engine, query, model, rep=rep)
    assert not page.has_next
    return [r["id"] for r in page.rows]


def newest_first(people: list[Person]) -> list[int]:
    return sorted((p.id for p in people), reverse=True)


def contains(value: str | None, text: str) -> bool:
    return value is not None and text.lower() in value.lower()


def matches_search(p: Person, text: str) -> bool:
    return any(
        contains(v, text)
        for v in (
            p.email,
            p.first_name,
            p.last_name,
            f"{p.first_name} {p.last_name}",
            p.company,
            p.domain,
        )
    )


def test_each_filter_returns_exactly_the_leads_computed_from_the_seed(services, world):
    model = services.active_model()
    stages = list(model.stages)
    cut = NOW - timedelta(days=30)
    nurture = set(model.stages_for("nurture"))
    cases: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda p: True),
        ({"stage": stages[2]}, lambda p: p.stage == stages[2]),
        ({"stage": [stages[0], stages[3]]}, lambda p: p.stage in (stages[0], stages[3])),
        ({"role": "nurture"}, lambda p: p.stage in nurture),
        (
            {"engagement_min": "30", "engagement_max": "80"},
            lambda p: p.engagement is not None and 30 <= p.engagement <= 80,
        ),
        ({"fit_min": "50"}, lambda p: p.fit is not None and p.fit >= 50),
        ({"grade": ["A", "C"]}, lambda p: p.grade in ("A", "C")),
        ({"owner": "Rep One"}, lambda p: p.owner == "Rep One"),
        ({"active_after": cut.isoformat()}, lambda p: any(a >= cut for a in p.activity)),
        (
            {"active_before": cut.date().isoformat()},
            lambda p: (
                not any(a >= datetime(cut.year, cut.month, cut.day, tzinfo=UTC) for a in p.activity)
            ),
        ),
        ({"program": "education"}, lambda p: "education" in p.programs),
        ({"segment": "vip"}, lambda p: "vip" in p.segments),
        ({"form": "demo"}, lambda p: "demo" in p.forms),
        ({"campaign": "spring"}, lambda p: "spring" in p.campaigns),
        ({"source": "webinar"}, lambda p: p.source == "webinar"),
        ({"domain": "ACME.example"}, lambda p: p.domain == "acme.example"),
        ({"f.tier": "gold"}, lambda p: p.attributes.get("tier") == "gold"),
        ({"f.tier": "100%"}, lambda p: p.attributes.get("tier") == "100%"),
        (
            {"f.seats.min": "10", "f.seats.max": "100"},
            lambda p: (
                isinstance(p.attributes.get("seats"), int) and 10 <= p.attributes["seats"] <= 100
            ),
        ),
        ({"q": "HOPPER"}, lambda p: matches_search(p, "hopper")),
        ({"q": "ace.tur"}, lambda p: matches_search(p, "ace.tur")),
        ({"q": "grace lovelace"}, lambda p: matches_search(p, "grace lovelace")),
        ({"q": "acme corp"}, lambda p: matches_search(p, "acme corp")),
        ({"q": "globex.example"}, lambda p: matches_search(p, "globex.example")),
        ({"q": "100%"}, lambda p: matches_search(p, "100%")),
        ({"q": "%"}, lambda p: matches_search(p, "%")),
        ({"q": "h_oli"}, lambda p: False),  # "_" is a literal, not "any character"
        ({"q": "initech_"}, lambda p: matches_search(p, "initech_")),
        ({"q": "o'brien"}, lambda p: matches_search(p, "o'brien")),
        ({"q": "' OR 1=1 --"}, lambda p: False),
        ({"q": "<b>"}, lambda p: matches_search(p, "<b>")),
        (
            {"role": "nurture", "grade": "B", "owner": "Rep Two"},
            lambda p: p.stage in nurture and p.grade == "B" and p.owner == "Rep Two",
        ),
    ]
    for params, wanted in cases:
        expected = newest_first([p for p in world if wanted(p)])
        assert ids_of(services, params) == expected, params
    # the searches and filters above are not all empty: the seed exercises them
    assert ids_of(services, {"q": "100%"}) and ids_of(services, {"f.seats.min": "10"})


def _sort_key(p: Person, column: str, model) -> Any:
    order = {s: i for i, s in enumerate(model.stages)}
    return {
        "engagement": p.engagement,
        "fit": p.fit,
        "fit_grade": p.grade,
        "owner": p.owner,
        "last_activity": p.last_activity,
        "created_at": p.created_at,
        "source": p.source,
        "stage": order[p.stage],
        "email": p.email,
        "domain": p.domain,
    }[column]


@pytest.mark.parametrize(
    "column",
    [
        "engagement",
        "fit",
        "fit_grade",
        "owner",
        "last_activity",
        "created_at",
        "source",
        "stage",
        "email",
        "domain",
    ],
)
@pytest.mark.parametrize("descending", [False, True])
def test_each_sort_orders_like_python_with_missing_values_last(services, world, column, descending):
    model = services.active_model()
    present = [p for p in world if _sort_key(p, column, model) is not None]
    missing = [p for p in world if _sort_key(p, column, model) is None]
    present.sort(key=lambda p: (_sort_key(p, column, model), p.id), reverse=descending)
    missing.sort(key=lambda p: p.id, reverse=descending)
    expected = [p.id for p in present + missing]
    sort = ("-" if descending else "") + column
    assert ids_of(services, {"sort": sort}) == expected


def test_pages_walk_forward_and_back_and_counts_match(services, world):
    model = services.active_model()
    seen: list[int] = []
    page_no = 1
    while True:
        query = parse(
            {"sort": "-engagement", "size": "7", "page": str(page_no)}, stages=model.stages
        )
        page = lead_lists.list_page(services.engine, query, model)
        assert page.count == len(world) and not page.count_capped
        assert page.has_previous == (page_no > 1)
        seen += [r["id"] for r in page.rows]
        if not page.has_next:
            break
        page_no += 1
    assert seen == ids_of(services, {"sort": "-engagement"})
    assert page_no == -(-len(world) // 7)
    # keyset cursor on the default order continues where the page ended
    first = lead_lists.list_page(services.engine, parse({"size": "10"}), model)
    assert first.next_cursor == first.rows[-1]["id"]
    after = lead_lists.list_page(
        services.engine, parse({"size": "10", "cursor": str(first.next_cursor)}), model
    )
    assert [r["id"] for r in after.rows] == newest_first(world)[10:20]


def test_a_sales_rep_only_lists_the_leads_of_their_accounts(services, world):
    expected = newest_first([p for p in world if p.owner == "Rep Two"])
    assert ids_of(services, {}, rep="Rep Two") == expected
    assert ids_of(services, {"owner": "Rep One"}, rep="Rep Two") == []


def test_rows_carry_stage_scores_grade_owner_activity_and_program(services, world):
    model = services.active_model()
    page = lead_lists.list_page(services.engine, parse({"size": "1000"}), model)
    by_id = {p.id: p for p in world}
    for row in page.rows:
        p = by_id[row["id"]]
        assert row["stage"] == p.stage
        assert row["engagement"] == p.engagement and row["fit"] == p.fit
        assert row["fit_grade"] == p.grade and row["owner"] == p.owner
        assert row["last_activity"] == p.last_activity
        assert row["program"] == (min(p.programs) if p.programs else None)
        assert row["company"] == p.company


def test_export_rows_are_every_match_in_order_and_ids_for_bulk_actions(services, world):
    model = services.active_model()
    query = parse({"grade": "A", "sort": "fit", "size": "5"})
    exported = [r["id"] for r in lead_lists.export_rows(services.engine, query, model)]
    assert exported == ids_of(services, {"grade": "A", "sort": "fit"})
    assert lead_lists.lead_ids(services.engine, query, model) == sorted(exported)


def test_unknown_stage_is_refused_naming_the_parameter(services, world):
    model = services.active_model()
    with pytest.raises(ListQueryError) as caught:
        parse({"stage": "'; DROP TABLE leads; --"}, stages=model.stages)
    assert caught.value.field == "stage"
    assert len(ids_of(services, {})) == len(world)


# ---------------------------------------------------------------- API and CLI


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_lists_with_the_same_filters_and_sort(client, services, world, admin_token):
    nurture = set(services.active_model().stages_for("nurture"))
    params = {"role": "nurture", "sort": "-fit", "size": "1000", "f.seats.min": "1"}
    r = client.get("/api/leads", params=params, headers=auth(admin_token))
    assert r.status_code == 200, r.text
    body = r.json()
    expected = [
        p for p in world if p.stage in nurture and isinstance(p.attributes.get("seats"), int)
    ]
    expected.sort(key=lambda p: (p.fit, p.id), reverse=True)
    assert [i["id"] for i in body["items"]] == [p.id for p in expected]
    assert body["count"] == len(expected) and body["has_previous"] is False
    item = body["items"][0]
    assert {
        "stage",
        "stage_label",
        "engagement",
        "fit",
        "fit_grade",
        "owner",
        "last_activity",
        "program",
    } <= item.keys()
    # page 2 of size 3 says there is a previous page
    r = client.get("/api/leads", params={"size": 3, "page": 2}, headers=auth(admin_token))
    assert r.json()["has_previous"] is True and len(r.json()["items"]) == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "secret"}, "sort"),
        ({"fit_min": 9, "fit_max": 1}, "fit"),
        ({"stage": "no-such-stage"}, "stage"),
        ({"colour": "red"}, "colour"),
        ({"f.tier.between": "1"}, "f.tier.between"),
        ({"active_after": "tomorrow"}, "active_after"),
        ({"size": 5, "limit": 5}, "size"),
    ],
)
def test_api_refuses_bad_filters_naming_the_field(client, world, admin_token, params, field):
    r = client.get("/api/leads", params=params, headers=auth(admin_token))
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field


def test_api_export_is_the_filtered_list_as_csv_with_formulas_neutralised(
    client, services, world, admin_token
):
    import csv

    with services.engine.begin() as conn:
        conn.execute(
            leads.update().where(leads.c.id == world[0].id).values(title='=HYPERLINK("x")')
        )
    r = client.get(
        "/api/leads/export.csv", params={"grade": "A", "sort": "email"}, headers=auth(admin_token)
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(r.text.splitlines()))
    expected = sorted((p for p in world if p.grade == "A"), key=lambda p: p.email)
    assert [int(row["id"]) for row in rows] == [p.id for p in expected]
    everything = client.get("/api/leads/export.csv", headers=auth(admin_token)).text
    assert "'=HYPERLINK" in everything and "\n=HYPERLINK" not in everything
    chosen = client.get(
        "/api/leads/export.csv", params={"cols": "name,fit"}, headers=auth(admin_token)
    ).text
    assert chosen.splitlines()[0] == "id,first_name,last_name,fit"
    assert client.get("/api/leads/export.csv").status_code == 401


def test_cli_lists_with_filters_and_show_has_stage_scores_and_pause(
    capsys, services, world, db_url
):
    import json

    from leadflow.entrypoints.cli import app
    from leadflow.entrypoints.cli.common import run_guarded

    def run(*args: str) -> tuple[int, str, str]:
        code = run_guarded(app, [*args, "--database-url", db_url])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run(
        "leads",
        "list",
        "--grade",
        "B",
        "--where",
        "f.tier=gold",
        "--sort",
        "engagement",
        "--limit",
        "1000",
        "--format",
        "json",
    )
    assert code == 0
    expected = sorted(
        (p for p in world if p.grade == "B" and p.attributes.get("tier") == "gold"),
        key=lambda p: (p.engagement, p.id),
    )
    assert [r["id"] for r in json.loads(out)] == [p.id for p in expected]
    code, _, err = run("leads", "list", "--sort", "nope")
    assert code != 0 and "--sort: unknown column" in err and "Traceback" not in err
    code, _, err = run("leads", "list", "--where", "nonsense")
    assert code != 0 and "--where" in err
    scored = next(p for p in world if p.engagement is not None)
    code, out, _ = run("leads", "show", scored.email, "--format", "json")
    state = json.loads(out)["state"]
    assert state["stage"] == scored.stage and state["engagement"] == scored.engagement
    assert "pause_until" in state and state["fit_grade"] == scored.grade


# ---------------------------------------------------------------- dashboard


@pytest.fixture
def dashboard(services, world, monkeypatch):
    import re

    from argon2 import PasswordHasher

    from leadflow.services import users as user_service

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    for role, rep in (("admin", None), ("marketer", None), ("sales", "Rep Two")):
        user_service.create_user(
            services.engine,
            email=f"{role}@example.com",
            password="correct horse battery",
            role=role,
            name=f"{role.title()} User",
            sales_rep_key=rep,
            now=NOW,
        )

    def csrf(html: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert found
        return found.group(1)

    def sign_in(client, role: str) -> str:
        client.cookies.clear()
        page = client.get("/login")
        r = client.post(
            "/login",
            data={
                "email": f"{role}@example.com",
                "password": "correct horse battery",
                "csrf_token": csrf(page.text),
            },
            follow_redirects=False,
        )
        assert r.status_code == 303
        return csrf(client.get("/leads").text)

    return sign_in


def rows_in(html: str) -> list[int]:
    import re

    return [int(i) for i in re.findall(r'<tr data-lead="(\d+)"', html)]


def test_dashboard_filters_sorts_pages_and_chooses_columns(client, services, world, dashboard):
    dashboard(client, "marketer")
    page = client.get("/leads", params={"grade": "A", "sort": "-engagement", "size": "25"})
    assert page.status_code == 200
    expected = sorted(
        (p for p in world if p.grade == "A"), key=lambda p: (p.engagement, p.id), reverse=True
    )
    assert rows_in(page.text) == [p.id for p in expected][:25]
    assert 'aria-sort="descending"' in page.text and 'href="/leads.export.csv' not in page.text
    assert "/leads/export.csv?grade=A&amp;sort=-engagement" in page.text
    # pages: Previous appears on page 2, and the two pages partition the list
    first = rows_in(client.get("/leads", params={"size": "25"}).text)
    second_page = client.get("/leads", params={"size": "25", "page": "2"})
    assert 'rel="prev"' in second_page.text and 'rel="prev"' not in client.get("/leads").text
    assert first + rows_in(second_page.text) == newest_first(world)[:50]
    # the column chooser: only the chosen columns, in order
    chosen = client.get("/leads", params=[("col", "email"), ("col", "fit")]).text
    assert re.findall(r'data-col="([a-z_]+)"', chosen) == ["email", "fit"]
    # a bad filter is refused naming the field, and the page still renders
    bad = client.get("/leads", params={"fit_min": "lots"})
    assert bad.status_code == 400 and "fit_min: " in bad.text


def test_dashboard_escapes_hostile_text_and_searches_it_literally(
    client, services, world, dashboard
):
    dashboard(client, "admin")
    page = client.get("/leads", params={"q": "<b>Umbrella", "cols": "name,company"})
    assert page.status_code == 200
    assert "&lt;b&gt;Umbrella&lt;/b&gt;" in page.text and "<b>Umbrella" not in page.text
    assert rows_in(page.text) == newest_first(
        [p for p in world if matches_search(p, "<b>umbrella")]
    )
    for q in ("%", "_", "' OR '1'='1", "\\"):
        r = client.get("/leads", params={"q": q, "size": "200"})
        assert r.status_code == 200
        assert rows_in(r.text) == newest_first([p for p in world if matches_search(p, q)])[:200]


def test_saved_views_save_share_and_delete(client, services, world, dashboard):
    token = dashboard(client, "marketer")
    r = client.post(
        "/leads/views",
        data={
            "name": "Hot <A>",
            "query": "grade=A&sort=-fit&page=3",
            "shared": "1",
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/leads?grade=A&sort=-fit"
    page = client.get("/leads").text
    assert 'data-view="Hot &lt;A&gt;"' in page and 'href="/leads?grade=A&amp;sort=-fit"' in page
    # refused: no CSRF token, a bad query, an empty name; nothing stored
    assert client.post("/leads/views", data={"name": "x", "query": ""}).status_code == 403
    bad = client.post(
        "/leads/views", data={"name": "x", "query": "sort=secret", "csrf_token": token}
    )
    assert bad.status_code == 400 and "sort: " in bad.text
    empty = client.post("/leads/views", data={"name": " ", "query": "", "csrf_token": token})
    assert empty.status_code == 400 and "name: " in empty.text
    views = lead_lists.views_for(services.engine, 0)
    assert [v["name"] for v in views] == ["Hot <A>"]  # shared: another user sees it
    view_id = views[0]["id"]
    # a sales user sees the shared view but may not delete or unshare it
    other = dashboard(client, "sales")
    assert 'data-view="Hot &lt;A&gt;"' in client.get("/leads").text
    r = client.post(f"/leads/views/{view_id}/delete", data={"csrf_token": other})
    assert r.status_code == 403
    # its owner unshares, then deletes it
    token = dashboard(client, "marketer")
    client.post(f"/leads/views/{view_id}/share", data={"csrf_token": token})
    assert lead_lists.views_for(services.engine, 0) == []
    client.post(f"/leads/views/{view_id}/delete", data={"csrf_token": token})
    assert "data-view=" not in client.get("/leads").text


def test_dashboard_export_is_the_filtered_list_and_scoped_to_a_rep(
    client, services, world, dashboard
):
    import csv

    dashboard(client, "sales")  # Rep Two sees only the leads of the accounts they own
    r = client.get("/leads/export.csv", params={"sort": "email"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    ids = [int(row["id"]) for row in csv.DictReader(r.text.splitlines())]
    assert ids == [
        p.id for p in sorted((p for p in world if p.owner == "Rep Two"), key=lambda p: p.email)
    ]


def test_bulk_assign_confirms_applies_and_undoes(client, services, world, dashboard):
    from sqlalchemy import select

    def owners() -> dict[int, str | None]:
        with services.engine.connect() as conn:
            return dict(conn.execute(select(accounts.c.id, accounts.c.owner)).all())

    before = owners()
    token = dashboard(client, "sales")
    r = client.post(
        "/leads/bulk", data={"action": "assign", "rep": "Rep One", "query": "", "csrf_token": token}
    )
    assert r.status_code == 403  # sales reps may not act in bulk
    token = dashboard(client, "marketer")
    query = "grade=B"
    targets = [p for p in world if p.grade == "B"]
    r = client.post(
        "/leads/bulk",
        data={"action": "assign", "rep": "Rep One", "query": query, "csrf_token": token},
    )
    assert r.status_code == 200 and 'data-bulk-step="confirm"' in r.text
    assert owners() == before  # the confirmation step changes nothing
    bad = client.post(
        "/leads/bulk",
        data={"action": "assign", "rep": "<script>", "query": query, "csrf_token": token},
    )
    assert bad.status_code == 400 and "rep: " in bad.text
    done = client.post(
        "/leads/bulk/apply", data={"rep": "Rep One", "query": query, "csrf_token": token}
    )
    assert done.status_code == 200 and 'data-bulk-step="done"' in done.text
    after = owners()
    moved = {a for a, o in after.items() if o != before[a]}
    domains = {p.domain for p in targets if p.domain}
    with services.engine.connect() as conn:
        wanted = {
            a for (a,) in conn.execute(select(accounts.c.id).where(accounts.c.domain.in_(domains)))
        }
    assert all(after[a] == "Rep One" for a in wanted)
    assert moved == {a for a in wanted if before[a] != "Rep One"}
    undo = re.search(r'name="undo" value="([^"]+)"', done.text).group(1)
    import html

    r = client.post(
        "/leads/bulk/undo",
        data={"undo": html.unescape(undo), "query": query, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert owners() == before
    # a forged undo (owners written into it) is refused and changes nothing
    payload, _, mac = html.unescape(undo).rpartition(".")
    forged = payload.replace("Rep One", "Mallory") + "." + mac
    r = client.post("/leads/bulk/undo", data={"undo": forged, "query": query, "csrf_token": token})
    assert r.status_code == 400 and "undo: " in r.text
    assert owners() == before
    # export as a bulk action goes to the filtered CSV
    r = client.post(
        "/leads/bulk",
        data={"action": "export", "query": query, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/leads/export.csv?grade=B"


def test_bulk_enrol_confirms_then_enrols_the_leads_the_program_takes(
    client, services, world, dashboard
):
    from sqlalchemy import select

    def active() -> set[int]:
        with services.engine.connect() as conn:
            return {
                i
                for (i,) in conn.execute(
                    select(program_enrollments.c.lead_id).where(
                        program_enrollments.c.program_key == "education",
                        program_enrollments.c.status == "active",
                    )
                )
            }

    model = services.active_model()
    takes = set(next(p for p in model.spec.nurture.programs if p.key == "education").stages)
    before = active()
    token = dashboard(client, "marketer")
    query = "grade=A"
    r = client.post(
        "/leads/bulk",
        data={"action": "enrol", "program": "education", "query": query, "csrf_token": token},
    )
    assert r.status_code == 200 and 'data-bulk-step="confirm"' in r.text
    assert active() == before
    bad = client.post(
        "/leads/bulk",
        data={"action": "enrol", "program": "<nope>", "query": query, "csrf_token": token},
    )
    assert bad.status_code == 400 and "program: " in bad.text
    done = client.post(
        "/leads/bulk/enrol", data={"program": "education", "query": query, "csrf_token": token}
    )
    assert done.status_code == 200 and 'data-bulk-step="done"' in done.text
    chosen = {p.id for p in world if p.grade == "A"}
    newly = {p.id for p in world if p.id in chosen and p.stage in takes} - before
    assert active() == before | newly
    assert newly and f"{len(newly)} leads enrolled" in done.text
