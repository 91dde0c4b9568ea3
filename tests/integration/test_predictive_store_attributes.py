"""The store-trained model uses what was known before each lead's labelling time, on both
backends: a generated world where only attributes (a custom trait given at sign-up and a
custom column imported from the CRM) separate the converters, behaviour being the same for
everyone. With attributes the hold-out ROC-AUC beats events only; post-outcome changes
(planted) are not used; a post-outcome CRM column is dropped by the leakage guard; the
features show by name in `predict show` and `predict explain`."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from leadflow.adapters.db.tables import leads
from leadflow.core.model import SalesAction
from leadflow.core.tracking import parse_message
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import lifecycle
from leadflow.services import predictive_store as store
from leadflow.services.importer import import_leads
from leadflow.services.ingest import ingest

NOW = datetime.now(UTC).replace(microsecond=0)
LEADS = 320
DECIDED_AFTER = timedelta(days=10)
TITLES = ("Data Engineer", "Marketing Manager", "Director of Sales", "Analyst")


def _acquired(i: int) -> datetime:
    return NOW - timedelta(days=330) + timedelta(hours=22 * i)


def _people(seed: int = 3) -> list[dict[str, Any]]:
    """Per person: the plan it said it was interested in at sign-up (a custom trait), its
    budget (a CRM column, imported later), whether it converts (driven by those two only)
    and how much it browses (the same for everyone)."""
    rng = random.Random(seed)
    people = []
    for i in range(LEADS):
        plan = rng.choice(["enterprise", "starter", "starter"])
        budget = rng.choice(["high", "low"])
        p = 0.08 + 0.5 * (plan == "enterprise") + 0.3 * (budget == "high")
        people.append(
            {
                "i": i,
                "plan": plan,
                "budget": budget,
                "converts": rng.random() < p,
                "title": rng.choice(TITLES),
                "pages": rng.randint(0, 4),
                "clicks": rng.randint(0, 2),
            }
        )
    return people


def _messages(person: dict[str, Any]) -> list[dict[str, Any]]:
    i, t = person["i"], _acquired(person["i"])
    user = f"u{i}"

    def at(days: float) -> str:
        return (t + timedelta(days=days)).isoformat()

    out: list[dict[str, Any]] = [
        {"type": "identify", "userId": user, "messageId": f"id-{user}", "timestamp": at(0),
         "traits": {"email": f"{user}@corp{i}.example", "consent": "granted",
                    "title": person["title"], "plan_interest": person["plan"]}},
    ]  # fmt: skip
    out += [
        {"type": "page", "userId": user, "messageId": f"p{k}-{user}", "timestamp": at(1 + k),
         "properties": {"url": f"https://acme.example/blog/{k}"}}
        for k in range(person["pages"])
    ]  # fmt: skip
    out += [
        {"type": "track", "userId": user, "event": "email_click", "messageId": f"c{k}-{user}",
         "timestamp": at(2 + k)}
        for k in range(person["clicks"])
    ]  # fmt: skip
    return out


def _act(services: Any, lead_id: int, name: str, at: datetime, **kw: Any) -> None:
    with services.engine.begin() as conn:
        model = services.models.active(conn, NOW)
        action = SalesAction(action_id=f"{name}-{lead_id}", name=name, at=at, lead_id=lead_id, **kw)
        lifecycle.record_action(conn, action, model, NOW)


def _import_crm_columns(services: Any, people: list[dict[str, Any]], folder: Path) -> None:
    """The company's CRM export, imported after the history: ``Budget`` is known at sign-up;
    ``Lead Quality`` is typed by sales after contact, for converters only (planted)."""
    path = folder / "crm.csv"
    lines = ["Email,Budget,Lead Quality"]
    for p in people:
        quality = ("High", "Medium")[p["i"] % 2] if p["converts"] else ""
        lines.append(f"u{p['i']}@corp{p['i']}.example,{p['budget']},{quality}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = import_leads(services.engine, path, now=NOW, after=services.after_ingest)
    assert summary.updated == LEADS, summary


@pytest.fixture
def world(services: Any, tmp_path: Path) -> dict[int, dict[str, Any]]:
    people = _people()
    raw = [m for p in people for m in _messages(p)]
    ingest(services.engine, [parse_message(m, received_at=NOW) for m in raw], NOW,
           after=services.after_ingest)  # fmt: skip
    with services.engine.connect() as conn:
        ids = {
            int(e.split("@")[0][1:]): i for i, e in conn.execute(select(leads.c.id, leads.c.email))
        }
    by_lead = {}
    for p in people:
        lead_id = ids[p["i"]]
        decided = _acquired(p["i"]) + DECIDED_AFTER  # outcome at the same delay for everyone
        if decided <= NOW:
            _act(services, lead_id, "open_deal" if p["converts"] else "disqualify", decided,
                 **({} if p["converts"] else {"reason": "no_fit"}))  # fmt: skip
        by_lead[lead_id] = p
    _import_crm_columns(services, people, tmp_path)
    return by_lead


def _plant_after_outcomes(services: Any, world: dict[int, dict[str, Any]]) -> None:
    """After each converter's outcome: a promotion, a new custom trait only converters get,
    a changed plan, and a burst of clicks."""
    late = []
    for p in world.values():
        if not p["converts"]:
            continue
        user, after = f"u{p['i']}", _acquired(p["i"]) + DECIDED_AFTER + timedelta(hours=1)
        late.append(
            {"type": "identify", "userId": user, "messageId": f"late-id-{user}",
             "timestamp": after.isoformat(),
             "traits": {"title": "CEO", "deal_status": "won", "plan_interest": "starter"}}
        )  # fmt: skip
        late += [
            {"type": "track", "userId": user, "event": "email_click",
             "messageId": f"late-{k}-{user}", "timestamp": (after + timedelta(hours=k)).isoformat()}
            for k in range(4)
        ]  # fmt: skip
    ingest(services.engine, [parse_message(m, received_at=NOW) for m in late], NOW,
           after=services.after_ingest)  # fmt: skip


def _train(services: Any, **kw: Any) -> store.StoreTraining:
    return store.train_from_store(services.engine, services.models, NOW, folds=3, **kw)


def test_attributes_beat_events_only_and_post_outcome_changes_are_not_used(services, world):
    full = _train(services)
    events_only = _train(services, attributes=False)
    names = full.model.schema.names
    assert {"attributes.plan_interest", "attributes.budget"} <= set(names)
    assert {"title_seniority", "fit", "engagement", "industry"} <= set(
        names + [d.column for d in full.model.schema.dropped]
    )
    assert not any(
        n.startswith(("attributes.", "account.")) for n in events_only.model.schema.names
    )
    assert "engagement" not in events_only.model.schema.names

    # The planted signal is what the model ranks by.
    top = [name for name, _ in full.model.report.importance[:2]]
    assert set(top) == {"attributes.plan_interest", "attributes.budget"}, top

    # Relative: attributes carry the only signal, events-only is near chance.
    assert full.holdout is not None and events_only.holdout is not None
    assert full.holdout.roc_auc > events_only.holdout.roc_auc + 0.15, (
        full.holdout.roc_auc,
        events_only.holdout.roc_auc,
    )
    assert full.model.report.evaluation.roc_auc > events_only.model.report.evaluation.roc_auc

    # The CRM's post-contact column is used as stored (no date) and the guard drops it.
    dropped = full.store["features"]["leakage_dropped"]
    assert "attributes.lead_quality" in dropped
    finding = next(f for f in full.model.report.leakage if f.column == "attributes.lead_quality")
    assert finding.excluded and any(r.startswith("missingness") for r in finding.reasons)
    assert "attributes.lead_quality" not in names

    # Planted after every converter's outcome: nothing of it is used.
    _plant_after_outcomes(services, world)
    again = _train(services)
    assert again.model.schema.names == names
    assert again.holdout == full.holdout
    assert again.model.report.evaluation == full.model.report.evaluation
    dropped_now = {d.column: d.reason for d in again.model.schema.dropped}
    assert dropped_now["attributes.deal_status"] == "constant or empty"  # unknown at the cut


def _cli(capsys: Any, db_url: str, *args: str) -> tuple[int, str, str]:
    code = run_guarded(app, ["predict", *args, "--database-url", db_url])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_show_and_explain_name_the_attribute_features(services, world, db_url, capsys):
    code, out, err = _cli(capsys, db_url, "train", "--folds", "3", "--format", "json",
                          "--no-progress")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    version = report["version"]
    features = report["store"]["features"]
    assert "attributes.plan_interest" in features["custom_fields"]
    assert "engagement" in features["attributes"] and "fit" in features["attributes"]

    code, out, _ = _cli(capsys, db_url, "show", version)
    assert code == 0
    assert "attributes.plan_interest" in out and "dropped by the leakage guard" in out
    assert "attributes.lead_quality" in out

    assert _cli(capsys, db_url, "activate", version)[0] == 0
    assert _cli(capsys, db_url, "refresh")[0] == 0
    converter = next(
        i for i, p in world.items() if p["plan"] == "enterprise" and p["budget"] == "high"
    )
    code, out, _ = _cli(capsys, db_url, "explain", str(converter), "--format", "json")
    assert code == 0
    raised = {c["column"]: c["value"] for c in json.loads(out)["raised_by"]}
    assert raised.get("attributes.plan_interest") == "enterprise", raised
    code, out, _ = _cli(capsys, db_url, "explain", str(converter))
    assert code == 0 and "attributes.plan_interest" in out


def test_bad_store_options_are_refused_naming_them(services, world, db_url, capsys):
    code, _, err = _cli(capsys, db_url, "train", "--keep", "NO_SUCH_COLUMN", "--no-progress")
    assert code == 1 and "--keep 'NO_SUCH_COLUMN'" in err and "no such column" in err
    code, _, err = _cli(capsys, db_url, "train", "--exclude", "<script>", "--no-progress")
    assert code == 1 and "--exclude '<script>'" in err
    code, _, err = _cli(capsys, db_url, "train", "--features", "everything", "--no-progress")
    assert code == 1 and "--features 'everything'" in err

    # --keep brings a suspected store column back; --exclude leaves one out.
    kept = _train(services, keep=["attributes.lead_quality"])
    assert "attributes.lead_quality" in kept.model.schema.names
    assert "attributes.lead_quality" not in kept.store["features"]["leakage_dropped"]
    left = _train(services, exclude=["attributes.budget"])
    assert "attributes.budget" not in left.model.schema.names
