"""Reports over the store (both backends): numbers equal hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from leadflow.adapters.db.tables import (
    accounts,
    email_sends,
    events,
    form_submissions,
    leads,
    opportunities,
    sales_actions,
    seminar_attendees,
    seminars,
    stage_changes,
)
from leadflow.bootstrap import Services
from leadflow.core.config import check, load_model
from leadflow.services import reports as svc

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD = svc.Period(T0, T0 + timedelta(days=15))


def day(d: float) -> datetime:
    return T0 + timedelta(days=d)


def _store(services: Services) -> svc.Store:
    with services.engine.begin() as conn:
        model = services.models.active(conn, T0)
    return svc.load_store(services.engine, model)


def _lead(i: int, account_id: int | None, at: datetime) -> dict[str, Any]:
    return {
        "id": i,
        "email": f"p{i}@example.com",
        "account_id": account_id,
        "created_at": at,
        "updated_at": at,
    }


def _change(lead_id: int, frm: str, to: str, at: datetime, version: str = "2024.1") -> dict:
    return {
        "lead_id": lead_id,
        "from_stage": frm,
        "to_stage": to,
        "at": at,
        "rule": "test",
        "model_version": version,
        "cause": None,
        "recorded_at": at,
    }


_n = iter(range(1, 10**6))


def _event(lead_id: int, at: datetime, kind: str, name: str | None = None, **kw: Any) -> dict:
    return {
        "message_id": f"m{next(_n)}-{lead_id}-{at.timestamp()}",
        "type": kind,
        "name": name,
        "lead_id": lead_id,
        "properties": kw.pop("properties", {}),
        "context": {},
        "page_url": kw.pop("page_url", None),
        "channel": kw.pop("channel", None),
        "utm_campaign": kw.pop("campaign", None),
        "occurred_at": at,
        "received_at": at,
    }


def _action(lead_id: int, name: str, at: datetime, amount: float | None = None) -> dict:
    return {
        "action_id": f"{name}-{lead_id}-{at.timestamp()}",
        "lead_id": lead_id,
        "name": name,
        "at": at,
        "amount": amount,
        "created_at": at,
    }


@pytest.fixture
def small_world(services: Services) -> Services:
    """Three leads with a hand-written history (see the expected numbers in the tests).

    lead 1 (account 1, target, software): organic blog page d1, email click d3, pricing page
      (direct) d5; acquired d1 -> nurturing d3 -> mql d5 -> appointment d6 -> opportunity d7
      (qualify 1000) -> won d10; webinar registered/attended d11/d12 (after the win).
    lead 2 (account 1): paid product page d2, white paper d4; acquired d2 -> nurturing d4 ->
      mql d8 -> appointment d9 -> opportunity d9.5 (qualify 500), still open; webinar
      registered d11.
    lead 3 (account 2, other, retail): social careers page d2; acquired d2 -> dead end d6.
    """
    with services.engine.begin() as conn:
        conn.execute(
            insert(accounts),
            [
                {
                    "id": 1,
                    "name": "Acme",
                    "industry": "software",
                    "employee_count": 300,
                    "is_target": True,
                    "traits": {},
                    "created_at": T0,
                    "updated_at": T0,
                },
                {
                    "id": 2,
                    "name": "Shop",
                    "industry": "retail",
                    "employee_count": 20,
                    "is_target": False,
                    "traits": {},
                    "created_at": T0,
                    "updated_at": T0,
                },
            ],
        )
        conn.execute(insert(leads), [_lead(1, 1, day(1)), _lead(2, 1, day(2)), _lead(3, 2, day(2))])
        conn.execute(
            insert(stage_changes),
            [
                _change(1, "anonymous", "acquired", day(1)),
                _change(1, "acquired", "nurturing", day(3)),
                _change(1, "nurturing", "mql", day(5)),
                _change(1, "mql", "appointment", day(6)),
                _change(1, "appointment", "opportunity", day(7)),
                _change(1, "opportunity", "won", day(10), version="2024.2"),
                _change(2, "anonymous", "acquired", day(2)),
                _change(2, "acquired", "nurturing", day(4)),
                _change(2, "nurturing", "mql", day(8)),
                _change(2, "mql", "appointment", day(9)),
                _change(2, "appointment", "opportunity", day(9.5)),
                _change(3, "anonymous", "acquired", day(2)),
                _change(3, "acquired", "dead_end", day(6)),
            ],
        )
        site = "https://www.acme.example"
        conn.execute(
            insert(events),
            [
                _event(
                    1,
                    day(1),
                    "page",
                    page_url=f"{site}/blog/a?utm_campaign=c1",
                    channel="organic_search",
                    campaign="c1",
                ),
                _event(1, day(2.9), "track", "email_sent", channel="email", campaign="nl"),
                _event(2, day(2.9), "track", "email_sent", channel="email", campaign="nl"),
                _event(1, day(2.95), "track", "email_open", channel="email", campaign="nl"),
                _event(1, day(3), "track", "email_click", channel="email", campaign="nl"),
                _event(1, day(5), "page", page_url=f"{site}/pricing/", channel="direct"),
                _event(
                    2,
                    day(2),
                    "page",
                    page_url=f"{site}/product/x",
                    channel="paid_search",
                    campaign="c2",
                ),
                _event(
                    2,
                    day(4),
                    "track",
                    "content_download",
                    channel="direct",
                    properties={"asset": "wp", "asset_type": "white_paper"},
                ),
                _event(3, day(2), "page", page_url=f"{site}/careers", channel="social"),
                _event(
                    1,
                    day(11),
                    "track",
                    "webinar_registered",
                    channel="webinar",
                    properties={"webinar": "w1"},
                ),
                _event(
                    1,
                    day(12),
                    "track",
                    "webinar_attended",
                    channel="webinar",
                    properties={"webinar": "w1"},
                ),
                _event(
                    2,
                    day(11),
                    "track",
                    "webinar_registered",
                    channel="webinar",
                    properties={"webinar": "w1"},
                ),
            ],
        )
        conn.execute(
            insert(sales_actions),
            [
                _action(1, "accept", day(6)),
                _action(1, "qualify", day(7), 1000.0),
                _action(1, "win", day(10)),
                _action(2, "accept", day(9)),
                _action(2, "qualify", day(9.5), 500.0),
            ],
        )
    return services


def test_funnel_counts_flows_balances_and_cvr(small_world: Services) -> None:
    report = svc.funnel_report(_store(small_world), PERIOD)
    rows = {r["stage"]: r for r in report["stages"]}
    acquired = rows["acquired"]
    assert (acquired["flow_in"], acquired["out_next"], acquired["out_dead_end"]) == (3, 2, 1)
    assert acquired["balance_start"] == 0 and acquired["balance_end"] == 0
    assert acquired["cvr"] == pytest.approx(2 / 3)
    # days in acquired: lead 1 two days, lead 2 two days, lead 3 four days
    assert acquired["median_days_in_stage"] == pytest.approx(2.0)
    opp = rows["opportunity"]
    assert (opp["flow_in"], opp["out_next"], opp["balance_end"]) == (2, 1, 1)
    assert rows["won"]["balance_end"] == 1 and rows["dead_end"]["balance_end"] == 1
    links = {(lk["source"], lk["target"]): lk["value"] for lk in report["sankey"]}
    assert links[("(new)", "anonymous")] == 3
    assert links[("acquired", "dead_end")] == 1 and links[("opportunity", "won")] == 1
    assert report["velocity"][0]["won"] == 1
    assert report["velocity"][0]["median_days"] == pytest.approx(9.0)


def test_funnel_before_the_period_shows_balances_at_start(small_world: Services) -> None:
    period = svc.Period(day(5.5), day(15))
    rows = {r["stage"]: r for r in svc.funnel_report(_store(small_world), period)["stages"]}
    # at d5.5: lead 1 in mql, lead 2 in nurturing, lead 3 in acquired
    assert rows["mql"]["balance_start"] == 1
    assert rows["nurturing"]["balance_start"] == 1
    assert rows["acquired"]["balance_start"] == 1
    assert rows["acquired"]["flow_in"] == 0 and rows["acquired"]["out_dead_end"] == 1


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("channel", {"organic_search": 1, "paid_search": 1, "social": 1}),
        ("campaign", {"c1": 1, "c2": 1, None: 1}),
        ("industry", {"software": 2, "retail": 1}),
        ("account_tier", {"target": 2, "other": 1}),
        ("employee_band", {"250-999": 2, "1-49": 1}),
        ("model_version", {"2024.2": 1, "2024.1": 2}),
    ],
)
def test_funnel_slices_split_the_acquired_flow(
    small_world: Services, by: str, expected: dict[Any, int]
) -> None:
    report = svc.funnel_report(_store(small_world), PERIOD, by=by)
    got = {r[by]: r["flow_in"] for r in report["stages"] if r["stage"] == "acquired"}
    assert {k: v for k, v in got.items() if v} == expected


def test_acquisition_month_slice(small_world: Services) -> None:
    report = svc.funnel_report(_store(small_world), PERIOD, by="acquisition_month")
    got = {r["acquisition_month"]: r["flow_in"] for r in report["stages"] if r["stage"] == "won"}
    assert got == {"2026-03-01": 1}


def test_attribution_credits_the_qualify_amount(small_world: Services) -> None:
    store = _store(small_world)
    first = svc.attribution_report(store, PERIOD, model="first_touch")
    assert first["conversions"] == 1 and first["conversion_value"] == 1000.0
    credit = {r["touch"]: r["value"] for r in first["credits"]}
    assert credit["organic_search"] == 1000.0
    last = {
        r["touch"]: r["value"]
        for r in svc.attribution_report(store, PERIOD, model="last_touch")["credits"]
    }
    assert last["direct"] == 1000.0
    linear = svc.attribution_report(store, PERIOD, model="linear")
    lin = {r["touch"]: r["value"] for r in linear["credits"]}
    # four touches: organic blog page, e-mail open, e-mail click, direct pricing page
    assert lin == pytest.approx(
        {
            "organic_search": 250.0,
            "email": 500.0,
            "direct": 250.0,
            **{k: 0.0 for k in lin if k not in ("organic_search", "email", "direct")},
        }
    )
    assert sum(lin.values()) == pytest.approx(1000.0)


def test_opportunity_amounts_take_precedence_over_qualify_amounts(small_world: Services) -> None:
    # The won lead's opportunity was re-priced in the CRM (1,000 at qualify -> 1,800); the
    # open one has an opportunity of 700. Revenue and pipeline read the opportunities.
    with small_world.engine.begin() as conn:
        for lead_id, amount, stage, opened in (
            (1, 1800.0, "won", day(7)),
            (2, 700.0, "open", day(9.5)),
        ):
            conn.execute(
                insert(opportunities).values(
                    name=f"deal {lead_id}",
                    lead_id=lead_id,
                    amount=amount,
                    stage=stage,
                    created_at=opened,
                    updated_at=opened,
                    closed_at=day(10) if stage == "won" else None,
                )
            )
    store = _store(small_world)
    first = svc.attribution_report(store, PERIOD, model="first_touch")
    assert first["conversion_value"] == 1800.0
    assert {r["touch"]: r["value"] for r in first["credits"]}["organic_search"] == 1800.0
    k = svc.kpis(store, PERIOD, "executive")["kpis"]
    assert (k["won_revenue"], k["pipeline_value"]) == (1800.0, 700.0)


def test_attribution_all_models_and_levels_add_up(small_world: Services) -> None:
    store = _store(small_world)
    report = svc.attribution_report(store, PERIOD, model="all", touch="campaign")
    names = {m["model"] for m in report["models"]}
    assert {"w_shaped", "full_path", "markov_order_3", "shapley_conversions"} <= names
    for m in report["models"]:
        total = sum(r["value"] for r in report["credits"] if r["model"] == m["model"])
        assert total == pytest.approx(1000.0), m["model"]
    mql = svc.attribution_report(store, PERIOD, model="linear", to_stage="mql")
    assert mql["conversions"] == 2 and mql["conversion_value"] == 2.0  # no amount yet: counts
    account = svc.attribution_report(store, PERIOD, model="linear", level="account")
    assert sum(r["value"] for r in account["credits"]) == pytest.approx(1000.0)
    # Account 1's path holds lead 1's touches and lead 2's touches before the win (d10).
    touches = {r["touch"] for r in account["credits"] if r["value"] > 0}
    assert touches == {"organic_search", "email", "direct", "paid_search"}
    assert {p["person_id"] for p in account["per_person"]} == {1, 2}
    content = svc.attribution_report(store, PERIOD, model="linear", touch="content")
    # content: asset or page path; e-mail touches have none and are left out
    assert {r["touch"]: r["value"] for r in content["credits"]} == {
        "/blog/a": 500.0,
        "/pricing": 500.0,
    }


def test_kpis_by_role(small_world: Services) -> None:
    store = _store(small_world)
    exe = svc.kpis(store, PERIOD, "executive")
    k = exe["kpis"]
    assert (k["won_leads"], k["won_revenue"]) == (1, 1000.0)
    assert (k["pipeline_leads"], k["pipeline_value"]) == (1, 500.0)
    assert k["marketing_sourced_revenue"] == 1000.0 and k["marketing_influenced_won"] == 1
    assert exe["revenue_by_first_channel"] == [
        {"first_channel": "organic_search", "won": 1, "revenue": 1000.0}
    ]
    dep = svc.kpis(store, PERIOD, "department")
    assert dep["kpis"] == {"mql_entries": 2, "accepted": 2, "sales_acceptance": 1.0}
    assert dep["bottleneck"]["stage"] is not None
    camp = svc.kpis(store, PERIOD, "campaign")
    nl = next(r for r in camp["email"] if r["campaign"] == "nl")
    assert (nl["sent"], nl["opened"], nl["clicked"], nl["open_rate"]) == (2, 1, 1, 0.5)
    assert camp["webinars"] == [
        {"webinar": "w1", "registered": 2, "attended": 1, "attendance_rate": 0.5}
    ]
    assert camp["content"][0]["asset"] == "wp" and camp["content"][0]["downloads"] == 1


def test_campaigns_report_has_program_email_and_seminar_funnels(small_world: Services) -> None:
    def send(i: int, lead: int, step: str, sent: datetime, **times: datetime) -> dict:
        return {
            "idempotency_key": f"program:education:{step}:{lead}",
            "message_id": f"<{i}@t>",
            "lead_id": lead,
            "program_key": "education",
            "step_id": step,
            "template": "nurture",
            "to_email": f"l{lead}@x.example",
            "subject": "s",
            "status": "sent",
            "planned_at": sent,
            "sent_at": sent,
            "opened_at": times.get("opened"),
            "clicked_at": times.get("clicked"),
        }

    with small_world.engine.begin() as conn:
        conn.execute(
            insert(email_sends),
            [
                send(1, 1, "welcome", day(1), opened=day(1.1), clicked=day(1.2)),
                send(2, 2, "welcome", day(1), opened=day(2)),
                send(3, 1, "deeper", day(4)),
                send(4, 2, "deeper", day(40)),  # outside the period
            ],
        )
        conn.execute(
            insert(form_submissions),
            [
                {"form_key": "white-paper", "lead_id": 1, "fields": {}, "submitted_at": day(3)},
                {"form_key": "white-paper", "lead_id": 2, "fields": {}, "submitted_at": day(30)},
            ],
        )
        seminar = conn.execute(
            insert(seminars)
            .values(key="w1", title="W1", starts_at=day(5), created_at=T0, updated_at=T0)
            .returning(seminars.c.id)
        ).scalar_one()
        conn.execute(
            insert(seminar_attendees),
            [
                {"seminar_id": seminar, "lead_id": 1, "invited_at": day(1),
                 "registered_at": day(2), "attended_at": day(5)},
                {"seminar_id": seminar, "lead_id": 2, "invited_at": day(1),
                 "registered_at": None, "attended_at": None},
            ],
        )  # fmt: skip
    report = svc.campaigns_report(_store(small_world), PERIOD)
    steps = {r["step"]: r for r in report["programs"]}
    assert (steps["welcome"]["sent"], steps["welcome"]["opened"]) == (2, 2)
    assert steps["welcome"]["clicked"] == 1
    # Lead 1 submitted a form two days after the welcome (lead 2 a month later: not counted);
    # the form came before the "deeper" email, so it does not count for that step.
    assert steps["welcome"]["form_submitted"] == 1 and steps["welcome"]["form_rate"] == 0.5
    assert steps["deeper"]["sent"] == 1 and steps["deeper"]["form_submitted"] == 0
    (w1,) = report["seminars"]
    assert (w1["invited"], w1["registered"], w1["attended"]) == (2, 1, 1)
    assert w1["rates"]["register"] == 0.5


def test_suggest_points_diff_is_a_valid_model(small_world: Services) -> None:
    store = _store(small_world)
    result = svc.suggest_points(store, PERIOD, model="linear")
    assert result.check_ok and check(result.proposed_source).ok
    proposed = {r.id: r.points for r in load_model(result.proposed_source).spec.engagement.rules}
    # linear: lead 1's four touches get 250 each; a touch matching two rules splits it.
    # Points earned by all touches: page_view 4x1, blog 2, email_open 1, email_click 5,
    # pricing 10, product 5, white paper 20, webinar_registered 10 = 57; k = 57 / 1000.
    assert result.scale == pytest.approx(0.057)
    assert proposed["page_view"] == 4  # 0.057 * (125 + 125) / 4 occurrences = 3.56
    assert proposed["email_click"] == 14  # 0.057 * 250 = 14.25
    assert proposed["email_open"] == 14
    assert proposed["pricing_page"] == 7  # 0.057 * 125 = 7.1
    assert proposed["download_white_paper"] == 0  # touched, never credited
    assert proposed["careers_page"] == -10  # negative rules are kept
    assert proposed["quote_request"] == 50  # no occurrences: kept
    assert '-version: "2024.4"' in result.diff and '+version: "2024.4-suggested"' in result.diff
    assert "# leadflow's shipped lead model" in result.proposed_source  # comments kept


def test_worked_example_through_the_store(services: Services) -> None:
    """The article's example: 10,000 acquired, 7,000 to nurturing, 1,000 dead end."""
    n = 10_000
    with services.engine.begin() as conn:
        conn.execute(insert(leads), [_lead(i, None, day(1)) for i in range(1, n + 1)])
        rows = [
            _change(i, "anonymous", "acquired", day(1) + timedelta(seconds=i))
            for i in range(1, n + 1)
        ]
        rows += [_change(i, "acquired", "nurturing", day(5)) for i in range(1, 7_001)]
        rows += [_change(i, "acquired", "dead_end", day(6)) for i in range(7_001, 8_001)]
        conn.execute(insert(stage_changes), rows)
        assert conn.execute(select(func.count()).select_from(stage_changes)).scalar() == 18_000
    row = {r["stage"]: r for r in svc.funnel_report(_store(services), PERIOD)["stages"]}["acquired"]
    assert row["flow_in"] == 10_000
    assert (row["out_next"], row["out_dead_end"], row["balance_end"]) == (7_000, 1_000, 2_000)
    assert row["cvr"] == pytest.approx(0.7)


def test_bad_report_inputs_are_refused(small_world: Services) -> None:
    store = _store(small_world)
    with pytest.raises(svc.ReportError, match="--by"):
        svc.funnel_report(store, PERIOD, by="email; DROP TABLE leads")
    with pytest.raises(svc.ReportError, match="--to-stage"):
        svc.attribution_report(store, PERIOD, to_stage="<script>")
    with pytest.raises(svc.ReportError, match="--model"):
        svc.attribution_report(store, PERIOD, model="magic")
    with pytest.raises(svc.ReportError, match="--role"):
        svc.kpis(store, PERIOD, "ceo")
    with pytest.raises(svc.ReportError, match="after"):
        svc.Period(day(3), day(1))
    with pytest.raises(svc.ReportError, match="not a date"):
        svc.parse_day("2026-02-30", "--from")


def test_report_api(small_world: Services, client: Any, admin_token: str) -> None:
    auth = {"Authorization": f"Bearer {admin_token}"}
    q = "from=2026-03-01&to=2026-03-16"
    funnel = client.get(f"/api/reports/funnel?{q}&by=industry", headers=auth)
    assert funnel.status_code == 200, funnel.text
    assert funnel.json()["slice_by"] == "industry"
    attr = client.get(f"/api/reports/attribution?{q}&model=first_touch", headers=auth).json()
    assert attr["credits"][0] == {
        "model": "first_touch",
        "touch_key": "channel",
        "touch": "organic_search",
        "conversions": 1.0,
        "value": 1000.0,
        "share_of_value": 1.0,
    }
    assert client.get(f"/api/reports/campaigns?{q}", headers=auth).status_code == 200
    kpi = client.get(f"/api/reports/kpis?{q}&role=executive", headers=auth).json()
    assert kpi["kpis"]["won_revenue"] == 1000.0
    for path, field in [
        (f"/api/reports/funnel?{q}&by=nope", "by"),
        ("/api/reports/funnel?from=2026-13-01", "from"),
        (f"/api/reports/attribution?{q}&order=4", "order"),
        (f"/api/reports/attribution?{q}&to_stage=%27%3B%20DROP%20TABLE%20leads", "to_stage"),
        (f"/api/reports/kpis?{q}&role=ceo", "role"),
        ("/api/reports/funnel?from=2026-03-10&to=2026-03-01", "to"),
    ]:
        resp = client.get(path, headers=auth)
        assert resp.status_code == 422, path
        assert field in resp.text, path
    assert client.get(f"/api/reports/funnel?{q}").status_code == 401
    with small_world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(leads)).scalar() == 3
