"""Predictive scoring benchmarks: the demo world (from the store) and UCI Bank Marketing.

    .venv/bin/python benchmarks/predictive.py [--part all|demo|bank] [--leads 2000]
        [--csv PATH] [--time-ordered] [--lightgbm]

**Demo world** (``--part demo``): builds a demo world (``--leads`` people who identify, 12
months) in a temporary SQLite database exactly as ``leadflow demo`` does (load through
ingestion, then scores and stages), then plays the sales team *in time*: each lead that
becomes an MQL is accepted (85 %) or rejected two days later, and an accepted lead becomes
an opportunity a week after that with a probability driven by its account's hidden true
intent (simulator truth; the model never sees it), otherwise "not now". (``leadflow
demo``'s own sales play stamps every decision on the world's last day, which would make a
split by time meaningless.) Then ``train_from_store`` (target ``opportunity``, horizon 90
days) trains on the earlier 80 % of labelled leads and prints the ROC-AUC on the latest
20 % next to the rule-based MQL decision's precision/recall at the same number of
hand-offs, plus the training time - once with the event aggregates only (``--features
events``, before) and once with everything known before the labelling time (lead and
account attributes, custom fields, fit and engagement as of the cut-off; after).

**Lead export in the store** (``--part export``): the generated lead export of the
leakage-guard tests (``tests/lead_export.py``, ``--rows`` rows shaped like an online-education
company's CRM export, planted post-outcome columns included) loaded as history: each row
signs up by an ``identify`` (lead source, origin and country as traits) at a time spread
over a year in the export's row order, visits the site ``TotalVisits`` times in its first
week, and converts (``open_deal``) or is disqualified ten days after sign-up; then the
export's other columns (the honest ones and the planted ones) are imported with ``leadflow
import leads`` semantics. Prints the ``--csv`` model on the same export (leakage guard
default) next to the store model with events only (before) and with everything known
before the labelling time (after).

**Bank Marketing** (``--part bank``): the leakage report, the cross-validated ROC-AUC of
each candidate without and with ``duration`` (the call length, known only after the call),
the chosen model, its calibrated out-of-fold figures and the training time, next to the
published baseline. ``--time-ordered`` adds a run with expanding time-ordered folds (the
file is in date order, May 2008 - Nov 2010, but has no date column, so the row number
stands in for it). ``--lightgbm`` compares LightGBM with scikit-learn's histogram GBT on
the same folds, if lightgbm is installed (it is not a dependency).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from leadflow.adapters.db import migrate
from leadflow.adapters.db.tables import accounts, leads, stage_changes
from leadflow.bootstrap import build_services
from leadflow.core.model import Bant, SalesAction
from leadflow.core.predictive import TrainedModel, encode, infer_schema, train
from leadflow.services.lifecycle import ActionRefused, all_lead_ids, recompute_all, record_action
from leadflow.services.predictive import read_table
from leadflow.services.predictive_store import StoreTraining, train_from_store
from leadflow.settings import Settings
from leadflow.sim import WorldConfig, build_world
from leadflow.sim.loader import load_world

DEFAULT = (
    Path(__file__).resolve().parents[2] / "shared/data/bank-marketing/bank-additional-full.csv"
)
PUBLISHED = "0.79-0.80 (published baselines without duration; Moro et al. 2014 report ~0.79)"


def _run(frame: pl.DataFrame, label: str, **kwargs: object) -> tuple[TrainedModel, float]:
    started = time.perf_counter()
    model = train(frame, "y", **kwargs)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    print(f"\n== {label}: trained in {seconds:.1f} s")
    for cand in model.report.candidates:
        mark = "  <- chosen" if cand.model == model.report.chosen else ""
        print(
            f"   {cand.model:<18} CV ROC-AUC {cand.roc_auc_mean:.4f} ± {cand.roc_auc_std:.4f}{mark}"
        )
    e = model.report.evaluation
    print(
        f"   calibrated ({model.report.calibration}) out-of-fold: ROC-AUC {e.roc_auc:.4f}  "
        f"PR-AUC {e.pr_auc:.4f}  Brier {e.brier:.4f} (base rate {e.brier_base_rate:.4f})  "
        f"ECE {e.ece:.4f}  rows {e.rows}"
    )
    top = e.deciles[0]
    print(f"   top decile: conversion {top.conversion_rate:.1%}, lift {top.lift:.2f}")
    return model, seconds


def _lightgbm(frame: pl.DataFrame) -> None:
    try:
        import lightgbm  # type: ignore[import-not-found]
    except ImportError:
        print("\nlightgbm not installed: skipped")
        return
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from leadflow.core.predictive import build_candidate, parse_outcome

    y, _, _ = parse_outcome(frame["y"], "y")
    features = [c for c in frame.columns if c not in ("y", "duration")]
    schema = infer_schema(frame, features)
    X = encode(frame, schema)
    cats = [i for i, c in enumerate(schema.columns) if c.categorical]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    for name, make in (
        ("sklearn HistGradientBoosting", lambda: build_candidate("gradient_boosting", schema,
                                                                 rows=len(y))),
        ("lightgbm LGBMClassifier", lambda: lightgbm.LGBMClassifier(
            n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=20,
            reg_lambda=1.0, n_jobs=1, verbose=-1)),
    ):  # fmt: skip
        started = time.perf_counter()
        aucs = []
        for tr, te in folds:
            model = make()
            if name.startswith("lightgbm"):
                model.fit(X[tr], y[tr], categorical_feature=cats)
            else:
                model.fit(X[tr], y[tr])
            aucs.append(roc_auc_score(y[te], model.predict_proba(X[te])[:, 1]))
        print(
            f"   {name:<30} CV ROC-AUC {np.mean(aucs):.4f} ± {np.std(aucs):.4f}  "
            f"({time.perf_counter() - started:.1f} s for 5 folds)"
        )


def demo_world(n_leads: int, seed: int, gaps: list[float]) -> None:
    from sqlalchemy import select

    config = WorldConfig(leads=n_leads, months=12, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{Path(tmp) / 'demo.db'}")
        services = build_services(settings)
        migrate.upgrade(services.engine)
        started = time.perf_counter()
        report = load_world(services.engine, build_world(config))
        with services.engine.connect() as conn:
            ids = all_lead_ids(conn)
        recompute_all(services.engine, services.models, config.until, lead_ids=ids)
        print(
            f"demo world: seed {seed}, {config.months} months, {report.leads:,} leads, "
            f"{report.events:,} events, loaded and scored in {time.perf_counter() - started:.0f} s"
        )
        rng = random.Random(seed)
        bant = Bant(budget="confirmed", authority="confirmed", need="confirmed")
        counts = {"mql": 0, "rejected": 0, "opportunity": 0, "not_now": 0, "refused": 0}
        with services.engine.begin() as conn:
            handoff = services.models.active(conn, config.until).handoff_stage
        with services.engine.connect() as conn:
            first_mql = conn.execute(
                select(stage_changes.c.lead_id, stage_changes.c.at)
                .where(stage_changes.c.to_stage == handoff)
                .order_by(stage_changes.c.lead_id, stage_changes.c.at)
            ).all()
            intent = {
                r.id: float((r.traits or {}).get("demo_true_intent") or 0.0)
                for r in conn.execute(
                    select(leads.c.id, accounts.c.traits).select_from(
                        leads.outerjoin(accounts, accounts.c.id == leads.c.account_id)
                    )
                )
            }
        seen: set[int] = set()
        for lead_id, at in first_mql:
            if lead_id in seen:
                continue
            seen.add(lead_id)
            counts["mql"] += 1
            plan: list[tuple[str, timedelta, dict[str, object]]] = []
            if rng.random() < 0.15:
                plan.append(("reject", timedelta(days=2), {"reason": "too_early"}))
            else:
                plan.append(("accept", timedelta(days=2), {}))
                if rng.random() < 0.1 + 0.7 * intent.get(lead_id, 0.0):
                    plan.append(("qualify", timedelta(days=9), {"amount": 1e7, "bant": bant}))
                else:
                    plan.append(("not_now", timedelta(days=9), {}))
            for name, delay, extra in plan:
                when = at + delay
                if when > config.until:
                    break
                action = SalesAction(
                    action_id=f"bench-{name}-{lead_id}",
                    name=name,
                    at=when,
                    lead_id=lead_id,
                    **extra,  # type: ignore[arg-type]
                )
                try:
                    with services.engine.begin() as conn:
                        model = services.models.active(conn, config.until)
                        record_action(conn, action, model, config.until)
                except (ActionRefused, ValueError, LookupError):
                    counts["refused"] += 1
                    break
                key = {"reject": "rejected", "qualify": "opportunity", "not_now": "not_now"}
                if name in key:
                    counts[key[name]] += 1
        print(
            "sales in time: "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items())
            + " (refused: the lead had already moved on)"
        )
        summary = []
        for gap in gaps:
            for attributes in (False, True):
                started = time.perf_counter()
                training = train_from_store(
                    services.engine,
                    services.models,
                    config.until,
                    gap_days=gap,
                    attributes=attributes,
                )
                _print_store(training, gap, time.perf_counter() - started, attributes)
                h = training.holdout
                summary.append((gap, attributes, h.roc_auc if h else None, h.pr_auc if h else None))
        print("\n-- hold-out ROC-AUC / PR-AUC: events only (before) vs everything known (after)")
        for gap in gaps:
            before = next(r for r in summary if r[0] == gap and not r[1])
            after = next(r for r in summary if r[0] == gap and r[1])
            print(
                f"   --gap-days {gap:g}: events only {_fmt(before[2])} / {_fmt(before[3])}  "
                f"->  with attributes and scores {_fmt(after[2])} / {_fmt(after[3])}"
            )
        services.close()


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


IMPORTED = (
    "Do Not Email", "Total Time Spent on Website", "Page Views Per Visit", "Last Activity",
    "Specialization", "What is your current occupation", "Asymmetrique Activity Index",
    "Tags", "Lead Quality", "Lead Profile", "Last Notable Activity", "Lead Number",
)  # fmt: skip


def export_in_store(rows: int, seed: int) -> None:
    import csv
    import sys

    from sqlalchemy import select

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.lead_export import PLANTED, TARGET, lead_export  # the tests' generator

    from leadflow.core.tracking import parse_message
    from leadflow.services.importer import import_leads
    from leadflow.services.ingest import ingest

    frame = lead_export(rows=rows, seed=seed).sort("Lead Number")
    until = datetime(2025, 1, 1, tzinfo=UTC)
    start = until - timedelta(days=400)
    step = timedelta(days=360) / frame.height
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{Path(tmp) / 'export.db'}")
        services = build_services(settings)
        migrate.upgrade(services.engine)
        started = time.perf_counter()
        messages: list[dict[str, object]] = []
        for n, row in enumerate(frame.iter_rows(named=True)):
            t = start + n * step
            user = f"lead{n}"
            traits: dict[str, object] = {"email": f"{user}@example.com", "consent": "granted"}
            for column, trait in (("Lead Source", "Lead Source"), ("Lead Origin", "lead_origin"),
                                  ("Country", "country")):  # fmt: skip
                if row[column]:
                    traits[trait] = row[column]
            messages.append({"type": "identify", "userId": user, "messageId": f"id-{user}",
                             "timestamp": t.isoformat(), "traits": traits})  # fmt: skip
            visits = int(row["TotalVisits"] or 0)
            messages += [
                {"type": "page", "userId": user, "messageId": f"v{k}-{user}",
                 "timestamp": (t + timedelta(hours=6 + 30 * k)).isoformat(),
                 "properties": {"url": f"https://school.example/courses/{k % 7}"}}
                for k in range(min(visits, 30))
            ]  # fmt: skip
        for i in range(0, len(messages), 2000):
            part = [parse_message(m, received_at=until) for m in messages[i : i + 2000]]
            ingest(services.engine, part, until, after=services.after_ingest)
        with services.engine.connect() as conn:
            ids = {e.split("@")[0]: i for i, e in conn.execute(select(leads.c.id, leads.c.email))}
        for n, row in enumerate(frame.iter_rows(named=True)):
            lead_id = ids[f"lead{n}"]
            at = start + n * step + timedelta(days=10)
            converted = str(row[TARGET]) == "1"
            action = SalesAction(
                action_id=f"outcome-{lead_id}",
                name="open_deal" if converted else "disqualify",
                at=at,
                lead_id=lead_id,
                reason=None if converted else "not_interested",
            )
            with services.engine.begin() as conn:
                record_action(conn, action, services.models.active(conn, until), until)
        path = Path(tmp) / "Leads.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Email", *IMPORTED])
            for n, row in enumerate(frame.iter_rows(named=True)):
                writer.writerow([f"lead{n}@example.com", *(row[c] for c in IMPORTED)])
        summary = import_leads(services.engine, path, now=until, after=services.after_ingest)
        print(
            f"export: {frame.height:,} rows, {int((frame[TARGET] == '1').sum()):,} converted; "
            f"{len(messages):,} events and outcomes stored, {summary.updated:,} leads updated by "
            f"the import, in {time.perf_counter() - started:.0f} s"
        )
        csv_model, _ = _run(frame.drop(TARGET).with_columns(frame[TARGET].alias("y")),
                            "--csv on the same export (leakage guard default)",
                            id_column="Prospect ID")  # fmt: skip
        excluded = [f.column for f in csv_model.report.leakage if f.excluded]
        print(
            f"   --csv leakage guard dropped: {', '.join(excluded)} (planted: {', '.join(PLANTED)})"
        )
        for attributes in (False, True):
            began = time.perf_counter()
            training = train_from_store(
                services.engine, services.models, until, attributes=attributes
            )
            _print_store(training, 0.0, time.perf_counter() - began, attributes)
        services.close()


def _print_store(training: StoreTraining, gap: float, seconds: float, attributes: bool) -> None:
    s, r = training.store, training.model.report
    when = "just before the outcome" if gap == 0 else f"{gap:g} days before the outcome"
    kind = "everything known (--features all)" if attributes else "events only (--features events)"
    print(f"\n-- {kind}, as of {when} (--gap-days {gap:g})")
    print(
        f"   labelled leads {s['labelled']:,} ({s['positives']:,} reached opportunity), "
        f"trained on {s['train_rows']:,}, time hold-out {s['holdout_rows']:,} "
        f"(labelled from {s['holdout_from'][:10]})"
    )
    for cand in r.candidates:
        mark = "  <- chosen" if cand.model == r.chosen else ""
        print(f"   {cand.model:<18} time-ordered CV ROC-AUC {cand.roc_auc_mean:.4f}{mark}")
    h = training.holdout
    if h is None:
        print("   the hold-out has a single outcome: no ROC-AUC")
    else:
        print(
            f"   time hold-out: ROC-AUC {h.roc_auc:.4f}  PR-AUC {h.pr_auc:.4f}  "
            f"Brier {h.brier:.4f} (base rate {h.brier_base_rate:.4f})  ECE {h.ece:.4f}"
        )
        top = h.deciles[0]
        print(
            f"   hold-out top decile: conversion {top.conversion_rate:.1%} (lift "
            f"{top.lift:.1f}); ROC-AUC among the rule's hand-offs: "
            f"{s['holdout_roc_auc_within_handoffs']}"
        )
        if h.rule is not None and h.rule.handoffs:
            q = h.rule
            print(
                f"   at the same {q.handoffs} hand-offs: rule-based MQL precision "
                f"{q.rule_precision:.1%} recall {q.rule_recall:.1%} | model top-k precision "
                f"{q.model_precision:.1%} recall {q.model_recall:.1%}"
            )
    strongest = ", ".join(f"{name} {value:.2f}" for name, value in r.importance[:6])
    print(f"   strongest features (mean |log-odds|): {strongest}")
    used = set(r.columns_used)
    attrs = [c for c in s["features"]["attributes"] if c in used]
    print(f"   attribute features used ({len(attrs)}): {', '.join(attrs) or '-'}")
    print(f"   dropped by the leakage guard: {', '.join(s['features']['leakage_dropped']) or '-'}")
    for finding in r.leakage:
        if finding.excluded:
            print(f"      {finding.column}: {finding.reasons[0][:110]}")
    print(f"   training from the store took {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "demo", "export", "bank"), default="all")
    parser.add_argument("--rows", type=int, default=5000, help="export: rows of the export")
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--gap-days", type=float, nargs="+", default=[0.0, 14.0], help="demo: feature gaps"
    )
    parser.add_argument("--csv", type=Path, default=DEFAULT)
    parser.add_argument("--time-ordered", action="store_true")
    parser.add_argument("--lightgbm", action="store_true")
    args = parser.parse_args()
    if args.part in ("all", "demo"):
        print("== demo world, trained from the store")
        demo_world(args.leads, args.seed, args.gap_days)
    if args.part in ("all", "export"):
        print("\n== a lead export loaded into the store as history")
        export_in_store(args.rows, args.seed)
    if args.part in ("all", "bank"):
        bank(args)


def bank(args: argparse.Namespace) -> None:
    frame = read_table(args.csv)
    print(f"{args.csv}: {frame.height} rows, {frame.width} columns")

    model, _ = _run(frame, "without duration (leakage guard default)")
    print("\nleakage report:")
    for f in model.report.leakage:
        action = "excluded" if f.excluded else "kept"
        print(
            f"   {f.column}: {action}; alone AUC {f.single_column_auc:.3f}; {'; '.join(f.reasons)}"
        )
    print(f"chosen: {model.report.chosen}; importance: {model.report.importance[:6]}")
    print(f"published baseline: {PUBLISHED}")

    _run(frame, "with duration (--keep duration; for comparison only, not realistic)",
         keep=["duration"])  # fmt: skip

    if args.time_ordered:
        ordered = frame.with_row_index("row_order").with_columns(pl.col("row_order").cast(pl.Utf8))
        _run(ordered, "without duration, expanding time-ordered folds (file order)",
             time_column="row_order")  # fmt: skip
    if args.lightgbm:
        print("\nLightGBM vs scikit-learn histogram GBT (same features, same 5 folds, 1 thread):")
        with threadpool_limits(limits=1):
            _lightgbm(frame)


if __name__ == "__main__":
    main()
