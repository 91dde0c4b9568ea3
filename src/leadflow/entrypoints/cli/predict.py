"""``leadflow predict train|score``: conversion models from any CRM export.

``train`` cleans the export, guards against leakage, picks a model by cross-validated
ROC-AUC, calibrates it and prints the evaluation report; ``score`` adds a probability and
the columns that raised and lowered it. See docs/predictive.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from leadflow.core.predictive import LEAKAGE_DROP, PredictiveError, Report, report_json, train
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services.predictive import (
    PROBABILITY,
    load_model,
    read_table,
    save_model,
    scored_frame,
    write_csv,
)
from leadflow.services.predictive_store import (
    VersionNotFound,
    activate,
    drift_report,
    get_version,
    list_versions,
    prediction_for,
    refresh_predictions,
    save_store_training,
    save_version,
    train_from_store,
)

app = typer.Typer(no_args_is_help=True, help="Predictive scoring: train, evaluate, score.")
ListFormat = typer.Option(Format.table, "--format", help="table, json or csv.")


def _names(values: Sequence[str], columns: Sequence[str]) -> list[str]:
    """Repeated options, or comma-separated lists when the value is not itself a column."""
    out: list[str] = []
    for value in values:
        if value in columns:
            out.append(value)
        else:
            out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


@app.command("train")
def train_command(
    csv_file: Path | None = typer.Option(
        None, "--csv", help="Historical export, one row per lead (default: train from the store)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="Outcome column of --csv (yes/no, 1/0, won/lost)."
    ),
    id_column: str | None = typer.Option(None, "--id", help="Identifier column (not a feature)."),
    exclude: list[str] = typer.Option(
        [], "--exclude", help="Column(s) to leave out; repeatable or comma-separated."
    ),
    keep: list[str] = typer.Option(
        [],
        "--keep",
        help="Suspected-leakage column(s) to keep anyway; repeatable or comma-separated.",
    ),
    time_column: str | None = typer.Option(
        None, "--time-column", help="Date/time column: cross-validate in time order."
    ),
    rule_column: str | None = typer.Option(
        None, "--rule-column", help="Rule-based decision (yes/no, e.g. MQL) to compare against."
    ),
    positive: str | None = typer.Option(
        None, "--positive", help="Which target value is the conversion (default: guessed)."
    ),
    sep: str = typer.Option("auto", "--sep", help="Field separator: auto, ',', ';', tab, '|'."),
    folds: int = typer.Option(5, "--folds", min=2, max=20, help="Cross-validation folds."),
    model_out: Path | None = typer.Option(
        None, "--model-out", help="Write the model here (and its report to FILE.json)."
    ),
    fmt: Format = typer.Option(Format.table, "--format", help="Report format: table or json."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
    target_stage: str | None = typer.Option(
        None,
        "--target-stage",
        help="Store: the stage that counts as a conversion (default: role opportunity's).",
    ),
    handoff_stage: str | None = typer.Option(
        None,
        "--handoff-stage",
        help="Store: the rule-based hand-off stage to compare with (default: role handoff's).",
    ),
    horizon_days: float = typer.Option(
        90.0, "--horizon-days", help="Store: no target stage this long after acquisition = no."
    ),
    holdout: float = typer.Option(
        0.2, "--holdout", help="Store: share of the latest labelled leads held out."
    ),
    gap_days: float = typer.Option(
        0.0, "--gap-days", help="Store: features as of this many days before the outcome."
    ),
    features: str = typer.Option(
        "all",
        "--features",
        help="Store: all (attributes, custom fields, fit and engagement as of the cut-off, "
        "and event aggregates) or events (event aggregates only).",
    ),
    save: bool = typer.Option(
        False, "--save", help="With --csv: also store the model as a version in the database."
    ),
    database_url: str | None = DatabaseOption,
) -> None:
    """Train and evaluate a calibrated conversion model: from leadflow's own store (leads
    with known outcomes), or from a historical CRM export with --csv. The model is stored
    as a new version; it scores leads only after `leadflow predict activate VERSION`."""
    if fmt is Format.csv:
        fail("--format: the report is table or json")
    if csv_file is None:
        if target is not None or save or model_out is not None:
            fail("--target, --save and --model-out go with --csv (store models are versioned)")
        if features not in ("all", "events"):
            fail(f"--features {features!r}: use all or events")
        _train_from_store(
            attributes=features == "all",
            keep=_names(keep, []),
            exclude=_names(exclude, []),
            target_stage=target_stage,
            handoff_stage=handoff_stage,
            horizon_days=horizon_days,
            holdout=holdout,
            gap_days=gap_days,
            folds=folds,
            fmt=fmt,
            progress=progress,
            database_url=database_url,
        )
        return
    if target is None:
        fail("--target: required with --csv (the outcome column)")
    err = Console(stderr=True)
    started = time.perf_counter()
    try:
        frame = read_table(csv_file, sep)
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=err,
            disable=not progress or not err.is_terminal,
            transient=True,
        )
        with bar:
            task = bar.add_task("cleaning", total=None)
            model = train(
                frame,
                target,
                id_column=id_column,
                exclude=_names(exclude, frame.columns),
                keep=_names(keep, frame.columns),
                time_column=time_column,
                rule_column=rule_column,
                positive=positive,
                folds=folds,
                progress=lambda label, done, total: bar.update(
                    task, description=label, completed=done, total=total
                ),
            )
        report_path = save_model(model, model_out) if model_out else None
    except PredictiveError as exc:
        fail(str(exc))
    seconds = time.perf_counter() - started
    if fmt is Format.json:
        payload = json.loads(report_json(model.report))
        payload["training_seconds"] = round(seconds, 2)
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        print_report(model.report, Console(soft_wrap=False, width=120))
        out = Console(soft_wrap=False, width=120)
        out.print(f"trained in {seconds:.1f} s")
    if model_out:
        err.print(f"model {model.report.version} written to {model_out} (report: {report_path})")
    if save:
        with services_for(database_url) as services:
            version = save_version(
                services.engine,
                model,
                kind="csv",
                target=target,
                report=json.loads(report_json(model.report)),
                features={},
                now=services.clock(),
            )
        err.print(f"stored as version {version} (CSV models score files, not leads)")
    elif not model_out:
        err.print("model not saved: add --model-out FILE to score new rows with it")


@app.command("score")
def score_command(
    csv_file: Path = typer.Option(..., "--csv", help="Rows to score (same columns as training)."),
    model_file: Path = typer.Option(..., "--model", help="Model file from `predict train`."),
    out: Path = typer.Option(..., "--out", help="Where to write the scored CSV."),
    sep: str = typer.Option("auto", "--sep", help="Field separator of --csv."),
    top: int = typer.Option(3, "--top", min=1, max=20, help="Columns named per direction."),
) -> None:
    """Add probability, raised_by and lowered_by columns to a CSV."""
    err = Console(stderr=True)
    try:
        model = load_model(model_file)
        frame = read_table(csv_file, sep)
        missing = [c for c in model.schema.names if c not in frame.columns]
        if missing:
            fail(
                f"{csv_file}: the model needs column(s) {', '.join(map(repr, missing))}, "
                "which the file lacks"
            )
        replaced = [c for c in (PROBABILITY, "raised_by", "lowered_by") if c in frame.columns]
        scored = scored_frame(frame, model, top)
        if out.resolve() == csv_file.resolve():
            fail("--out must differ from --csv (the input is never overwritten)")
        write_csv(scored, out)
    except PredictiveError as exc:
        fail(str(exc))
    if replaced:
        err.print(f"replaced existing column(s): {', '.join(replaced)}")
    typer.echo(f"scored {scored.height} rows with model {model.report.version} -> {out}")


def print_report(report: Report, console: Console) -> None:
    """The evaluation report as rich tables."""
    rate = report.conversions / report.rows if report.rows else 0.0
    console.print(
        f"[bold]{report.target}[/] = {report.positive!r}: {report.conversions} of "
        f"{report.rows} rows ({rate:.1%}); {report.split} {report.folds}-fold cross-validation"
    )
    for note in report.notes:
        console.print(f"note: {note}")
    _leakage_table(report, console)
    if report.dropped or report.cleaning:
        table = Table(title="Cleaning")
        table.add_column("column")
        table.add_column("what happened")
        for dropped in report.dropped:
            if not dropped.reason.startswith(LEAKAGE_DROP):
                table.add_row(dropped.column, f"dropped: {dropped.reason}")
        for name, notes in report.cleaning.items():
            table.add_row(name, "; ".join(notes))
        if table.row_count:
            console.print(table)
    table = Table(title="Candidates (cross-validated ROC-AUC, uncalibrated)")
    for c in ("model", "ROC-AUC", "± std", "per fold", "chosen"):
        table.add_column(c)
    for cand in report.candidates:
        table.add_row(
            cand.model,
            f"{cand.roc_auc_mean:.4f}",
            f"{cand.roc_auc_std:.4f}",
            " ".join(f"{a:.3f}" for a in cand.fold_aucs),
            "✓" if cand.model == report.chosen else "",
        )
    console.print(table)
    e = report.evaluation
    table = Table(
        title=f"Evaluation: {report.chosen}, {report.calibration}-calibrated, out-of-fold"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("rows evaluated", str(e.rows))
    table.add_row("ROC-AUC", f"{e.roc_auc:.4f}")
    table.add_row("PR-AUC (average precision)", f"{e.pr_auc:.4f}")
    table.add_row("Brier score (base-rate guess)", f"{e.brier:.4f} ({e.brier_base_rate:.4f})")
    table.add_row("expected calibration error", f"{e.ece:.4f}")
    console.print(table)
    table = Table(title="Deciles (1 = highest probability)")
    for c in ("decile", "rows", "conversions", "conv. rate", "lift", "mean prob.", "cum. capture"):
        table.add_column(c, justify="right")
    for d in e.deciles:
        table.add_row(
            str(d.decile),
            str(d.rows),
            str(d.conversions),
            f"{d.conversion_rate:.1%}",
            f"{d.lift:.2f}",
            f"{d.mean_probability:.3f}",
            f"{d.cumulative_capture:.1%}",
        )
    console.print(table)
    if e.rule is not None:
        r = e.rule
        table = Table(title=f"Rule {r.column!r} vs model at the same {r.handoffs} hand-offs")
        for c in ("", "precision", "recall"):
            table.add_column(c, justify="right")
        table.add_row(f"rule ({r.column})", f"{r.rule_precision:.1%}", f"{r.rule_recall:.1%}")
        table.add_row("model top-k", f"{r.model_precision:.1%}", f"{r.model_recall:.1%}")
        console.print(table)
    table = Table(title=f"Strongest columns (mean |contribution|: {report.explanation_method})")
    table.add_column("column")
    table.add_column("mean |log-odds|", justify="right")
    for name, value in report.importance[:10]:
        table.add_row(escape(name), f"{value:.3f}")
    console.print(table)


def _leakage_table(report: Report, console: Console) -> None:
    if not report.leakage:
        console.print("leakage guard: no column suspected")
        return
    table = Table(title="Leakage guard: suspected columns")
    for c in ("column", "alone AUC", "why", "action"):
        table.add_column(c)
    for f in report.leakage:
        table.add_row(
            escape(f.column),
            f"{f.single_column_auc:.3f}",
            escape("; ".join(f.reasons)),
            "excluded (--keep to keep)" if f.excluded else "kept (--keep)",
        )
    console.print(table)
    excluded = [f.column for f in report.leakage if f.excluded]
    if excluded:
        console.print(
            f"trained without {len(excluded)} suspected column(s): {', '.join(excluded)} "
            "(--keep COLUMN to train with one)"
        )


# --------------------------------------------------------------------------- the store


def _bar(err: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        disable=not enabled or not err.is_terminal,
        transient=True,
    )


def _train_from_store(
    *,
    attributes: bool,
    keep: list[str],
    exclude: list[str],
    target_stage: str | None,
    handoff_stage: str | None,
    horizon_days: float,
    holdout: float,
    gap_days: float,
    folds: int,
    fmt: Format,
    progress: bool,
    database_url: str | None,
) -> None:
    err = Console(stderr=True)
    with services_for(database_url) as services:
        now = services.clock()
        try:
            bar = _bar(err, progress)
            with bar:
                task = bar.add_task("reading the store", total=None)
                training = train_from_store(
                    services.engine,
                    services.models,
                    now,
                    target_stage=target_stage,
                    handoff_stage=handoff_stage,
                    horizon_days=horizon_days,
                    holdout=holdout,
                    gap_days=gap_days,
                    folds=folds,
                    attributes=attributes,
                    keep=keep,
                    exclude=exclude,
                    progress=lambda label, done, total: bar.update(
                        task, description=label, completed=done, total=total
                    ),
                )
            version = save_store_training(services.engine, training, now)
        except PredictiveError as exc:
            fail(str(exc))
    report = training.report()
    report["version"] = version
    if fmt is Format.json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        out = Console(soft_wrap=False, width=120)
        store = training.store
        out.print(
            f"[bold]store[/]: {store['labelled']} leads with a known outcome "
            f"({store['positives']} reached {store['target_stage']!r} or later), horizon "
            f"{horizon_days:g} days; trained on {store['train_rows']}, held out the latest "
            f"{store['holdout_rows']} (labelled from {store['holdout_from']})"
        )
        print_report(training.model.report, out)
        print_holdout(report, out)
        print_features(report, out)
        out.print(f"note: rule scores: {store['rule_scores']}")
        out.print(f"trained in {store['training_seconds']:.1f} s")
    typer.echo(
        f"stored as version {version} (not active: `leadflow predict activate {version}`)",
        err=True,
    )


def print_holdout(report: dict[str, Any], console: Console) -> None:
    holdout = report.get("holdout")
    if not holdout:
        for note in report.get("store", {}).get("notes", []):
            console.print(f"note: {note}")
        return
    table = Table(title="Time hold-out (latest labelled leads, never seen in training)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("rows", str(holdout["rows"]))
    table.add_row("ROC-AUC", f"{holdout['roc_auc']:.4f}")
    table.add_row("PR-AUC", f"{holdout['pr_auc']:.4f}")
    table.add_row(
        "Brier score (base rate)", f"{holdout['brier']:.4f} ({holdout['brier_base_rate']:.4f})"
    )
    table.add_row("expected calibration error", f"{holdout['ece']:.4f}")
    within = report.get("store", {}).get("holdout_roc_auc_within_handoffs")
    if within is not None:
        table.add_row("ROC-AUC among the rule's hand-offs", f"{within:.4f}")
    console.print(table)
    rule = holdout.get("rule")
    if rule:
        table = Table(
            title=f"Hold-out: rule-based hand-off ({rule['column']}) vs model at the same "
            f"{rule['handoffs']} hand-offs"
        )
        for c in ("", "precision", "recall"):
            table.add_column(c, justify="right")
        table.add_row("rule", f"{rule['rule_precision']:.1%}", f"{rule['rule_recall']:.1%}")
        table.add_row(
            "model top-k", f"{rule['model_precision']:.1%}", f"{rule['model_recall']:.1%}"
        )
        console.print(table)


def print_features(report: dict[str, Any], console: Console) -> None:
    """Which features a store model was trained on, by kind, and what it left out."""
    store = report.get("store") or {}
    features = store.get("features")
    if not features:
        return
    used = set(report.get("columns_used") or [])
    table = Table(title=f"Features as of {features.get('as_of', 'the labelling time')}")
    table.add_column("kind")
    table.add_column("columns")
    attributes = [
        c for c in features.get("attributes", []) if c not in features.get("custom_fields", [])
    ]
    custom = features.get("custom_fields", [])
    behaviour = [
        c for c in report.get("columns_used") or [] if c not in attributes and c not in custom
    ]

    def names(columns: Sequence[str]) -> str:
        shown = (c if c in used else f"{c} (not used)" for c in columns)
        return escape(", ".join(shown)) or "-"

    table.add_row("attributes and rule scores", names(attributes))
    table.add_row("custom fields", names(custom))
    table.add_row(
        f"event aggregates ({len(behaviour)} used)",
        ", ".join(behaviour[:12]) + (", ..." if len(behaviour) > 12 else ""),
    )
    for key, why in (features.get("never_used") or {}).items():
        table.add_row("never used", f"{key}: {why}")
    dropped = features.get("leakage_dropped") or []
    table.add_row("dropped by the leakage guard", escape(", ".join(dropped)) or "-")
    console.print(table)


@app.command("list")
def list_command(fmt: Format = ListFormat, database_url: str | None = DatabaseOption) -> None:
    """Every stored model version, newest first, with its ROC-AUC and whether it is active."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        rows = list_versions(conn)
    columns = ["version", "created_at", "kind", "target", "chosen", "cv_roc_auc",
               "holdout_roc_auc", "active", "activated_at"]  # fmt: skip
    render(rows, columns, fmt, title="Predictive models")


@app.command("show")
def show_command(
    version: str = typer.Argument(..., help="A version from `leadflow predict list`."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
    database_url: str | None = DatabaseOption,
) -> None:
    """A stored version's evaluation report."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        try:
            row = get_version(conn, version)
        except VersionNotFound as exc:
            fail(str(exc))
    report = dict(row["report"] or {})
    if fmt is not Format.table:
        meta = {k: row[k] for k in ("version", "kind", "target", "active")}
        payload = {**meta, "created_at": str(row["created_at"]), "report": report}
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
        return
    out = Console(soft_wrap=False, width=120)
    state = "active" if row["active"] else "not active"
    out.print(f"[bold]{row['version']}[/] ({row['kind']}, target {row['target']!r}, {state})")
    e = report.get("evaluation") or {}
    out.print(
        f"chosen {report.get('chosen')}, {report.get('calibration')}-calibrated; "
        f"cross-validated ROC-AUC {e.get('roc_auc')}, PR-AUC {e.get('pr_auc')}, "
        f"Brier {e.get('brier')}, ECE {e.get('ece')}"
    )
    print_holdout(report, out)
    print_features(report, out)
    table = Table(title="Strongest columns")
    table.add_column("column")
    table.add_column("mean |log-odds|", justify="right")
    for name, value in (report.get("importance") or [])[:10]:
        table.add_row(escape(str(name)), f"{value:.3f}")
    out.print(table)


@app.command("activate")
def activate_command(
    version: str = typer.Argument(..., help="A version from `leadflow predict list`."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Make VERSION the only active model (the next refresh scores every lead with it)."""
    with services_for(database_url) as services:
        try:
            activate(services.engine, version, services.clock())
        except (VersionNotFound, PredictiveError) as exc:
            fail(str(exc))
    typer.echo(f"activated {version}; run `leadflow predict refresh` (the worker also does)")


@app.command("refresh")
def refresh_command(database_url: str | None = DatabaseOption) -> None:
    """Score every lead whose prediction is missing or stale with the active model."""
    with services_for(database_url) as services:
        try:
            count = refresh_predictions(services.engine, services.clock(), services.models)
        except PredictiveError as exc:
            fail(str(exc))
    typer.echo(f"scored {count} leads")


@app.command("explain")
def explain_command(
    lead_id: int = typer.Argument(..., min=1, help="The lead's id."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
    database_url: str | None = DatabaseOption,
) -> None:
    """A lead's predicted conversion probability and the features that raised and lowered
    it (signed log-odds contributions)."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        found = prediction_for(conn, lead_id)
    if found is None:
        fail(f"lead {lead_id}: no prediction (no active model, not refreshed yet, or no lead)")
    if fmt is not Format.table:
        typer.echo(json.dumps(found, indent=2, ensure_ascii=False, default=str))
        return
    out = Console(soft_wrap=False, width=120)
    out.print(
        f"lead {lead_id}: predicted {found['probability']:.1%} "
        f"(model {found['version']}, scored {found['scored_at']})"
    )
    table = Table(title="Contributions (log-odds)")
    for c in ("direction", "feature", "value", "contribution"):
        table.add_column(c)
    for direction, key in (("raised", "raised_by"), ("lowered", "lowered_by")):
        for c in found[key]:
            table.add_row(
                direction, escape(c["column"]), escape(str(c["value"])), f"{c['log_odds']:+.3f}"
            )
    out.print(table)


@app.command("drift")
def drift_command(fmt: Format = ListFormat, database_url: str | None = DatabaseOption) -> None:
    """Population stability index of the score and of every feature: now vs training time
    (flagged above 0.2)."""
    with services_for(database_url) as services:
        try:
            version, rows = drift_report(services.engine, services.models, services.clock())
        except PredictiveError as exc:
            fail(str(exc))
    data = [
        {
            "column": r.column,
            "psi": r.psi,
            "drift": "yes" if r.flagged else "",
            "training_rows": r.reference_rows,
            "current_rows": r.current_rows,
        }
        for r in rows
    ]
    render(
        data,
        ["column", "psi", "drift", "training_rows", "current_rows"],
        fmt,
        title=f"Drift of {version} (PSI > 0.2 flagged)",
    )
