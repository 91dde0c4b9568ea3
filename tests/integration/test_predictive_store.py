"""Predictive scoring from the store end to end, on both backends: outcomes from the stage
log, training with a time hold-out, versions, activation, refresh, explanation (CLI and
API), drift, and the prediction in lead profiles for stage rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from leadflow.adapters.db.tables import lead_predictions, predictive_models
from leadflow.core.model import Bant, SalesAction
from leadflow.core.tracking import parse_message
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import lifecycle
from leadflow.services import predictive_store as store
from leadflow.services.ingest import ingest

NOW = datetime.now(UTC).replace(microsecond=0)
LEADS = 60
READY = Bant(budget="confirmed", authority="confirmed", need="confirmed", timeframe="likely")


def _acquired(i: int) -> datetime:
    return NOW - timedelta(days=300 - 4 * i)


def _messages(i: int) -> list[dict[str, Any]]:
    t, user = _acquired(i), f"u{i}"
    hot = i % 2 == 0
    title = "VP Marketing" if hot or i % 7 == 0 else "Engineer"
    out: list[dict[str, Any]] = [
        {
            "type": "identify",
            "userId": user,
            "messageId": f"id-{user}",
            "timestamp": t.isoformat(),
            "traits": {"email": f"{user}@acme{i}.example", "consent": "granted", "title": title},
        }
    ]

    def at(days: float) -> str:
        return (t + timedelta(days=days)).isoformat()

    if hot:
        out += [
            {"type": "page", "userId": user, "messageId": f"p{k}-{user}", "timestamp": at(1 + k),
             "properties": {"url": f"https://acme.example/pricing?k={k}"}}
            for k in range(3)
        ]  # fmt: skip
        out.append(
            {"type": "track", "userId": user, "event": "contact_request",
             "messageId": f"cr-{user}", "timestamp": at(4)}
        )  # fmt: skip
    else:
        out.append(
            {"type": "page", "userId": user, "messageId": f"b-{user}", "timestamp": at(1),
             "properties": {"url": "https://acme.example/blog/news"}}
        )  # fmt: skip
    return out


def _lead_ids(services) -> dict[int, int]:
    from leadflow.adapters.db.tables import leads

    with services.engine.connect() as conn:
        rows = conn.execute(select(leads.c.id, leads.c.email)).all()
    return {int(email.split("@")[0][1:]): lead_id for lead_id, email in rows}


def _act(services, lead_id: int, name: str, at: datetime, **kw: Any) -> None:
    with services.engine.begin() as conn:
        model = services.models.active(conn, NOW)
        action = SalesAction(action_id=f"{name}-{lead_id}", name=name, at=at, lead_id=lead_id, **kw)
        lifecycle.record_action(conn, action, model, NOW)


@pytest.fixture
def world(services) -> dict[int, int]:
    """60 leads acquired over ten months: the hot half asks for contact and most of them
    become opportunities; some are disqualified; the rest never progress."""
    raw = [m for i in range(LEADS) for m in _messages(i)]
    parsed = [parse_message(m, received_at=NOW) for m in raw]
    ingest(services.engine, parsed, NOW, after=services.after_ingest)
    ids = _lead_ids(services)
    for i, lead_id in ids.items():
        t = _acquired(i)
        if i % 2 == 0 and i % 10 != 4:
            _act(services, lead_id, "accept", t + timedelta(days=5))
            _act(services, lead_id, "qualify", t + timedelta(days=7), amount=1e6, bant=READY)
        elif i % 10 == 4 or i % 4 == 1:
            _act(services, lead_id, "disqualify", t + timedelta(days=20), reason="student")
    return ids


def _train(services, **kw: Any) -> store.StoreTraining:
    return store.train_from_store(services.engine, services.models, NOW, folds=3, **kw)


def test_train_version_activate_refresh_explain(services, world, client, admin_token):
    training = _train(services)
    s = training.store
    # 60 acquired; the last ~7 have neither an outcome nor 90 days behind them.
    assert 45 <= s["labelled"] < LEADS
    assert s["positives"] == len([i for i in range(LEADS) if i % 2 == 0 and i % 10 != 4])
    assert s["holdout_rows"] >= 0.15 * s["labelled"]
    assert training.holdout is not None and training.holdout.roc_auc > 0.8
    assert training.holdout.rule is not None and training.holdout.rule.column == "mql"
    considered = training.model.schema.names + [d.column for d in training.model.schema.dropped]
    assert {"title_seniority", "fit", "fit_grade", "contact_request_90d"} <= set(considered)
    assert "title_seniority" in training.model.schema.names

    version = store.save_store_training(services.engine, training, NOW)
    assert store.save_store_training(services.engine, training, NOW) == version  # stored once
    with services.engine.connect() as conn:
        listed = store.list_versions(conn)
        assert [(v["version"], v["active"]) for v in listed] == [(version, False)]
        assert listed[0]["holdout_roc_auc"] == training.holdout.roc_auc
        assert store.get_version(conn, version)["report"]["store"]["target_stage"] == "opportunity"
    assert store.refresh_predictions(services.engine, NOW) == 0  # nothing active yet

    client.headers["Authorization"] = f"Bearer {admin_token}"
    lead = world[0]
    r = client.get(f"/api/leads/{lead}/prediction")
    assert r.status_code == 404 and "no prediction" in r.json()["detail"]

    store.activate(services.engine, version, NOW)
    assert store.refresh_predictions(services.engine, NOW) == LEADS
    assert store.refresh_predictions(services.engine, NOW) == 0  # incremental: nothing stale

    r = client.get(f"/api/leads/{lead}/prediction")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == version and 0 <= body["probability"] <= 1
    signed = body["raised_by"] + body["lowered_by"]
    assert signed and all({"column", "value", "log_odds"} <= set(c) for c in signed)
    assert all(c["log_odds"] > 0 for c in body["raised_by"])
    assert all(c["log_odds"] < 0 for c in body["lowered_by"])
    assert client.get("/api/leads/999999/prediction").status_code == 404
    assert client.get("/api/leads/abc/prediction").status_code == 422
    assert client.get("/api/predictive/models").json()[0]["active"] is True

    # Hot leads score higher than cold ones, and the profile carries the probability.
    with services.engine.connect() as conn:
        pairs = conn.execute(select(lead_predictions.c.lead_id, lead_predictions.c.probability))
        probs = {int(k): float(v) for k, v in pairs}
        profiles = lifecycle.load_profiles(conn, [world[0], world[1]])
    hot = [probs[world[i]] for i in range(0, 40, 2) if i % 10 != 4]
    cold = [probs[world[i]] for i in range(1, 40, 2)]
    assert sum(hot) / len(hot) > sum(cold) / len(cold)
    assert profiles[world[0]].predicted == pytest.approx(probs[world[0]])

    # A new event makes only that lead stale.
    later = NOW + timedelta(hours=1)
    msg = {"type": "track", "userId": "u1", "event": "email_click", "messageId": "late-1",
           "timestamp": later.isoformat()}  # fmt: skip
    ingest(services.engine, [parse_message(msg, received_at=later)], later)
    assert store.refresh_predictions(services.engine, later) == 1
    # A day later every prediction is refreshed (the windows slide).
    assert store.refresh_predictions(services.engine, NOW + timedelta(days=2)) == LEADS

    version_name, rows = store.drift_report(services.engine, services.models, NOW)
    assert version_name == version
    by_column = {r.column: r for r in rows}
    assert by_column["probability"].psi < 0.2 and not by_column["probability"].flagged
    assert by_column["probability"].current_rows == LEADS


def test_an_event_after_the_labelling_time_changes_nothing(services, world):
    """End to end no-look-ahead: events after each lead's outcome (but before now) leave the
    trained model byte for byte the same (same version hash)."""
    first = _train(services)
    first.model.to_bytes()
    late = []
    for i in range(0, 40, 2):
        if i % 10 == 4:
            continue
        after_outcome = _acquired(i) + timedelta(days=8)  # qualified on day 7
        late += [
            {"type": "track", "userId": f"u{i}", "event": "email_click",
             "messageId": f"late-{i}-{k}", "timestamp": after_outcome.isoformat()}
            for k in range(5)
        ]  # fmt: skip
    ingest(services.engine, [parse_message(m, received_at=NOW) for m in late], NOW)
    second = _train(services)
    second.model.to_bytes()
    assert second.model.report.version == first.model.report.version
    assert second.holdout == first.holdout


def test_only_one_version_is_active(services, world):
    a = store.save_store_training(services.engine, _train(services), NOW)
    b = store.save_store_training(services.engine, _train(services, horizon_days=60), NOW)
    assert a != b
    store.activate(services.engine, a, NOW)
    store.refresh_predictions(services.engine, NOW)
    store.activate(services.engine, b, NOW)
    with services.engine.connect() as conn:
        active = conn.execute(
            select(predictive_models.c.version).where(predictive_models.c.active.is_(True))
        ).all()
        stale = conn.execute(select(func.count()).select_from(lead_predictions)).scalar()
    assert active == [(b,)]
    assert stale == 0  # the other version's predictions are gone
    for bad in ("pm-nope", "x' OR '1'='1", "<script>alert(1)</script>"):
        with pytest.raises(store.VersionNotFound, match="no such predictive model"):
            store.activate(services.engine, bad, NOW)
    with services.engine.connect() as conn:
        assert [v["active"] for v in store.list_versions(conn)].count(True) == 1


def _cli(capsys, db_url: str, *args: str) -> tuple[int, str, str]:
    code = run_guarded(app, ["predict", *args, "--database-url", db_url])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_train_list_show_activate_refresh_explain_drift(services, world, db_url, capsys):
    code, out, err = _cli(capsys, db_url, "train", "--folds", "3", "--format", "json",
                          "--no-progress")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    version = report["version"]
    assert report["holdout"]["roc_auc"] > 0.8
    assert report["holdout"]["rule"]["handoffs"] > 0
    assert f"predict activate {version}" in err

    code, out, _ = _cli(capsys, db_url, "list", "--format", "json")
    assert code == 0 and json.loads(out)[0]["version"] == version
    code, out, _ = _cli(capsys, db_url, "list")
    assert code == 0 and version in out
    code, out, _ = _cli(capsys, db_url, "show", version)
    assert code == 0 and "Time hold-out" in out and "not active" in out
    code, _, err = _cli(capsys, db_url, "show", "pm-nope")
    assert code == 1 and "no such predictive model" in err

    code, out, _ = _cli(capsys, db_url, "activate", version)
    assert code == 0
    code, out, _ = _cli(capsys, db_url, "refresh")
    assert code == 0 and f"scored {LEADS} leads" in out
    code, out, _ = _cli(capsys, db_url, "explain", str(world[0]), "--format", "json")
    assert code == 0 and json.loads(out)["version"] == version
    code, out, _ = _cli(capsys, db_url, "explain", str(world[0]))
    assert code == 0 and "Contributions" in out
    code, out, _ = _cli(capsys, db_url, "drift", "--format", "json")
    assert code == 0
    assert "probability" in {row["column"] for row in json.loads(out)}


def test_cli_refuses_bad_store_options(services, world, db_url, capsys):
    code, _, err = _cli(capsys, db_url, "train", "--target-stage", "<script>x", "--no-progress")
    assert code == 1 and "--target-stage" in err and "not a stage" in err
    code, _, err = _cli(capsys, db_url, "train", "--horizon-days", "0", "--no-progress")
    assert code == 1 and "--horizon-days" in err
    code, _, err = _cli(capsys, db_url, "train", "--gap-days", "90", "--no-progress")
    assert code == 1 and "--gap-days" in err
    code, _, err = _cli(capsys, db_url, "drift")
    assert code == 1 and "no active predictive model" in err
    code, _, err = _cli(capsys, db_url, "explain", str(world[0]))
    assert code == 1 and "no prediction" in err
    code, _, err = _cli(capsys, db_url, "train", "--target", "y", "--no-progress")
    assert code == 1 and "go with --csv" in err


def test_a_csv_model_is_stored_but_cannot_score_leads(services, db_url, capsys):
    messy = Path(__file__).resolve().parents[1] / "data" / "predict_messy.csv"
    code, _, err = _cli(capsys, db_url, "train", "--csv", str(messy), "--target", "Converted",
                        "--id", "Lead Number", "--save", "--no-progress")  # fmt: skip
    assert code == 0, err
    with services.engine.connect() as conn:
        (row,) = store.list_versions(conn)
    assert row["kind"] == "csv" and row["target"] == "Converted" and not row["active"]
    code, _, err = _cli(capsys, db_url, "activate", row["version"])
    assert code == 1 and "trained on a CSV export" in err


def test_training_on_an_empty_store_says_why(services):
    with pytest.raises(store.PredictiveError, match="no lead has a known outcome"):
        _train(services)
