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

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from leadflow.core.predictive import PredictiveError, Report, report_json, train
from leadflow.entrypoints.cli.common import fail
from leadflow.entrypoints.cli.output import Format
from leadflow.services.predictive import (
    PROBABILITY,
    load_model,
    read_table,
    save_model,
    scored_frame,
    write_csv,
)

app = typer.Typer(no_args_is_help=True, help="Predictive scoring: train, evaluate, score.")


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
    csv_file: Path = typer.Option(..., "--csv", help="Historical export, one row per lead."),
    target: str = typer.Option(..., "--target", help="Outcome column (yes/no, 1/0, won/lost)."),
    id_column: str | None = typer.Option(None, "--id", help="Identifier column (not a feature)."),
    exclude: list[str] = typer.Option(
        [], "--exclude", help="Column(s) to leave out; repeatable or comma-separated."
    ),
    keep: list[str] = typer.Option(
        [], "--keep", help="Suspected-leakage column(s) to keep anyway."
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
) -> None:
    """Train and evaluate a calibrated conversion model on a historical CRM export."""
    if fmt is Format.csv:
        fail("--format: the report is table or json")
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
    else:
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
        for d in report.dropped:
            if d.reason != "suspected leakage":
                table.add_row(d.column, f"dropped: {d.reason}")
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
        table.add_row(name, f"{value:.3f}")
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
            f.column,
            f"{f.single_column_auc:.3f}",
            "; ".join(f.reasons),
            "excluded (--keep to keep)" if f.excluded else "kept (--keep)",
        )
    console.print(table)
