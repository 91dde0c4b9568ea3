"""``leadflow model calibrate``: points and MQL threshold proposed from the stored outcomes,
on both backends. The history is generated here, and every figure the command reports is
checked against what this file computes from the history it generated."""

from __future__ import annotations

import difflib
import json
import random
import re
from datetime import UTC, datetime, timedelta

from sklearn.metrics import roc_auc_score
from sqlalchemy import insert

from leadflow.adapters.db.repositories.models import model_source
from leadflow.adapters.db.tables import accounts, events, leads, stage_changes
from leadflow.core.config import check, load_model
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded

INDUSTRIES = ("Manufacturing", "Education", "Retail")


def _history(services) -> list[tuple[bool, dict[str, int]]]:
    """400 leads over a year; 30% are won. Winners attended webinars before their win (most
    of them, the rest rarely) and are mostly manufacturers; newsletter opens (up to 40, one a
    day) are drawn the same way for everyone, so today's points, where 25 opens equal one
    webinar, rank leads worse than the webinars alone. Winners also request demos *after*
    the win, which must not count. Returns, per lead, won and the occurrences of each rule
    before the win (or now)."""
    rng = random.Random(14)
    now = datetime.now(UTC)
    start = now - timedelta(days=360)
    truth: list[tuple[bool, dict[str, int]]] = []
    won_stage = load_model(model_source_text(services)).stage_for("won")
    with services.engine.begin() as conn:
        for i in range(400):
            won = rng.random() < 0.3
            industry = (
                rng.choice(("Manufacturing", "Manufacturing", "Retail"))
                if won
                else rng.choice(INDUSTRIES)
            )
            account_id = conn.execute(
                insert(accounts).values(
                    name=f"Company {i} GmbH",
                    domain=f"company{i}.example",
                    industry=industry,
                    employee_count=rng.choice((12, 80, 400)),
                    country=rng.choice(("DE", "US", "KR")),
                    created_at=start,
                    updated_at=start,
                )
            ).inserted_primary_key[0]
            lead_id = conn.execute(
                insert(leads).values(
                    email=f"lead{i}@company{i}.example",
                    account_id=account_id,
                    attributes={},
                    created_at=start,
                    updated_at=start,
                )
            ).inserted_primary_key[0]
            first = start + timedelta(days=rng.randrange(0, 120))
            won_at = first + timedelta(days=60 + rng.randrange(0, 60), hours=12)
            webinars = rng.randrange(1, 4) if (won and rng.random() < 0.8) else 0
            if not won and rng.random() < 0.1:
                webinars = 1
            opens = rng.randrange(0, 40)
            rows = [("webinar_attended", first + timedelta(days=3 * d)) for d in range(webinars)]
            rows += [("email_open", first + timedelta(days=d, hours=1)) for d in range(opens)]
            if won:
                rows += [("demo_request", won_at + timedelta(days=d + 1)) for d in range(3)]
                conn.execute(
                    insert(stage_changes).values(
                        lead_id=lead_id,
                        from_stage="sql",
                        to_stage=won_stage,
                        at=won_at,
                        rule="crm",
                        model_version="2024.4",
                        recorded_at=won_at,
                    )
                )
            for n, (name, at) in enumerate(rows):
                conn.execute(
                    insert(events).values(
                        message_id=f"m-{i}-{n}",
                        type="track",
                        name=name,
                        lead_id=lead_id,
                        properties={},
                        context={},
                        occurred_at=at,
                        received_at=at,
                    )
                )
            truth.append((won, {"webinar_attended": webinars, "email_open": opens}))
    return truth


def model_source_text(services) -> str:
    with services.engine.begin() as conn:
        model = services.models.active(conn, datetime.now(UTC))
        return model_source(conn, model.content_hash)


def _auc(truth, model) -> float:
    points = {r.id: r.points for r in model.spec.engagement.rules}
    y = [won for won, _ in truth]
    score = [sum(points[k] * n for k, n in counts.items()) for _, counts in truth]
    return float(roc_auc_score(y, score))


def test_calibrate_proposes_points_from_outcomes(services, db_url, tmp_path, capsys):
    truth = _history(services)
    source = model_source_text(services)
    current = load_model(source)
    out = tmp_path / "calibrated.yaml"
    args = ["model", "calibrate", "--outcome", "won", "--out", str(out), "--format", "json"]
    assert run_guarded(app, [*args, "--database-url", db_url]) == 0
    data = json.loads(capsys.readouterr().out)

    proposed_source = out.read_text(encoding="utf-8")
    assert check(proposed_source).ok
    proposed = load_model(proposed_source)
    points = {r.id: r.points for r in proposed.spec.engagement.rules}
    before = {r.id: r.points for r in current.spec.engagement.rules}
    # The behaviour that separates winners now earns more than the one that does not.
    assert points["webinar_attended"] > points["email_open"]
    assert points["webinar_attended"] > 0
    # Demo requests came only after the win: no support before the outcome, points kept.
    assert points["demo_request"] == before["demo_request"]
    # Manufacturers win more often than schools here.
    assert proposed.spec.fit.industry["manufacturing"] > proposed.spec.fit.industry["education"]

    # Counts as this file generated them.
    won = sum(1 for w, _ in truth if w)
    assert (data["leads"], data["converters"]) == (400, won)
    rows = {r["rule"]: r for r in data["rows"]}
    assert rows["webinar_attended"]["leads"] == sum(1 for _, c in truth if c["webinar_attended"])
    assert rows["webinar_attended"]["converters"] == sum(
        1 for w, c in truth if w and c["webinar_attended"]
    )
    assert rows["demo_request"]["leads"] == 0

    # ROC-AUC of the engagement score against the outcome, from the generated counts.
    auc_before, auc_after = _auc(truth, current), _auc(truth, proposed)
    assert abs(data["roc_auc"]["current"] - auc_before) < 1e-9
    assert abs(data["roc_auc"]["proposed"] - auc_after) < 1e-9
    assert auc_after >= auc_before

    # The threshold keeps at least today's number of MQLs on this history (equal scores may
    # add more).
    def mqls(model, threshold):
        pts = {r.id: r.points for r in model.spec.engagement.rules}
        return sum(1 for _, c in truth if sum(pts[k] * n for k, n in c.items()) >= threshold)

    assert data["mql_on_history"]["current"] == mqls(current, current.mql_threshold)
    assert data["mql_on_history"]["proposed"] == mqls(proposed, proposed.mql_threshold)
    assert data["mql_on_history"]["proposed"] >= data["mql_on_history"]["current"]
    assert proposed.mql_threshold == data["threshold"]["proposed"]
    assert data["backtest"]["candidate"]["version"] == proposed.version
    # Nobody in the reps table, the model's reps: capacity covers every lead here.
    assert data["at_capacity"]["capacity"] >= 400
    assert data["at_capacity"]["current"] == {"precision": won / 400, "recall": 1.0}

    # Only points, the threshold and the version changed; comments and the rest survive.
    old_lines, new_lines = source.splitlines(), proposed_source.splitlines()
    assert len(old_lines) == len(new_lines)
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert changed
    number = re.compile(r"-?\d+(\.\d+)?")
    for a, b in changed:  # a number replaced by a number, or the version
        assert a.startswith("version:") or number.sub("N", a) == number.sub("N", b), (a, b)
    assert any("id: email_open" in a for a, _ in changed)
    assert any(a.startswith("version:") for a, _ in changed)
    assert [line for line in old_lines if line.lstrip().startswith("#")] == [
        line for line in new_lines if line.lstrip().startswith("#")
    ]
    assert data["diff"] == "".join(
        difflib.unified_diff(
            source.splitlines(keepends=True),
            proposed_source.splitlines(keepends=True),
            fromfile="leadflow.yaml (active)",
            tofile="leadflow.yaml (calibrated on won)",
        )
    )
    # Nothing was applied.
    assert model_source_text(services) == source

    # The table output names the threshold, the AUCs and the backtest.
    assert run_guarded(app, ["model", "calibrate", "--database-url", db_url]) == 0
    text = capsys.readouterr().out
    assert "ROC-AUC" in text and "MQL:" in text


def test_calibrate_refuses_without_converters(services, db_url, capsys):
    assert run_guarded(app, ["model", "calibrate", "--database-url", db_url]) == 1
    assert "both converters and non-converters" in capsys.readouterr().err
    assert (
        run_guarded(app, ["model", "calibrate", "--outcome", "nope", "--database-url", db_url]) == 1
    )
