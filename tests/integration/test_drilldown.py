"""Every figure is a link: on the demo world, on SQLite and PostgreSQL, the list each
figure opens holds what the figure counts.

Each figure is computed through the function its page uses (funnel, KPIs, attribution,
programs, forms, deal funnel); its link is opened through the service the list page uses
(``services.lead_lists`` / ``services.deal_lists``) and the counts compared. Figures that
count leads or deals (balances, conversions, enrolments, sends, deals) equal their list's
count. Flows count *moves* (a lead recycled twice moves twice): for them the figure equals
the moves computed in Python from the report's own stage log, and the list's count equals
the distinct leads that made them (on the demo world a few leads do move twice)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import polars as pl
import pytest

from leadflow.adapters.db.repositories import dashboard
from leadflow.adapters.db.repositories import marketing as mq
from leadflow.bootstrap import Services
from leadflow.core import deal_lists as deal_spec
from leadflow.core.lead_lists import ListQueryError, parse
from leadflow.entrypoints.web import analytics, funnel
from leadflow.entrypoints.web.cache import TTLCache
from leadflow.entrypoints.web.i18n import Translator
from leadflow.services import deal_lists, lead_lists, reports
from leadflow.services import users as user_service
from leadflow.services.lifecycle import all_lead_ids, recompute_all
from leadflow.sim import WorldConfig, build_world
from leadflow.sim.loader import load_world
from leadflow.sim.nurture import play_nurture
from leadflow.sim.sales import play_sales

CONFIG = WorldConfig(leads=150, months=4, seed=3)
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def demo(services: Services) -> Iterator[Services]:
    """What ``leadflow demo`` does: load the world, score it, play sales and nurture."""
    load_world(services.engine, build_world(CONFIG))
    with services.engine.connect() as conn:
        ids = all_lead_ids(conn)
    recompute_all(services.engine, services.models, CONFIG.until, lead_ids=ids)
    play_sales(services.engine, services.models, CONFIG.until, CONFIG.seed)
    with services.engine.begin() as conn:
        model = services.models.active(conn, CONFIG.until)
    play_nurture(services, model, CONFIG.until, CONFIG.seed)
    yield services


def _period(services: Services) -> reports.Period:
    newest = dashboard.newest_stage_change(services.engine)
    return funnel.default_period(newest, CONFIG.until)


class Lists:
    """Opens a figure's link the way its list page does and counts what it lists."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.model = services.active_model()
        self.opened = 0

    def count(self, href: str) -> int:
        parts = urlsplit(unescape(href))
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        self.opened += 1
        if parts.path == "/deals":
            return deal_lists.list_page(self.services.engine, deal_spec.parse(pairs)).count
        assert parts.path == "/leads", href
        query = parse(pairs, stages=self.model.stages)
        return lead_lists.list_page(self.services.engine, query, self.model).count


def _moves(history: pl.DataFrame, period: reports.Period, href: str) -> tuple[int, int]:
    """(moves, distinct leads) of the report's stage log that a move link's filters select,
    computed in Python (the synthetic first entry has no from_stage: ``(new)``)."""
    params = parse_qsl(urlsplit(unescape(href)).query)
    to = [v for k, v in params if k == "move_to"]
    frm = [v for k, v in params if k == "move_from"]
    found = history.filter((pl.col("at") >= period.start) & (pl.col("at") < period.end))
    if to:
        found = found.filter(pl.col("to_stage").is_in(to))
    if frm:
        source = pl.col("from_stage").fill_null("(new)")
        found = found.filter(source.is_in(frm))
    return found.height, found["lead_id"].n_unique()


def _check_moves(
    lists: Lists,
    history: pl.DataFrame,
    period: reports.Period,
    href: str | None,
    figure: int,
    what: str,
) -> bool:
    """A flow: the figure is the moves, its list the leads that made them. True when some
    lead made more than one of them."""
    if figure == 0 and href is None:
        return False
    assert href is not None, f"{what}: the figure {figure} has no link"
    moves, leads = _moves(history, period, href)
    assert moves == figure, f"{what}: figure {figure}, moves in the log {moves}"
    listed = lists.count(href)
    assert listed == leads, f"{what}: {leads} leads made the moves, the list has {listed}"
    return leads < moves


FLOWS = ("flow_in", "flow_out", "out_next", "out_recycle", "out_dead_end", "out_other")


def _check(lists: Lists, href: str | None, figure: int, what: str) -> None:
    if figure == 0 and href is None:
        return
    assert href is not None, f"{what}: the figure {figure} has no link"
    assert lists.count(href) == figure, f"{what}: figure {figure}, list {lists.count(href)}"


def test_every_figure_opens_a_list_of_as_many_leads_or_deals(demo: Services) -> None:
    services = demo
    cache = TTLCache(ttl=600)
    period = _period(services)
    model = services.active_model()
    lists = Lists(services)
    t = Translator("en")

    # Funnel: every cell, KPI tile, Sankey link and node.
    view = funnel.funnel_view(services, cache, period, "", "", t)
    history = funnel._store(services, cache).history
    checked_cells = 0
    for row in view["rows"]:
        for column, href in view["cells"][row["stage"]].items():
            what = f"funnel {row['stage']}.{column}"
            if column in FLOWS:
                _check_moves(lists, history, period, href, int(row[column]), what)
            else:
                _check(lists, href, int(row[column]), what)
            checked_cells += int(row[column]) > 0
    assert checked_cells >= 10
    figs, tiles = view["figs"], view["tiles"]
    for name in ("acquired", "mql", "won"):
        what = f"funnel tile {name}"
        _check_moves(lists, history, period, tiles[name], int(figs[name] or 0), what)
    links = view["sankey"]["links"]
    assert links
    into: dict[str, int] = {}
    away: dict[str, int] = {}
    for link in links:
        key = f"{link['source']}>{link['target']}"
        href = view["sankey_drill"][key]
        _check_moves(lists, history, period, href, link["value"], f"sankey {key}")
        into[link["target"]] = into.get(link["target"], 0) + link["value"]
        away[link["source"]] = away.get(link["source"], 0) + link["value"]
    for node in view["sankey"]["nodes"]:
        name = node["name"]
        shown = max(into.get(name, 0), away.get(name, 0))
        href = view["sankey_drill"][name]
        _check_moves(lists, history, period, href, shown, f"sankey node {name}")

    # KPI tiles and the department table.
    executive = analytics.kpis_view(services, cache, period, "executive")
    drill = analytics.kpi_drill("executive", model, period, [])
    _check(lists, drill["won"], executive["kpis"]["won_leads"], "kpi won leads")
    _check(lists, drill["pipeline"], executive["kpis"]["pipeline_leads"], "kpi pipeline leads")
    department = analytics.kpis_view(services, cache, period, "department")
    drill = analytics.kpi_drill("department", model, period, department["stages"])
    assert department["kpis"]["mql_entries"] > 0
    mql = department["kpis"]["mql_entries"]
    _check_moves(lists, history, period, drill["mql"], mql, "kpi MQL entries")
    actions = funnel._store(services, cache).actions.filter(
        (pl.col("name") == "accept") & (pl.col("at") >= period.start) & (pl.col("at") < period.end)
    )
    assert department["kpis"]["accepted"] == actions.height
    _check(lists, drill["accepted"], actions["lead_id"].n_unique(), "kpi accepted (leads)")
    for row in department["stages"]:
        for column in ("balance_start", "flow_in", "flow_out", "balance_end"):
            href = drill["cells"][row["stage"]][column]
            what = f"department {row['stage']}.{column}"
            if column in FLOWS:
                _check_moves(lists, history, period, href, int(row[column]), what)
            else:
                _check(lists, href, int(row[column]), what)

    # Attribution: conversions, and per touch the converted leads whose path has it.
    store = funnel._store(services, cache)
    for stage in (model.handoff_stage, model.won_stage):
        for touch in ("channel", "campaign"):
            figures = analytics.attribution_figures(store, period, "lead", touch, stage)
            converted_link = reports_link = analytics.attribution_drill(
                [], period, "lead", touch, stage
            )
            assert converted_link == {}
            from leadflow.entrypoints.web import drill as drill_links

            reports_link = drill_links.converted(stage, period.start, period.end)
            _check(lists, reports_link, figures["conversions"], f"conversions into {stage}")
            tp, _, conv = reports.attribution_inputs(
                store, period, to_stage=stage, touch=touch, level="lead"
            )
            paths = tp.filter(pl.col("lead_id").is_in(conv["lead_id"].implode()))
            per_touch = paths.group_by("touch").agg(pl.col("lead_id").n_unique())
            hrefs = analytics.attribution_drill(
                per_touch["touch"].to_list(), period, "lead", touch, stage
            )
            assert set(hrefs) == set(figures["credits"]["linear"]) or not figures["conversions"]
            for name, leads_with_touch in per_touch.iter_rows():
                _check(lists, hrefs[name], int(leads_with_touch), f"{stage} touched {name}")

    # Programs: enrolments per status, sends per step and result.
    programs = mq.program_figures(services.engine, model.spec.lifecycle.main_path)
    assert programs
    from urllib.parse import urlencode

    for key, p in programs.items():
        for status, figure in (
            ("any", p.enrolled),
            ("active", p.active),
            ("completed", p.completed),
            ("exited", p.exited),
        ):
            href = "/leads?" + urlencode({"program": key, "enrolment": status})
            _check(lists, href, figure, f"program {key} {status}")
        for step_id, s in p.steps.items():
            for result in ("planned", "sent", "skipped", "opened", "clicked", "unsubscribed"):
                href = "/leads?" + urlencode(
                    {"program": key, "step": step_id, "step_result": result}
                )
                _check(lists, href, getattr(s, result), f"program {key} step {step_id} {result}")

    # Forms: submissions (every demo submission is a known lead's, once per form).
    for key, (total, _recent) in mq.submission_counts(services.engine, CONFIG.until).items():
        _check(lists, "/leads?" + urlencode({"form": key}), total, f"form {key}")

    # The deal funnel: every cell and tile.
    deals = funnel.deal_view(services, cache, period)
    for row in deals["deals"]["stages"]:
        for column, href in deals["deal_cells"][row["stage"]].items():
            _check(lists, href, int(row[column]), f"deals {row['stage']}.{column}")
    _check(lists, deals["deal_tiles"]["opened"], deals["deal_figs"]["opened"], "deals opened")
    _check(lists, deals["deal_tiles"]["won"], deals["deal_figs"]["won"], "deals won")
    assert lists.opened > 100


def _sign_in(client: Any, services: Services, role: str) -> None:
    user_service.create_user(
        services.engine,
        email=f"{role}@example.com",
        password=PASSWORD,
        role=role,
        name=f"{role.title()} User",
        now=datetime.now(UTC),
    )
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    response = client.post(
        "/login",
        data={"email": f"{role}@example.com", "password": PASSWORD, "csrf_token": csrf.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303


def _hrefs(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'href="(/(?:leads|deals)\?[^"]*)"', html)]


def test_pages_link_their_figures_and_the_list_shows_the_filter(demo, client, admin_token):
    _sign_in(client, demo, "marketer")
    period = _period(demo)
    span = f"from={period.start.date()}&to={(period.end - timedelta(days=1)).date()}"
    html = client.get(f"/funnel?{span}").text
    cells = re.findall(r'<td class="num" data-col="flow_in"><a class="drill" href="([^"]+)"', html)
    assert cells and 'data-drill="' in html and 'id="sankey-links"' in html
    for path in (f"/kpis?role=department&{span}", f"/kpis?role=executive&{span}", "/programs"):
        assert _hrefs(client.get(path).text), path
    assert _hrefs(client.get(f"/funnel?unit=deal&{span}").text)
    assert 'data-drill="' in client.get(f"/attribution?to_stage=mql&{span}").text

    first = unescape(cells[0])
    listed = client.get(first)
    assert listed.status_code == 200
    # The API reads the same filters: the same count.
    shown = re.search(r'data-count="(\d+)"', listed.text)
    api = client.get(
        "/api/leads?" + urlsplit(first).query,
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert api.status_code == 200, api.text
    assert shown and api.json()["count"] == int(shown.group(1)) > 0
    assert 'id="drill-filters"' in listed.text
    assert 'name="move_to"' in listed.text and 'name="moved_after"' in listed.text
    remove = re.search(r'class="chip-remove" href="([^"]+)"[^>]*data-remove="move_to"', listed.text)
    assert remove and "move_to" not in unescape(remove.group(1))
    deals = client.get("/deals?status=won&closed_after=2020-01-01&sort=-amount")
    assert deals.status_code == 200 and 'id="deals-table"' in deals.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("move_to=<script>", "move_to"),
        ("move_from=nowhere", "move_from"),
        ("move_to=mql&moved_after=yesterday", "moved_after"),
        ("move_to=mql&moved_after=2025-02-01&moved_before=2025-01-01", "moved_before"),
        ("moved_after=2025-01-01", "moved_after"),
        ("stage=mql&as_of=1e9", "as_of"),
        ("as_of=2025-01-01", "as_of"),
        ("converted_to=mql&converted_before=2025-13-01", "converted_before"),
        ("converted_after=2025-01-01", "converted_after"),
        ("touched_channel=" + "x" * 300, "touched_channel"),
        ("program=education&enrolment=everything", "enrolment"),
        ("step=s1", "step"),
        ("program=education&step=s1&step_result=read", "step_result"),
        ("action=accept%00", "action"),
        ("submitted_after=2025-01-01T99:00", "submitted_after"),
    ],
)
def test_a_bad_drill_parameter_is_refused_with_its_name(client, services, query, field) -> None:
    _sign_in(client, services, "marketer")
    response = client.get(f"/leads?{query}")
    assert response.status_code == 400
    assert f"{field}:" in response.text
    assert "<script>" not in response.text
    with pytest.raises(ListQueryError) as refused:
        parse(parse_qsl(query, keep_blank_values=True), stages=services.active_model().stages)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=maybe", "status"),
        ("closed_after=2025-02-01&closed_before=2025-01-01", "closed_before"),
        ("currency=WON1", "currency"),
        ("sort=-secret", "sort"),
        ("account=-1", "account"),
        ("as_of=<b>", "as_of"),
        ("unknown=1", "unknown"),
    ],
)
def test_a_bad_deal_list_parameter_is_refused_with_its_name(client, services, query, field):
    _sign_in(client, services, "executive")
    response = client.get(f"/deals?{query}")
    assert response.status_code == 400
    assert f"{field}:" in response.text
    assert "<b>" not in response.text
