"""Smart lists in a real browser: a marketer builds a filtered, sorted view, saves it and
exports it; the CSV holds exactly the leads the page counts."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

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


def test_marketer_builds_a_filtered_view_saves_it_and_exports_it(session: Session) -> None:
    session.sign_in("marketer")
    assert session.open("/leads") == 200
    page = session.page
    source = page.locator("select[name=source] option").nth(1).get_attribute("value")
    assert source
    page.select_option("select[name=source]", source)
    page.click("#lead-filters button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert f"source={source}" in page.url
    page.click('th[data-col="engagement"] a')
    page.wait_for_load_state("networkidle")
    assert "sort=-engagement" in page.url
    assert page.locator('th[data-col="engagement"]').get_attribute("aria-sort") == "descending"
    count = int(page.locator("[data-count]").get_attribute("data-count") or "0")
    assert count > 0

    page.fill("form[data-save-view] input[name=name]", "Engaged by source")
    page.click("form[data-save-view] button[type=submit]")
    page.wait_for_load_state("networkidle")
    saved = page.locator('a[data-view="Engaged by source"]')
    assert saved.count() == 1
    assert f"source={source}" in (saved.get_attribute("href") or "")

    session.open("/leads")  # the saved view brings the filter and sort back
    page.click('a[data-view="Engaged by source"]')
    page.wait_for_load_state("networkidle")
    assert f"source={source}" in page.url and "sort=-engagement" in page.url

    with page.expect_download() as download:
        page.click("a[data-export]")
    path = Path(download.value.path())
    text = path.read_text(encoding="utf-8")
    assert text.startswith("id,email,"), text[:300]
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == count
    assert {r["source"] for r in rows} == {source}
    scores = [float(r["engagement"]) for r in rows if r["engagement"]]
    assert scores == sorted(scores, reverse=True)
    assert session.console_errors == [] and session.dialogs == []
