"""The model page's "Calibrate from outcomes" (SQLite and PostgreSQL): the proposal, its
diff and backtest are what :func:`leadflow.services.calibration.calibrate` returns; the
precision and recall at sales capacity are recomputed here from the generated history; an
admin applies exactly the shown proposal, a marketer may not, a stale or tampered proposal
is refused and nothing is applied; bad input is refused next to its field."""

from __future__ import annotations

import base64
import hashlib
import html
import random
import re
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select

from leadflow.adapters.db.tables import accounts, events, lead_models, leads, sales_reps
from leadflow.adapters.db.tables import stage_changes as stage_log
from leadflow.core.config import WEEKDAYS, load_model
from leadflow.services import lifecycle
from leadflow.services import users as user_service
from leadflow.services.calibration import calibrate
from leadflow.services.handoff import sales_spec
from leadflow.services.lifecycle.bulk import StaleModel

PASSWORD = "correct horse battery"
INDUSTRIES = ("Manufacturing", "Education", "Retail")


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def _users(services) -> None:
    for role in ("admin", "marketer"):
        user_service.create_user(
            services.engine,
            email=f"{role}@example.com",
            password=PASSWORD,
            role=role,
            now=services.clock(),
        )


def _active(services) -> dict:
    with services.engine.connect() as conn:
        row = conn.execute(
            select(lead_models.c.version, lead_models.c.source, lead_models.c.content_hash).where(
                lead_models.c.active
            )
        ).one()
    return dict(row._mapping)


def _history(services) -> list[tuple[bool, dict[str, int]]]:
    """200 leads over the last 100 days, 30% won. Winners mostly attended webinars before the
    win and are mostly manufacturers; newsletter opens (up to 44, where today's points make 25
    opens worth one webinar) are drawn the same way for everyone; demo requests come only
    after a win. One active rep takes one lead a day. Returns, per
    lead, won and the occurrences of each rule before the win (or now)."""
    rng = random.Random(1414)
    now = services.clock()
    start = now - timedelta(days=100)
    with services.engine.begin() as conn:
        model = services.models.active(conn, now)
        won_stage = model.stage_for("won")
        conn.execute(
            insert(sales_reps).values(
                key="solo", name="Solo Rep", email="solo@example.com", active=True,
                daily_capacity=1, territories=[], weight=1.0, source="api",
                created_at=start, updated_at=start,
            )
        )  # fmt: skip
        truth: list[tuple[bool, dict[str, int]]] = []
        for i in range(200):
            won = rng.random() < 0.3
            industry = (
                rng.choice(("Manufacturing", "Manufacturing", "Retail"))
                if won
                else rng.choice(INDUSTRIES)
            )
            account_id = conn.execute(
                insert(accounts).values(
                    name=f"Company {i}", domain=f"c{i}.example", industry=industry,
                    employee_count=rng.choice((12, 80, 400)), country=rng.choice(("DE", "KR")),
                    created_at=start, updated_at=start,
                )
            ).inserted_primary_key[0]  # fmt: skip
            lead_id = conn.execute(
                insert(leads).values(
                    email=f"lead{i}@c{i}.example", account_id=account_id, attributes={},
                    consent_status="granted",
                    created_at=start, updated_at=start,
                )
            ).inserted_primary_key[0]  # fmt: skip
            first = start + timedelta(days=rng.randrange(0, 10), hours=3)
            won_at = first + timedelta(days=46 + rng.randrange(0, 30), hours=12)
            webinars = rng.randrange(1, 4) if (won and rng.random() < 0.8) else 0
            if not won and rng.random() < 0.1:
                webinars = 1
            opens = rng.randrange(0, 45)  # one a day, all before any win
            rows = [("webinar_attended", first + timedelta(days=3 * d)) for d in range(webinars)]
            rows += [("email_open", first + timedelta(days=d, hours=1)) for d in range(opens)]
            if won:
                rows += [("demo_request", won_at + timedelta(days=d + 1)) for d in range(2)]
                conn.execute(
                    insert(stage_log).values(
                        lead_id=lead_id, from_stage="sql", to_stage=won_stage, at=won_at,
                        rule="crm", model_version=model.version, recorded_at=won_at,
                    )
                )  # fmt: skip
            conn.execute(  # known from the first touch on (a form, an import ...)
                insert(events).values(
                    message_id=f"id-{i}", type="identify", name=None, lead_id=lead_id,
                    properties={"traits": {"email": f"lead{i}@c{i}.example"}}, context={},
                    occurred_at=first - timedelta(hours=1), received_at=first,
                )
            )  # fmt: skip
            for n, (name, at) in enumerate(rows):
                conn.execute(
                    insert(events).values(
                        message_id=f"m-{i}-{n}", type="track", name=name, lead_id=lead_id,
                        properties={}, context={}, occurred_at=at, received_at=at,
                    )
                )  # fmt: skip
            truth.append((won, {"webinar_attended": webinars, "email_open": opens}))
    return truth


@pytest.fixture
def world(services):
    _users(services)
    return _history(services)


def csrf_from(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "page has no CSRF field"
    return found.group(1)


def sign_in(client, role: str) -> str:
    page = client.get("/login")
    form = {"email": f"{role}@example.com", "password": PASSWORD}
    response = client.post(
        "/login", data={**form, "csrf_token": csrf_from(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303
    return csrf_from(client.get("/model").text)


def post_calibrate(client, token: str, outcome="won", min_support="10"):
    return client.post(
        "/model/calibrate",
        data={"csrf_token": token, "outcome": outcome, "min_support": min_support},
    )


def apply_fields(page: str) -> dict[str, str]:
    form = page.split('id="apply-form"')[1].split("</form>")[0]
    return {
        name: html.unescape(value)
        for name, value in re.findall(r'name="([a-z_]+)" value="([^"]*)"', form)
    }


def figure(page: str, dd_id: str) -> tuple[str, str]:
    found = re.search(rf'data-current="([^"]*)" data-proposed="([^"]*)" id="{dd_id}"', page)
    if found is None:
        found = re.search(rf'id="{dd_id}" data-current="([^"]*)" data-proposed="([^"]*)"', page)
    assert found, dd_id
    return found.group(1), found.group(2)


def at_capacity(truth, points: dict[str, float], k: int) -> tuple[float, float]:
    """Precision and recall of the k highest engagement scores (ties shared pro rata)."""
    scored = sorted(
        ((sum(points[r] * n for r, n in c.items()), won) for won, c in truth), reverse=True
    )
    cut = scored[k - 1][0]
    above = [w for s, w in scored if s > cut]
    tied = [w for s, w in scored if s == cut]
    hits = sum(above) + (k - len(above)) * sum(tied) / len(tied)
    return hits / k, hits / sum(w for w, _ in truth)


def working_days_since(services, first: datetime) -> int:
    spec = sales_spec(services.active_model())
    zone = ZoneInfo(spec.timezone)
    day, last = first.astimezone(zone).date(), services.clock().astimezone(zone).date()
    days = {WEEKDAYS.index(d) for d in spec.working_hours.days}
    count = 0
    while day <= last:
        count += day.weekday() in days and day not in set(spec.working_hours.holidays)
        day += timedelta(days=1)
    return count


def test_calibrate_shows_the_proposal_diff_and_backtest_and_admin_applies_it(
    client, services, world
):
    truth = world
    token = sign_in(client, "admin")
    before = _active(services)
    page = client.get("/model").text
    assert 'id="calibrate-form"' in page and 'id="calibration"' not in page

    response = post_calibrate(client, token)
    assert response.status_code == 200, response.text[:2000]
    page = response.text
    expected = calibrate(services.engine, services.models, "won", services.clock())
    p, cap = expected.proposal, expected.at_capacity

    # The proposal table: one row per rule/value some lead has, with the service's figures.
    for row in p.rows:
        tr = re.search(rf'<tr data-rule="{re.escape(row.key)}".*?</tr>', page, re.S)
        assert (tr is not None) == (row.support > 0), row.key
        if tr is not None:
            cells = dict(re.findall(r'data-col="(\w+)">(?:<strong>)?([^<]*)<', tr.group(0)))
            assert float(cells["proposed"].replace(",", "")) == row.proposed, row.key
            assert float(cells["current"].replace(",", "")) == row.current, row.key
            assert int(cells["leads"].replace(",", "")) == row.support, row.key
            assert int(cells["converters"].replace(",", "")) == row.converters, row.key
    webinar = re.search(r'<tr data-rule="webinar_attended".*?</tr>', page, re.S)
    assert webinar and f">{sum(1 for _, c in truth if c['webinar_attended'])}<" in webinar.group(0)
    assert 'data-rule="demo_request"' not in page  # only ever after a win: no support

    # The diff, escaped line by line, equals the service's.
    assert expected.diff
    shown = re.search(r'<pre class="diff" id="calibration-diff">(.*?)</pre>', page, re.S)
    assert shown is not None
    spans = re.findall(r'<span class="diff-\w+">(.*?)</span>', shown.group(1))
    lines = [html.unescape(x) for x in spans]
    assert lines == expected.diff.splitlines()
    assert '<span class="diff-add">+version: ' in shown.group(1)

    # Threshold, ROC-AUC and precision/recall at capacity as the service computed them ...
    assert figure(page, "cal-threshold") == (str(p.threshold_current), str(p.threshold_proposed))
    assert figure(page, "cal-auc") == (f"{p.auc_current:.4f}", f"{p.auc_proposed:.4f}")
    assert figure(page, "cal-precision") == (
        f"{cap.precision_current:.4f}",
        f"{cap.precision_proposed:.4f}",
    )
    assert figure(page, "cal-recall") == (f"{cap.recall_current:.4f}", f"{cap.recall_proposed:.4f}")
    # ... and as this file computes them from the history it generated: one rep taking one
    # lead a day over the working days since the first event.
    with services.engine.connect() as conn:
        first = conn.execute(select(func.min(events.c.occurred_at))).scalar_one()
    k = working_days_since(services, first)
    assert cap.capacity == k and 60 < k < 80
    current = load_model(expected.source)
    proposed = load_model(expected.proposed_source)
    cur_pts = {r.id: r.points for r in current.spec.engagement.rules}
    new_pts = {r.id: r.points for r in proposed.spec.engagement.rules}
    prec_cur, rec_cur = at_capacity(truth, cur_pts, k)
    prec_new, rec_new = at_capacity(truth, new_pts, k)
    assert abs(cap.precision_current - prec_cur) < 1e-9
    assert abs(cap.recall_current - rec_cur) < 1e-9
    assert abs(cap.precision_proposed - prec_new) < 1e-9
    assert abs(cap.recall_proposed - rec_new) < 1e-9

    assert prec_new > prec_cur  # the webinars that separate winners now rank them first

    # The backtest of the proposal, in the same partial the upload backtest uses.
    report = page.split('id="calibration-backtest"')[1]
    bt = expected.backtest
    assert bt.candidate.version == proposed.version and proposed.version in report
    assert 'data-chart="lines"' in report
    for summary in (bt.current, bt.candidate):
        assert f'<div class="kpi-value">{summary.mql:,}</div>' in report

    # Nothing was applied yet.
    assert _active(services) == before

    # Apply: exactly the proposed YAML becomes the active model.
    fields = apply_fields(page)
    assert base64.b64decode(fields["proposed_source"]).decode() == expected.proposed_source
    applied = client.post("/model/calibrate/apply", data=fields)
    assert applied.status_code == 200, applied.text[:2000]
    after = _active(services)
    assert after["source"] == expected.proposed_source
    assert after["version"] == proposed.version == f"{before['version']}-calibrated-won"
    assert after["content_hash"] == proposed.content_hash
    done = applied.text
    assert 'id="calibration-applied"' in done and proposed.version in done
    status = done.split('id="model-status"')[1].split("</dl>")[0]
    assert f"<code>{proposed.version}</code>" in status
    # Re-posting the same proposal now is stale: its base model is no longer active.
    again = client.post("/model/calibrate/apply", data=fields)
    assert again.status_code == 409 and "active model changed" in again.text
    with services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(lead_models)).scalar_one() == 2


def test_marketer_sees_the_proposal_without_the_button_and_may_not_apply(client, services, world):
    admin_token = sign_in(client, "admin")
    fields = apply_fields(post_calibrate(client, admin_token).text)
    client.cookies.clear()
    token = sign_in(client, "marketer")
    before = _active(services)
    response = post_calibrate(client, token)
    assert response.status_code == 200
    assert 'id="calibration-diff"' in response.text and 'id="calibration-backtest"' in response.text
    assert 'id="apply-form"' not in response.text and 'id="apply-admin-only"' in response.text
    refused = client.post("/model/calibrate/apply", data={**fields, "csrf_token": token})
    assert refused.status_code == 403
    assert _active(services) == before


def test_a_stale_or_tampered_proposal_is_refused_and_nothing_is_applied(client, services, world):
    token = sign_in(client, "admin")
    fields = apply_fields(post_calibrate(client, token).text)
    before = _active(services)

    def refused(data: dict[str, str], status: int, text: str) -> None:
        response = client.post("/model/calibrate/apply", data=data)
        assert response.status_code == status, response.text[:1000]
        assert 'id="apply-errors"' in response.text and text in response.text
        assert _active(services) == before

    refused({**fields, "proposed_hash": "0" * 64}, 422, "proposed_hash:")
    other = before["source"].replace(f'version: "{before["version"]}"', 'version: "mine"')
    assert other != before["source"]
    forged = {
        **fields,
        "proposed_source": base64.b64encode(other.encode()).decode(),
        "proposed_hash": hashlib.sha256(other.encode()).hexdigest(),
    }
    refused(forged, 422, "signature:")
    refused({**fields, "signature": "f" * 64}, 422, "signature:")
    refused({**fields, "active_hash": "a" * 64}, 422, "signature:")
    refused({**fields, "proposed_source": "%%% not base64"}, 422, "proposed_source:")
    no_csrf = {k: v for k, v in fields.items() if k != "csrf_token"}
    assert client.post("/model/calibrate/apply", data=no_csrf).status_code == 403
    assert _active(services) == before

    # Someone applies another model after the proposal was made: it is stale now.
    newer = before["source"].replace(f'version: "{before["version"]}"', 'version: "newer"')
    lifecycle.apply_model(
        services.engine, services.models, load_model(newer), newer, services.clock()
    )
    response = client.post("/model/calibrate/apply", data=fields)
    assert response.status_code == 409
    assert "active model changed" in response.text and "Nothing was applied." in response.text
    assert _active(services)["version"] == "newer"


@pytest.mark.parametrize(
    ("outcome", "min_support", "field", "text"),
    [
        ("nope", "10", "outcome-error", "outcome: &#39;nope&#39; is not one of won"),
        ("<script>x</script>", "10", "outcome-error", "&lt;script&gt;x&lt;/script&gt;"),
        ("won", "-3", "min-support-error", "min support: &#39;-3&#39;"),
        ("won", "1.5", "min-support-error", "not a whole number"),
        ("won", "ten", "min-support-error", "not a whole number"),
        ("won", "", "min-support-error", "not a whole number"),
        ("won", "0", "min-support-error", "not a whole number"),
        ("won", "١٢", "min-support-error", "not a whole number"),  # Arabic-Indic digits
    ],
)
def test_bad_calibrate_input_is_refused_next_to_its_field(
    client, services, outcome, min_support, field, text
):
    _users(services)
    token = sign_in(client, "admin")
    before = _active(services)
    response = post_calibrate(client, token, outcome, min_support)
    assert response.status_code == 422
    assert f'id="{field}">' in response.text and text in response.text
    assert 'id="calibration"' not in response.text
    assert "<script>x</script>" not in response.text
    assert _active(services) == before


def test_a_store_without_outcomes_shows_the_calibration_error(client, services):
    _users(services)
    token = sign_in(client, "marketer")
    response = post_calibrate(client, token)
    assert response.status_code == 422
    error = response.text.split('id="calibration-error"')[1].split("</div>")[0]
    assert "both converters and non-converters are needed" in error
    assert client.post("/model/calibrate", data={"outcome": "won"}).status_code == 403  # no CSRF


def test_korean_user_sees_the_calibration_in_korean(client, services, world):
    user_service.create_user(
        services.engine,
        email="ko@example.com",
        password=PASSWORD,
        role="admin",
        locale="ko",
        now=services.clock(),
    )
    page = client.get("/login")
    client.post(
        "/login",
        data={"email": "ko@example.com", "password": PASSWORD, "csrf_token": csrf_from(page.text)},
    )  # fmt: skip
    token = csrf_from(client.get("/model").text)
    text = post_calibrate(client, token).text
    for label in ("성과 기반 보정", "제안 점수", "영업 처리 용량 기준 정밀도", "이 모델 적용"):
        assert label in text


def test_two_admins_applying_proposals_of_the_same_model_at_once_apply_one(services, world):
    """The stale check runs under a lock in the switch's own transaction: of two applies
    against the same active model, exactly one switches and the other is refused."""
    before = _active(services)
    sources = [
        before["source"].replace(f'version: "{before["version"]}"', f'version: "{name}"')
        for name in ("left", "right")
    ]
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def run(source: str) -> None:
        model = load_model(source)
        barrier.wait()
        try:
            lifecycle.apply_model(
                services.engine,
                services.models,
                model,
                source,
                services.clock(),
                expected_active=before["content_hash"],
            )
            outcomes[model.version] = "applied"
        except StaleModel as exc:
            assert exc.expected == before["content_hash"]
            outcomes[model.version] = "stale"

    threads = [threading.Thread(target=run, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["applied", "stale"]
    winner = next(v for v, o in outcomes.items() if o == "applied")
    assert _active(services)["version"] == winner
    with services.engine.connect() as conn:
        versions = set(conn.execute(select(lead_models.c.version)).scalars())
    assert versions == {before["version"], winner}  # the refused one stored nothing
