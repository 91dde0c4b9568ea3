"""Scores and stages applied to stored leads, in the same transaction as the events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from leadflow.adapters.db.tables import lead_states, leads, sales_actions, signals, stage_changes
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import lifecycle

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _ts(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def _send(client, key, kind, body):
    r = client.post(f"/v1/{kind}", json=body, auth=(key, ""))
    assert r.status_code == 200, r.text


def _identify(client, key, user="u1", email="ann@acme.example", hours=0.0):
    _send(
        client,
        key,
        "identify",
        {
            "userId": user,
            "messageId": f"id-{user}-{hours}",
            "timestamp": _ts(hours),
            "traits": {
                "email": email,
                "title": "Head of Marketing",
                "consent": {"status": "granted", "method": "form:demo"},
            },
        },
    )


def _track(client, key, name, hours, user="u1", **props):
    _send(
        client,
        key,
        "track",
        {
            "userId": user,
            "event": name,
            "timestamp": _ts(hours),
            "messageId": f"{name}-{user}-{hours}",
            "properties": props,
        },
    )


def _chain_is_consistent(rows) -> bool:
    by_lead: dict[int, str] = {}
    for r in rows:
        if by_lead.get(r.lead_id, r.from_stage) != r.from_stage:
            return False
        by_lead[r.lead_id] = r.to_stage
    return True


def _changes(services, lead_id=None):
    with services.engine.connect() as conn:
        q = select(stage_changes).order_by(
            stage_changes.c.lead_id, stage_changes.c.at, stage_changes.c.id
        )
        if lead_id is not None:
            q = q.where(stage_changes.c.lead_id == lead_id)
        return conn.execute(q).all()


def _state(services, lead_id=1):
    with services.engine.connect() as conn:
        return conn.execute(select(lead_states).where(lead_states.c.lead_id == lead_id)).one()


def test_events_through_the_api_move_the_lead_and_log_each_change(client, services, write_key):
    _identify(client, write_key)
    assert _state(services).stage == "acquired"
    _track(client, write_key, "email_click", 1)
    assert _state(services).stage == "nurturing"
    _track(client, write_key, "quote_request", 2)
    state = _state(services)
    assert state.stage == "mql"
    assert state.model_version == "2024.4"
    rows = _changes(services)
    assert [(r.from_stage, r.to_stage) for r in rows] == [
        ("anonymous", "acquired"),
        ("acquired", "nurturing"),
        ("nurturing", "mql"),
    ]
    assert rows[-1].rule == "fastpass.quote_request"
    assert all(r.model_version == "2024.4" for r in rows)
    assert rows[-1].at == T0 + timedelta(hours=2)


def test_score_reaching_100_makes_an_mql_and_explain_shows_each_rule(
    client, services, write_key, admin_token
):
    _identify(client, write_key)
    for i, asset in enumerate(["white_paper", "white_paper", "case_study", "pricing"]):
        _track(client, write_key, "content_download", 1 + i, asset=f"a{i}", asset_type=asset)
    _track(client, write_key, "webinar_attended", 6)
    assert _state(services).stage == "mql"
    assert _changes(services)[-1].rule.startswith("stages.mql.enter_when")
    r = client.get("/api/leads/1/score", headers={"Authorization": f"Bearer {admin_token}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "2024.4"
    rules = {x["rule"]: x for x in body["engagement"]["rules"]}
    assert rules["download_white_paper"]["occurrences"] == 2
    assert rules["download_white_paper"]["points_before_decay"] == 40
    assert 0 < rules["download_white_paper"]["points_after_decay"] < 40  # decayed since March
    assert body["fit"]["grade"] in {"A", "B", "C", "D"}


def test_score_api_refuses_unknown_or_malformed_lead_ids_and_write_keys(
    client, write_key, admin_token
):
    auth = {"Authorization": f"Bearer {admin_token}"}
    assert client.get("/api/leads/999/score", headers=auth).status_code == 404
    bad = client.get("/api/leads/abc/score", headers=auth)
    assert bad.status_code == 422 and "lead_id" in bad.text
    assert client.get("/api/leads/1/score").status_code == 401
    wrong = client.get("/api/leads/1/score", headers={"Authorization": f"Bearer {write_key}"})
    assert wrong.status_code == 401


def test_a_late_event_rewrites_the_log_so_it_still_equals_a_full_replay(
    client, services, write_key
):
    _identify(client, write_key)
    _track(client, write_key, "quote_request", 10)  # acquired -> mql at +10h
    # A click that happened before the quote request arrives late: nurturing comes first.
    _track(client, write_key, "email_click", 5)
    rows = _changes(services)
    assert [(r.from_stage, r.to_stage) for r in rows] == [
        ("anonymous", "acquired"),
        ("acquired", "nurturing"),
        ("nurturing", "mql"),
    ]
    assert _chain_is_consistent(rows)


def test_incremental_requests_equal_one_batch_recompute(client, services, write_key):
    _identify(client, write_key)
    _identify(client, write_key, user="u2", email="bo@beta.example", hours=0.5)
    for h, (name, user) in enumerate(
        [("email_click", "u2"), ("careers", "u1"), ("quote_request", "u1"), ("email_open", "u2")]
    ):
        if name == "careers":
            _send(
                client,
                write_key,
                "page",
                {
                    "userId": user,
                    "timestamp": _ts(h + 1),
                    "properties": {"url": "https://x.example/careers"},
                },
            )
        else:
            _track(client, write_key, name, h + 1, user=user)
    incremental = [(r.lead_id, r.from_stage, r.to_stage, r.at, r.rule) for r in _changes(services)]
    with services.engine.begin() as conn:
        conn.execute(stage_changes.delete())
        conn.execute(lead_states.delete())
    now = services.clock()
    lifecycle.recompute_all(services.engine, services.models, now)
    batch = [(r.lead_id, r.from_stage, r.to_stage, r.at, r.rule) for r in _changes(services)]
    assert batch == incremental
    assert {_state(services, 1).stage, _state(services, 2).stage} == {"mql", "nurturing"}


def test_student_goes_to_dead_end_and_stays_there(client, services, write_key):
    _send(
        client,
        write_key,
        "identify",
        {
            "userId": "s1",
            "timestamp": _ts(0),
            "traits": {"email": "kim@uni.example", "title": "Graduate student", "consent": True},
        },
    )
    _track(client, write_key, "quote_request", 1, user="s1")
    assert _state(services).stage == "dead_end"
    assert [r.to_stage for r in _changes(services)][-1] == "dead_end"


def test_lost_lead_visiting_three_times_in_14_days_raises_lead_returning(
    client, services, write_key
):
    _identify(client, write_key)
    _track(client, write_key, "quote_request", 1)
    with services.engine.begin() as conn:
        for i, (name, extra) in enumerate(
            [
                ("accept", {}),
                (
                    "qualify",
                    {
                        "amount": 50000.0,
                        "bant": {
                            "budget": "confirmed",
                            "authority": "confirmed",
                            "need": "confirmed",
                            "timeframe": "confirmed",
                        },
                    },
                ),
                ("lose", {"reason": "price"}),
            ]
        ):
            conn.execute(
                insert(sales_actions).values(
                    action_id=f"act-{i}",
                    lead_id=1,
                    name=name,
                    at=T0 + timedelta(days=i + 1),
                    created_at=T0,
                    **extra,
                )
            )
        lifecycle.recompute(conn, [1], services.models.active(conn, T0), T0 + timedelta(days=5))
    assert _state(services).stage == "recycle_b"
    for day in (100, 103, 106):  # after the 90-day pause, back in nurturing, watched
        _send(
            client,
            write_key,
            "page",
            {
                "userId": "u1",
                "timestamp": _ts(day * 24),
                "properties": {"url": "https://x.example/pricing"},
            },
        )
    with services.engine.connect() as conn:
        names = conn.execute(select(signals.c.name, signals.c.lead_id)).all()
    assert ("lead.returning", 1) in names


def test_model_apply_records_the_switch_and_keeps_earlier_history(
    client, services, write_key, tmp_path: Path
):
    _identify(client, write_key)
    _track(client, write_key, "email_click", 1)
    _track(client, write_key, "webinar_attended", 2)  # 5 + 25 points: not an MQL at 100
    assert _state(services).stage == "nurturing"
    source = lifecycle.default_source().replace('version: "2024.4"', 'version: "2024.5"')
    source = source.replace("      - score: 100", "      - score: 20")
    new = tmp_path / "leadflow.yaml"
    new.write_text(source)
    code = run_guarded(
        app,
        [
            "model",
            "apply",
            str(new),
            "--yes",
            "--database-url",
            str(services.engine.url.render_as_string(hide_password=False)),
        ],
    )
    assert code == 0
    state = _state(services)
    assert state.stage == "mql" and state.model_version == "2024.5"
    rows = _changes(services)
    assert [(r.from_stage, r.to_stage, r.rule) for r in rows] == [
        ("anonymous", "acquired", "stages.acquired.enter_when[0]"),
        ("acquired", "nurturing", "stages.nurturing.enter_when[0]"),
        ("nurturing", "mql", "model.apply"),
    ]
    # Later events keep the log consistent under the new model.
    _track(client, write_key, "email_open", 3)
    assert _chain_is_consistent(_changes(services))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stages:\n  mql:\n    enter_when:\n      - score: lots\n", "score"),
        ("version: 1\nlifecycle: 3\n", "lifecycle"),
        (":\n  - [unbalanced\n", "yaml"),
    ],
)
def test_model_check_refuses_a_bad_file_naming_the_key(tmp_path, capsys, text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert run_guarded(app, ["model", "check", str(bad)]) == 1
    out = capsys.readouterr()
    assert expected in (out.out + out.err).lower()


def test_model_check_api_parses_the_body_and_never_opens_a_file(client, admin_token, tmp_path):
    """A request body is YAML text, never a server path: a real readable model file named
    in the body is not read, a missing one is not revealed, and NUL is a 200 report."""
    headers = {"Authorization": f"Bearer {admin_token}", "Content-Type": "text/plain"}
    real = tmp_path / "leadflow.yaml"
    real.write_text(lifecycle.default_source(), encoding="utf-8")
    answers = {}
    for body in (str(real), str(tmp_path / "missing.yaml"), f"{real}\x00.yaml", " /etc/x.yml "):
        response = client.post("/api/model/check", content=body.encode(), headers=headers)
        assert response.status_code == 200, response.text
        answers[body] = response.json()
    assert {tuple(a["errors"]) for a in answers.values()} <= {
        ("(root): expected a mapping",),
        (f"line 1, column {len(str(real)) + 1}: invalid YAML: U+0000 is not allowed in YAML text",),
    }
    assert not any(a["ok"] for a in answers.values())
    # The same file's text, sent as the body, is a valid model.
    good = client.post("/api/model/check", content=real.read_bytes(), headers=headers).json()
    assert good["ok"] and good["version"] == "2024.4"
    assert {"role": "handoff", "stage": "mql"} in good["roles"]


def test_model_apply_refuses_a_bad_file_and_changes_nothing(
    client, services, write_key, tmp_path, capsys
):
    _identify(client, write_key)
    before = _changes(services)
    bad = tmp_path / "bad.yaml"
    bad.write_text(lifecycle.default_source().replace("      - score: 100", "      - score: x"))
    url = services.engine.url.render_as_string(hide_password=False)
    assert run_guarded(app, ["model", "apply", str(bad), "--yes", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "stages.mql.enter_when[2].score" in err
    assert _changes(services) == before
    with services.engine.connect() as conn:
        assert conn.execute(select(leads.c.email)).scalar_one() == "ann@acme.example"


def test_sales_actions_are_checked_by_the_stage_machine_and_stored_once(
    client, services, write_key
):
    from leadflow.core.model import Bant, SalesAction

    _identify(client, write_key)
    now = T0 + timedelta(days=1)
    with services.engine.begin() as conn:
        model = services.models.active(conn, now)
        accept_early = SalesAction(action_id="a0", name="accept", at=now, lead_id=1)
        with pytest.raises(lifecycle.ActionRefused):
            lifecycle.record_action(conn, accept_early, model, now)
    _track(client, write_key, "quote_request", 2)
    with services.engine.begin() as conn:
        accept = SalesAction(action_id="a1", name="accept", at=now, lead_id=1)
        change = lifecycle.record_action(conn, accept, model, now)
        assert change is not None and change.to_stage == "appointment"
        assert lifecycle.record_action(conn, accept, model, now) is None  # idempotent
        weak = SalesAction(
            action_id="a2",
            name="qualify",
            at=now + timedelta(hours=1),
            lead_id=1,
            amount=1000.0,
            bant=Bant(budget="confirmed"),
        )
        with pytest.raises(lifecycle.ActionRefused):
            lifecycle.record_action(conn, weak, model, now + timedelta(hours=1))
    with services.engine.connect() as conn:
        assert conn.execute(select(sales_actions.c.action_id)).scalars().all() == ["a1"]
    assert _state(services).stage == "appointment"


def test_backtest_compares_models_without_touching_live_data(
    client, services, write_key, tmp_path, capsys
):
    import json

    for n, user in enumerate(["u1", "u2", "u3"]):
        _identify(client, write_key, user=user, email=f"{user}@acme.example", hours=n)
        _track(client, write_key, "webinar_attended", 4 + n, user=user)
    _track(client, write_key, "quote_request", 9, user="u3")
    before = _changes(services)
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(
        lifecycle.default_source()
        .replace('version: "2024.4"', 'version: "2024.9"')
        .replace("      - score: 100", "      - score: 20")
    )
    url = services.engine.url.render_as_string(hide_password=False)
    args = ["model", "backtest", str(candidate), "--format", "json", "--database-url", url]
    assert run_guarded(app, args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["current"]["mql"] == 1  # u3 by its quote request
    assert report["candidate"]["mql"] == 3  # 25 webinar points now pass the threshold of 20
    assert report["newly_mql"] == 2
    assert {(c["current"], c["candidate"], c["leads"]) for c in report["stage_changes"]} == {
        ("acquired", "mql", 2)
    }
    assert _changes(services) == before  # nothing live changed
    assert _state(services, 1).stage == "acquired"
    bad = ["model", "backtest", str(candidate), "--since", "yesterday", "--database-url", url]
    assert run_guarded(app, bad) == 1
    assert "--since" in capsys.readouterr().err


def test_two_processes_with_their_own_caches_keep_the_log_equal_to_a_full_replay(
    services, write_key
):
    """Each server process caches folded states; an entry another process made stale
    (revision moved on) is never used, so alternating writers still agree with a replay."""
    from fastapi.testclient import TestClient

    from leadflow.bootstrap import build_services
    from leadflow.entrypoints.api import build_app

    other = build_services(services.settings)
    a, b = TestClient(build_app(services)), TestClient(build_app(other))
    try:
        _identify(a, write_key)
        for i, name in enumerate(
            [
                "email_open",
                "email_click",
                "webinar_attended",
                "email_open",
                "event_attended",  # points only (a demo request would be a fast-pass)
                "email_open",
            ]
        ):
            _track(a if i % 2 else b, write_key, name, 1 + i)
        _track(a, write_key, "email_click", 0.5)  # late: before most of the others
        live = [(r.from_stage, r.to_stage, r.at, r.rule) for r in _changes(services)]
        live_state = _state(services)
        now = services.clock()
        with services.engine.begin() as conn:
            warm = lifecycle.recompute(
                conn, [1], services.models.active(conn, now), now, cache=services.states
            )
        assert warm.incremental == 1  # the writing process's cache entry was still valid
        with services.engine.begin() as conn:
            conn.execute(stage_changes.delete())
            conn.execute(lead_states.delete())
            cold = lifecycle.recompute(conn, [1], services.models.active(conn, now), now)
        assert cold.incremental == 0
        assert [(r.from_stage, r.to_stage, r.at, r.rule) for r in _changes(services)] == live
        assert _state(services).stage == live_state.stage == "nurturing"
        assert _state(services).engagement == pytest.approx(live_state.engagement)
    finally:
        other.close()
