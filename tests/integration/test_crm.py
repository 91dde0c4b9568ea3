"""CRM sync: inbound updates, CRM-flavoured CSV exports and the acceptance report, on both
backends."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select

from leadflow.adapters.db.tables import (
    assignments,
    crm_updates,
    lead_states,
    leads,
    opportunities,
    sales_actions,
    signals,
    stage_changes,
)
from leadflow.core.config import check, load_model
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import acceptance, crm

SEOUL = ZoneInfo("Asia/Seoul")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=SEOUL)  # a Monday morning in Seoul
BANT = {k: "confirmed" for k in ("budget", "authority", "need", "timeframe")}


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at.astimezone(UTC)

    def __call__(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture
def api(client, admin_token, services):
    services.clock = Clock(T0)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def _send(client, key, kind, body):
    r = client.post(f"/v1/{kind}", json=body, auth=(key, ""))
    assert r.status_code == 200, r.text


def _mql(client, key, user: str, *, first_name: str | None = None) -> str:
    email = f"{user}@acme{user}.example"
    traits = {"email": email, "consent": {"status": "granted"}}
    if first_name is not None:
        traits["firstName"] = first_name
    ts = T0.isoformat()
    _send(
        client,
        key,
        "identify",
        {
            "userId": user,
            "messageId": f"id-{user}",
            "timestamp": (T0 - timedelta(minutes=1)).isoformat(),
            "traits": traits,
        },
    )
    _send(
        client,
        key,
        "track",
        {"userId": user, "event": "catalogue_request", "timestamp": ts, "messageId": f"c-{user}"},
    )
    return email


def _lead_id(services, email: str) -> int:
    with services.engine.connect() as conn:
        return conn.execute(select(leads.c.id).where(leads.c.email == email)).scalar_one()


def _stage(services, lead_id: int) -> str:
    with services.engine.connect() as conn:
        return conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == lead_id)
        ).scalar_one()


def _count(services, table) -> int:
    with services.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _signals(services, lead_id: int) -> list[str]:
    with services.engine.connect() as conn:
        return list(
            conn.execute(select(signals.c.name).where(signals.c.lead_id == lead_id)).scalars()
        )


def _opportunity(api, write_key, services, user: str) -> tuple[str, int]:
    email = _mql(api, write_key, user)
    lead_id = _lead_id(services, email)
    assert api.post(f"/api/leads/{lead_id}/accept").status_code == 200
    r = api.post(f"/api/leads/{lead_id}/qualify", json={**BANT, "amount": 1000})
    assert r.status_code == 200, r.text
    assert _stage(services, lead_id) == "opportunity"
    return email, lead_id


def _opp(services, external_id: str) -> dict | None:
    with services.engine.connect() as conn:
        row = (
            conn.execute(select(opportunities).where(opportunities.c.external_id == external_id))
            .mappings()
            .first()
        )
    return dict(row) if row else None


# --------------------------------------------------------------------------- updates


def test_crm_win_flows_back_to_the_lead_and_repeats_change_nothing(api, write_key, services):
    email, lead_id = _opportunity(api, write_key, services, "ann")
    update = {
        "external_id": "hs-deal-1",
        "update_id": "evt-1",
        "lead_email": email.upper(),
        "stage": "won",
        "amount": 7e7,
        "currency": "usd",
        "owner": "seoyeon.lee",
    }
    r = api.post("/api/crm/updates", json=update)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stage"] == "won" and body["lead_stage"] == "won" and body["action"] == "win"
    assert body["created"] is False  # the lead's open opportunity got the CRM id
    assert _stage(services, lead_id) == "won"
    assert "opportunity.won" in _signals(services, lead_id)
    opp = _opp(services, "hs-deal-1")
    assert opp["amount"] == 7e7 and opp["currency"] == "USD" and opp["owner"] == "seoyeon.lee"
    assert _count(services, opportunities) == 1

    counts = (_count(services, sales_actions), _count(services, signals))
    again = api.post("/api/crm/updates", json=update)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert (_count(services, sales_actions), _count(services, signals)) == counts
    assert _count(services, crm_updates) == 1


def test_crm_loss_recycles_the_lead_with_its_reason(api, write_key, services):
    email, lead_id = _opportunity(api, write_key, services, "bob")
    base = {"external_id": "sf-1", "lead_email": email, "stage": "lost"}
    r = api.post("/api/crm/updates", json={**base, "update_id": "u1", "lost_reason": "nope"})
    assert r.status_code == 422 and r.json()["detail"].startswith("reason: unknown lost reason")
    assert _opp(services, "sf-1") is None and _count(services, crm_updates) == 0
    r = api.post("/api/crm/updates", json={**base, "update_id": "u2", "lost_reason": "price"})
    assert r.status_code == 200, r.text
    assert _stage(services, lead_id) == "recycle_b"
    opp = _opp(services, "sf-1")
    assert opp["stage"] == "lost" and opp["lost_reason"] == "price"
    assert "opportunity.lost" in _signals(services, lead_id)


def test_amount_and_owner_updates_leave_the_stage_alone(api, write_key, services):
    email, lead_id = _opportunity(api, write_key, services, "cat")
    first = {"external_id": "d-9", "update_id": "a", "lead_email": email}
    assert api.post("/api/crm/updates", json=first).status_code == 200
    r = api.post(
        "/api/crm/updates",
        json={"external_id": "d-9", "update_id": "b", "amount": 2500.5, "owner": "crm.owner"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == ["amount", "owner"]
    opp = _opp(services, "d-9")
    assert opp["amount"] == 2500.5 and opp["owner"] == "crm.owner" and opp["stage"] == "open"
    assert _stage(services, lead_id) == "opportunity"


def test_refused_transition_is_409_and_stores_nothing(api, write_key, services):
    email = _mql(api, write_key, "dan")
    lead_id = _lead_id(services, email)
    assert api.post(f"/api/leads/{lead_id}/accept").status_code == 200  # appointment
    before = (_count(services, opportunities), _count(services, sales_actions))
    r = api.post(
        "/api/crm/updates",
        json={"external_id": "x-1", "update_id": "w1", "lead_email": email, "stage": "won"},
    )
    assert r.status_code == 409, r.text
    assert r.json()["detail"]
    assert (_count(services, opportunities), _count(services, sales_actions)) == before
    assert _count(services, crm_updates) == 0
    assert _stage(services, lead_id) == "appointment"


def test_crm_only_opportunity_is_stored_without_touching_leads(api, services):
    before = _count(services, signals)
    r = api.post(
        "/api/crm/updates",
        json={"external_id": "only-1", "update_id": "o1", "stage": "won", "amount": 10},
    )
    assert r.status_code == 200, r.text
    assert r.json()["lead_id"] is None and r.json()["created"] is True
    opp = _opp(services, "only-1")
    assert opp["stage"] == "won" and opp["closed_at"] is not None and opp["lead_id"] is None
    assert _count(services, signals) == before
    r = api.post(
        "/api/crm/updates", json={"external_id": "only-1", "update_id": "o2", "stage": "open"}
    )
    assert r.status_code == 409 and "cannot be reopened" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"update_id": "u"}, "external_id"),
        ({"external_id": "e"}, "update_id"),
        ({"external_id": "e" * 256, "update_id": "u"}, "external_id"),
        ({"external_id": "e", "update_id": "u", "amount": -1}, "amount"),
        ({"external_id": "e", "update_id": "u", "amount": "lots"}, "amount"),
        ({"external_id": "e", "update_id": "u", "currency": "EURO"}, "currency"),
        ({"external_id": "e", "update_id": "u", "stage": "closed"}, "stage"),
        ({"external_id": "e", "update_id": "u", "lead_email": "<script>"}, "lead_email"),
        ({"external_id": "e", "update_id": "u", "closed_at": "yesterday"}, "closed_at"),
        ({"external_id": "e", "update_id": "u", "drop": "table"}, "drop"),
        ({"updates": [{"external_id": "e", "update_id": "u"}, {"amount": 1}]}, "updates[1]"),
        ({"updates": [{"external_id": "e", "update_id": str(i)} for i in range(501)]}, "updates"),
    ],
)
def test_bad_updates_are_422_naming_the_field(api, services, body, field):
    r = api.post("/api/crm/updates", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(field)
    assert _count(services, opportunities) == 0 and _count(services, crm_updates) == 0


def test_unknown_lead_email_is_404(api, services):
    r = api.post(
        "/api/crm/updates",
        json={"external_id": "e", "update_id": "u", "lead_email": "nobody@x.example"},
    )
    assert r.status_code == 404 and r.json()["detail"].startswith("lead_email")


def test_batch_reports_each_update(api, write_key, services):
    email, lead_id = _opportunity(api, write_key, services, "eve")
    r = api.post(
        "/api/crm/updates",
        json={
            "updates": [
                {"external_id": "b-1", "update_id": "1", "lead_email": email, "amount": 5},
                {"external_id": "b-2", "update_id": "2", "lead_email": "no@x.example"},
                {"external_id": "b-1", "update_id": "3", "stage": "won"},
            ]
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["applied"], body["refused"]) == (2, 1)
    assert [x["status"] for x in body["results"]] == [200, 404, 200]
    assert _stage(services, lead_id) == "won"


def test_update_id_reused_for_another_opportunity_is_refused(api, services):
    ok = {"external_id": "r-1", "update_id": "same"}
    assert api.post("/api/crm/updates", json=ok).status_code == 200
    r = api.post("/api/crm/updates", json={"external_id": "r-2", "update_id": "same"})
    assert r.status_code == 409 and _opp(services, "r-2") is None


# --------------------------------------------------------------------------- export


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("flavour", ["hubspot", "salesforce"])
def test_exports_use_crm_column_names_and_neutralise_formulas(api, write_key, services, flavour):
    _mql(api, write_key, "fay", first_name='=HYPERLINK("x")')
    email, _ = _opportunity(api, write_key, services, "gus")
    api.post(
        "/api/crm/updates",
        json={"external_id": "=cmd|x", "update_id": "z", "lead_email": email, "owner": "@rep"},
    )
    r = api.get("/api/crm/export", params={"kind": "leads", "flavour": flavour})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = _csv(r.text)
    assert rows[0] == crm.columns_for("leads", flavour)
    first = "First Name" if flavour == "hubspot" else "FirstName"
    by_email = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert by_email["fay@acmefay.example"][first] == '\'=HYPERLINK("x")'
    if flavour == "hubspot":
        assert by_email["fay@acmefay.example"]["Lifecycle Stage"] == "marketingqualifiedlead"
        assert by_email[email]["Lifecycle Stage"] == "opportunity"
    else:
        assert by_email[email]["Status"] == "Closed - Converted"
        assert by_email[email]["Company"] == "[not provided]" or by_email[email]["Company"]

    r = api.get("/api/crm/export", params={"kind": "opportunities", "flavour": flavour})
    rows = _csv(r.text)
    assert rows[0] == crm.columns_for("opportunities", flavour)
    deal = dict(zip(rows[0], rows[1], strict=True))
    if flavour == "hubspot":
        assert deal["Deal Stage"] == "qualifiedtobuy" and deal["Deal Owner"] == "'@rep"
        assert deal["Record ID"] == "'=cmd|x" and deal["Amount"] == "1000.0"
    else:
        assert deal["StageName"] == "Qualification" and deal["OwnerId"] == "'@rep"
        assert deal["Id"] == "'=cmd|x"


def test_export_refuses_unknown_kind_or_flavour(api):
    assert api.get("/api/crm/export", params={"kind": "users"}).status_code == 422
    r = api.get("/api/crm/export", params={"kind": "leads", "flavour": "pipedrive"})
    assert r.status_code == 422


def test_cli_export_and_apply(api, write_key, services, db_url, tmp_path, capsys):
    email, lead_id = _opportunity(api, write_key, services, "hal")
    out = tmp_path / "deals.csv"
    code = run_guarded(
        app,
        [
            "crm",
            "export",
            "--kind",
            "leads",
            "--flavour",
            "salesforce",
            "--out",
            str(out),
            "--database-url",
            db_url,
        ],
    )
    assert code == 0
    assert _csv(out.read_text())[0] == crm.columns_for("leads", "salesforce")
    updates = tmp_path / "updates.json"
    updates.write_text(
        json.dumps(
            {
                "updates": [
                    {"external_id": "c-1", "update_id": "1", "lead_email": email, "stage": "won"},
                    {"external_id": "c-2", "update_id": "2", "amount": -5},
                ]
            }
        )
    )
    code = run_guarded(app, ["crm", "apply", str(updates), "--database-url", db_url])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 applied, 0 already applied, 1 refused" in captured.out
    assert "update 1: refused: amount" in captured.err
    assert _stage(services, lead_id) == "won"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run_guarded(app, ["crm", "apply", str(bad), "--database-url", db_url]) == 1
    assert "not JSON" in capsys.readouterr().err


# --------------------------------------------------------------------------- acceptance


SCORE_RULE = "stages.mql.enter_when[2]"
EVENT_RULE = "stages.mql.enter_when[0]"


def _history(services) -> None:
    """Six hand-offs on one Monday: (score, rule, assignment status, opportunity stage)."""
    at = T0.astimezone(UTC)
    plan = [
        (105, SCORE_RULE, "rejected", None),
        (110, SCORE_RULE, "closed", "won"),
        (125, SCORE_RULE, "closed", "lost"),
        (130, SCORE_RULE, "accepted", "won"),
        (40, EVENT_RULE, "accepted", None),
        (102, SCORE_RULE, "rejected", None),
    ]
    with services.engine.begin() as conn:
        for i, (score, rule, status, opp) in enumerate(plan):
            lead_id = conn.execute(
                insert(leads).values(
                    email=f"p{i}@hist.example", attributes={}, created_at=at, updated_at=at
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(stage_changes).values(
                    lead_id=lead_id,
                    from_stage="nurturing",
                    to_stage="mql",
                    at=at,
                    rule=rule,
                    model_version="2024.1",
                    recorded_at=at,
                )
            )
            conn.execute(
                insert(assignments).values(
                    lead_id=lead_id,
                    rep_key="minjun.kim",
                    rule="territory",
                    priority=1.0,
                    assigned_at=at + timedelta(minutes=1),
                    due_at=at + timedelta(hours=1),
                    status=status,
                    summary={"score": {"engagement": score}},
                )
            )
            if opp is not None:
                conn.execute(
                    insert(opportunities).values(
                        lead_id=lead_id,
                        name=f"deal {i}",
                        amount=100.0,
                        currency="KRW",
                        stage=opp,
                        created_at=at + timedelta(days=1),
                        updated_at=at + timedelta(days=1),
                    )
                )


def test_acceptance_report_matches_hand_computed_figures(services):
    _history(services)
    with services.engine.begin() as conn:
        model = services.models.active(conn, T0.astimezone(UTC))
        data = acceptance.report(conn, model, target=0.7)
        source = acceptance.active_source(conn)
    bands = {r["group"]: r for r in data["by_band"]}
    assert bands["<100"]["acceptance_rate"] == 1.0 and bands["<100"]["handoffs"] == 1
    low = bands["100-119"]
    assert (low["handoffs"], low["accepted"], low["rejected"]) == (3, 1, 2)
    assert low["acceptance_rate"] == pytest.approx(1 / 3) and low["win_rate"] == 1.0
    mid = bands["120-149"]
    assert mid["acceptance_rate"] == 1.0 and mid["win_rate"] == 0.5
    rules = {r["group"]: r for r in data["by_rule"]}
    assert rules[EVENT_RULE]["acceptance_rate"] == 1.0
    assert rules[SCORE_RULE]["acceptance_rate"] == pytest.approx(3 / 5)
    assert rules[SCORE_RULE]["win_rate"] == pytest.approx(2 / 3)
    rec = data["recommendation"]
    # Threshold 100 or 102 keeps all six: 4 of 6 accepted (0.67); 105 drops the 102: 4/5.
    assert rec["current"] == 100 and rec["threshold"] == 105
    assert rec["acceptance_rate"] == pytest.approx(0.8)
    assert rec["capacity_per_day"] == 60 and rec["mqls_per_day"] == 5 and rec["within_capacity"]
    text = acceptance.candidate_source(source, model, rec["threshold"])
    assert check(text).ok
    assert [c.score for c in load_model(text).spec.stages["mql"].enter_when if c.score] == [105]


def test_report_acceptance_cli_writes_a_checked_candidate(services, db_url, tmp_path, capsys):
    _history(services)
    with services.engine.begin() as conn:
        services.models.active(conn, T0.astimezone(UTC))  # the active model is stored
    out = tmp_path / "candidate.yaml"
    code = run_guarded(
        app,
        [
            "report",
            "acceptance",
            "--format",
            "json",
            "--out-model",
            str(out),
            "--database-url",
            db_url,
        ],
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    rec = data["recommendation"]
    assert rec["threshold"] == 105
    assert rec["backtest_command"] == f"leadflow model backtest {out}"
    assert check(out.read_text()).ok
    assert (
        run_guarded(app, ["report", "acceptance", "--target", "2", "--database-url", db_url]) == 1
    )


def _qualified_history(services) -> None:
    """Five qualify actions with BANT (default weights 25 each, confirmed 1, likely 0.5) and
    the opportunity each opened: scores 100 won, 87.5 won, 75 lost, 75 lost, 75 open."""
    at = T0.astimezone(UTC)
    likely = {"budget": "confirmed", "authority": "confirmed", "need": "likely"}
    plan = [
        (BANT, "won"),
        ({**BANT, "timeframe": "likely"}, "won"),
        ({**likely, "timeframe": "likely"}, "lost"),
        ({**likely, "timeframe": "likely"}, "lost"),
        ({**likely, "timeframe": "likely"}, "open"),
    ]
    with services.engine.begin() as conn:
        for i, (bant, stage) in enumerate(plan):
            lead_id = conn.execute(
                insert(leads).values(
                    email=f"q{i}@qual.example", attributes={}, created_at=at, updated_at=at
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(sales_actions).values(
                    action_id=f"qualify-{i}",
                    lead_id=lead_id,
                    name="qualify",
                    at=at,
                    amount=100.0,
                    bant=bant,
                    created_at=at,
                )
            )
            conn.execute(
                insert(opportunities).values(
                    lead_id=lead_id,
                    name=f"qualified deal {i}",
                    amount=100.0,
                    currency="KRW",
                    stage=stage,
                    created_at=at,
                    updated_at=at,
                )
            )


def test_acceptance_report_recommends_the_bant_handoff_threshold(services, db_url, tmp_path):
    _qualified_history(services)
    with services.engine.begin() as conn:
        model = services.models.active(conn, T0.astimezone(UTC))
        default = acceptance.report(conn, model)
        strict = acceptance.report(conn, model, win_target=0.6)
        source = acceptance.active_source(conn)
    assert default["qualified"] == 5
    bands = {r["group"]: r for r in default["by_qualification_band"]}
    mid = bands["75-89"]
    assert (mid["opportunities"], mid["won"], mid["lost"], mid["open"]) == (4, 1, 2, 1)
    assert mid["win_rate"] == pytest.approx(1 / 3)
    assert bands["90+"]["won"] == 1 and bands["90+"]["win_rate"] == 1.0
    # At 75 (current) 2 of 4 closed are won (50% >= 30%); at 60% only 87 (2 of 2) reaches it.
    rec = default["handoff_recommendation"]
    assert (rec["current"], rec["threshold"], rec["win_rate"]) == (75, 75, 0.5)
    rec = strict["handoff_recommendation"]
    assert (rec["threshold"], rec["win_rate"], rec["closed"]) == (87, 1.0, 2)
    text = acceptance.candidate_source(source, model, None, 87)
    assert check(text).ok
    assert load_model(text).spec.qualification.handoff_threshold == 87
    assert load_model(text).version.endswith("-bant87")

    out = tmp_path / "bant.yaml"
    argv = ["report", "acceptance", "--format", "json", "--out-model", str(out)]
    assert run_guarded(app, [*argv, "--win-target", "0.6", "--database-url", db_url]) == 0
    assert load_model(out.read_text()).spec.qualification.handoff_threshold == 87
    assert check(out.read_text()).ok
    assert (
        run_guarded(app, ["report", "acceptance", "--win-target", "0", "--database-url", db_url])
        == 1
    )
