"""Every figure opens its leads, in a real browser: a funnel cell, a KPI tile and a Sankey
link (a click on the chart) land on the lead list with the figure's filter shown."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

# The dashboard browser tests' seeded server, browser and signed-in session fixtures.
_spec = importlib.util.spec_from_file_location(
    "dashboard_browser_fixtures", Path(__file__).with_name("test_dashboard_browser.py")
)
assert _spec is not None and _spec.loader is not None
_dashboard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_dashboard)
Session = _dashboard.Session
server = _dashboard.server
browser = _dashboard.browser
session = _dashboard.session

pytestmark = pytest.mark.e2e


def _number(text: str) -> int:
    return int(text.strip().replace(",", ""))


def _count(session: Session) -> int:
    return int(session.page.locator("[data-count]").get_attribute("data-count") or "-1")


def _params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def test_a_funnel_cell_opens_the_leads_it_counts_with_the_filter_shown(session: Session) -> None:
    session.sign_in("marketer")
    assert session.open("/funnel") == 200
    page = session.page
    cells = page.locator('#funnel-table td[data-col="balance_end"] a.drill')
    assert cells.count() > 0
    figures = [_number(cells.nth(i).inner_text()) for i in range(cells.count())]
    biggest = figures.index(max(figures))
    cell = cells.nth(biggest)
    stage = cell.locator("xpath=ancestor::tr").get_attribute("data-stage")
    cell.click()
    page.wait_for_load_state("networkidle")
    assert urlsplit(page.url).path == "/leads"
    assert ("stage", stage) in _params(page.url)
    assert _count(session) == figures[biggest]
    filters = page.locator("#drill-filters")
    assert filters.is_visible()
    as_of = page.locator('#drill-filters input[name="as_of"]')
    assert as_of.is_visible() and as_of.input_value()
    assert page.locator("select[name=stage] option[selected]").get_attribute("value") == stage

    # The filter is editable: remove the date and the list is the stage's leads now.
    page.click('#drill-filters a[data-remove="as_of"]')
    page.wait_for_load_state("networkidle")
    assert "as_of" not in page.url and ("stage", stage) in _params(page.url)
    assert page.locator("#drill-filters").count() == 0
    assert session.console_errors == [] and session.dialogs == []


def test_a_kpi_tile_opens_the_leads_behind_it(session: Session) -> None:
    session.sign_in("marketer")
    assert session.open("/kpis?role=department") == 200
    page = session.page
    tile = page.locator("#kpis-department a.kpi-drill").first
    figure = _number(tile.locator(".kpi-value").inner_text())
    tile.click()
    page.wait_for_load_state("networkidle")
    assert urlsplit(page.url).path == "/leads"
    assert page.locator("#drill-filters").is_visible()
    listed = _count(session)
    # MQL entries count moves: a lead that became an MQL twice is listed once.
    assert 0 < listed <= figure
    assert page.locator('#drill-filters input[name="move_to"]').count() == 1
    assert session.console_errors == []


def test_a_click_on_a_sankey_link_opens_the_leads_that_made_the_move(session: Session) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    session.sign_in("marketer")
    assert session.open("/funnel") == 200
    page = session.page
    page.wait_for_selector("#sankey svg path")
    hrefs = page.locator("#sankey").get_attribute("data-drill")
    assert hrefs and "move_from" in hrefs
    # The links are the bands painted with a gradient; click the middle of one.
    bands = page.locator("#sankey svg path[fill^='url(']")
    assert bands.count() > 0
    landed = False
    for i in range(bands.count()):
        box = bands.nth(i).bounding_box()
        if not box or box["width"] < 20:
            continue
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:  # the chart's click handler navigates: wait for it (a miss stays on /funnel)
            page.wait_for_url("**/leads?**", timeout=5000)
        except PlaywrightTimeout:
            continue
        page.wait_for_load_state("networkidle")
        landed = True
        break
    assert landed, "no Sankey link led to a list"
    params = dict(_params(page.url))
    assert "move_from" in params and "move_to" in params and "moved_after" in params
    assert page.locator("#drill-filters").is_visible()
    assert _count(session) > 0
    assert session.console_errors == []
