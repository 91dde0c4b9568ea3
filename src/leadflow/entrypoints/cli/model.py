"""``leadflow model check|show|history|apply|backtest|calibrate`` and ``leadflow score explain``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leadflow.adapters.db.repositories.models import model_source
from leadflow.core.config import ModelConfigError, check, load_model
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import lifecycle
from leadflow.services.leads import lead_id_by_email

app = typer.Typer(
    help="The lead model (leadflow.yaml): validate, show, apply, backtest.", no_args_is_help=True
)
score_app = typer.Typer(
    help="Scores: explain how a lead's scores came about.", no_args_is_help=True
)

FormatOption = typer.Option(Format.table, "--format", help="Output format.")
MAX_MODEL_BYTES = 1024 * 1024


@contextmanager
def lead_progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over leads; yields the callback that advances it."""
    with Progress(
        TextColumn("[bold]recompute[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("recompute", total=total)
        yield lambda n: bar.advance(task, n)


def read_model_file(path: Path) -> str:
    """The text of a model file, refused clearly when it is missing, huge or not UTF-8."""
    if not path.is_file():
        fail(f"{path}: no such file")
    if path.stat().st_size > MAX_MODEL_BYTES:
        fail(f"{path}: larger than {MAX_MODEL_BYTES // 1024} KB; a lead model is a small file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start})")


@app.command("check")
def check_cmd(file: Path = typer.Argument(..., help="A leadflow.yaml to validate.")) -> None:
    """Validate a model file without applying it; every problem names its key path."""
    report = check(read_model_file(file))
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)


@app.command("show")
def show(database_url: str | None = DatabaseOption) -> None:
    """Print the active model (YAML) with its version and hash."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        source = model_source(conn, model.content_hash)
    typer.echo(f"# active model {model.version} (sha256 {model.content_hash})", err=True)
    typer.echo(source, nl=not source.endswith("\n"))


@app.command("history")
def history(fmt: Format = FormatOption, database_url: str | None = DatabaseOption) -> None:
    """Every model version applied to this database."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        services.models.active(conn, services.clock())
        rows = lifecycle.model_history(conn)
    render(
        rows,
        ["version", "content_hash", "created_at", "activated_at", "active"],
        fmt,
        title="lead models",
    )


@app.command("apply")
def apply(
    file: Path = typer.Argument(..., help="The new leadflow.yaml."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Switch to a new model and recompute every lead's scores and stages. Leads whose
    stage changes get a `model.apply` stage change; the history before stays as it was."""
    source = read_model_file(file)
    try:
        model = load_model(source)
    except ModelConfigError as exc:
        fail(f"{file}: {exc}")
    with services_for(database_url) as services:
        if not yes and not typer.confirm(
            f"Apply model {model.version} and recompute every lead? "
            "(`leadflow model backtest` first shows what changes)"
        ):
            raise typer.Exit(1)
        with services.engine.connect() as conn:
            total = len(lifecycle.all_lead_ids(conn))
        with lead_progress(total) as advance:
            report = lifecycle.apply_model(
                services.engine,
                services.models,
                model,
                source,
                services.clock(),
                progress=advance,
            )
    typer.echo(
        f"applied model {report.version} (was {report.previous_version}); "
        f"{report.leads:,} leads recomputed, {report.changed_stage:,} changed stage"
    )
    rows = [{"from": a, "to": b, "leads": n} for (a, b), n in sorted(report.moves.items())]
    if rows:
        render(rows, ["from", "to", "leads"], Format.table, title="stage changes by the switch")


@app.command("backtest")
def backtest(
    file: Path = typer.Argument(..., help="The candidate leadflow.yaml."),
    since: str | None = typer.Option(
        None, "--since", help="Count MQLs from this date (YYYY-MM-DD); scores use all history."
    ),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Replay the stored history under a candidate model, without changing live data, and
    compare it with the current model: MQLs, leads changing stage, weekly MQL volume, and
    MQL conversion where sales outcomes are known."""
    from datetime import UTC, date, datetime

    from leadflow.services.backtest import run_backtest

    source = read_model_file(file)
    try:
        candidate = load_model(source)
    except ModelConfigError as exc:
        fail(f"{file}: {exc}")
    since_at = None
    if since is not None:
        try:
            day = date.fromisoformat(since.strip())
        except ValueError:
            fail(f"--since: expected a date as YYYY-MM-DD, got {since[:40]!r}")
        since_at = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with (
        services_for(database_url) as services,
        Progress(
            TextColumn("[bold]reading events[/]"),
            TimeElapsedColumn(),
            TextColumn("{task.completed:,} events"),
            console=Console(stderr=True),
        ) as bar,
    ):
        task = bar.add_task("read", total=None)
        report = run_backtest(
            services.engine,
            services.models,
            candidate,
            services.clock(),
            since=since_at,
            progress=lambda n: bar.advance(task, n),
        )
    if fmt is Format.json:
        typer.echo(
            json.dumps(
                {
                    "as_of": report.as_of.isoformat(),
                    "leads": report.leads,
                    "events": report.events,
                    "current": {
                        "version": report.current.version,
                        "mql": report.current.mql,
                        "opportunity_rate": report.current.opportunity_rate,
                        "won_rate": report.current.won_rate,
                        "rejected_share": report.current.rejected_share,
                    },
                    "candidate": {
                        "version": report.candidate.version,
                        "mql": report.candidate.mql,
                        "opportunity_rate": report.candidate.opportunity_rate,
                        "won_rate": report.candidate.won_rate,
                        "rejected_share": report.candidate.rejected_share,
                    },
                    "newly_mql": report.newly_mql,
                    "no_longer_mql": report.no_longer_mql,
                    "stage_changes": [
                        {"current": a, "candidate": b, "leads": n}
                        for (a, b), n in sorted(report.stage_changes.items())
                    ],
                    "sample": [
                        {"lead_id": i, "current": a, "candidate": b} for i, a, b in report.sample
                    ],
                    "weekly_mql": report.weekly.to_dicts(),
                },
                default=str,
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    for line in report.lines():
        typer.echo(line)
    weekly = report.weekly.tail(12).to_dicts()
    if weekly:
        render(weekly, ["week", "current", "candidate"], fmt, title="MQLs per week (sales load)")


@app.command("calibrate")
def calibrate(
    outcome: str = typer.Option(
        "won", "--outcome", help="won|opportunity|handoff: the stage role that counts as converted."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the proposed leadflow.yaml here."),
    min_support: int = typer.Option(
        10, "--min-support", min=1, help="Rules/values fewer leads have keep their points."
    ),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Propose engagement points, fit points and the MQL threshold from the stored outcomes
    (which behaviours and attributes separate converters), show the model diff and its
    backtest. Nothing is applied: `leadflow model apply FILE` does that."""
    from leadflow.core.calibrate_points import CalibrationError
    from leadflow.services.calibration import OUTCOMES
    from leadflow.services.calibration import calibrate as run_calibration

    if outcome not in OUTCOMES:
        fail(f"--outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")
    if out is not None and not out.parent.exists():
        fail(f"--out: directory {out.parent} does not exist")
    with services_for(database_url) as services:
        try:
            result = run_calibration(
                services.engine,
                services.models,
                outcome,
                services.clock(),
                min_support=min_support,
            )
        except (CalibrationError, ModelConfigError) as exc:
            fail(f"calibrate: {exc}")
    if out is not None:
        out.write_text(result.proposed_source, encoding="utf-8")
    p, report, cap = result.proposal, result.backtest, result.at_capacity
    rows = [
        {
            "kind": r.kind,
            "rule": r.key,
            "points": r.current,
            "proposed": r.proposed,
            "leads": r.support,
            "converters": r.converters,
            "lift": None if r.lift is None or r.lift == float("inf") else round(r.lift, 3),
            "reason": r.reason,
        }
        for r in p.rows
    ]
    summary = {
        "outcome": result.outcome,
        "stages": list(result.stages),
        "leads": p.leads,
        "converters": p.converters,
        "threshold": {"current": p.threshold_current, "proposed": p.threshold_proposed},
        "mql_on_history": {"current": p.mql_current, "proposed": p.mql_proposed},
        "roc_auc": {"current": p.auc_current, "proposed": p.auc_proposed},
        "at_capacity": {
            "capacity": cap.capacity,
            "current": {"precision": cap.precision_current, "recall": cap.recall_current},
            "proposed": {"precision": cap.precision_proposed, "recall": cap.recall_proposed},
        },
        "backtest": {
            "current": {"version": report.current.version, "mql": report.current.mql},
            "candidate": {"version": report.candidate.version, "mql": report.candidate.mql},
        },
    }
    if fmt is Format.json:
        typer.echo(
            json.dumps({**summary, "rows": rows, "diff": result.diff}, ensure_ascii=False, indent=2)
        )
        return
    typer.echo(
        f"{p.leads:,} leads, {p.converters:,} reached {outcome} ({', '.join(result.stages)}); "
        f"MQL threshold {p.threshold_current:g} -> {p.threshold_proposed:g} "
        f"({p.mql_current:,} -> {p.mql_proposed:,} MQLs on this history); engagement score "
        f"ROC-AUC against {outcome}: current {p.auc_current:.3f}, proposed {p.auc_proposed:.3f}"
    )
    typer.echo(
        f"at sales capacity ({cap.per_day:,}/day x {cap.working_days:,} working days = "
        f"{cap.capacity:,} leads, highest scores first): precision {_pct(cap.precision_current)}"
        f" -> {_pct(cap.precision_proposed)}, recall {_pct(cap.recall_current)} -> "
        f"{_pct(cap.recall_proposed)}"
    )
    shown = rows if fmt is not Format.table else [r for r in rows if r["leads"]]
    render(
        shown,
        ["kind", "rule", "points", "proposed", "leads", "converters", "lift", "reason"],
        fmt,
        title=f"points calibrated on {outcome}",
    )
    if len(shown) < len(rows):
        typer.echo(f"{len(rows) - len(shown)} rules and fit values no lead has kept their points")
    if fmt is Format.table:
        typer.echo(result.diff or "(no change to the model)")
        for line in report.lines():
            typer.echo(line)
        if out is not None:
            typer.echo(f"wrote {out}; apply it with `leadflow model apply {out}`")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


@app.command("recompute")
def recompute(database_url: str | None = DatabaseOption) -> None:
    """Recompute every lead's scores and stages now (decay, ended pauses)."""
    with services_for(database_url) as services:
        with services.engine.connect() as conn:
            ids = lifecycle.all_lead_ids(conn)
        with lead_progress(len(ids)) as advance:
            res = lifecycle.recompute_all(
                services.engine,
                services.models,
                services.clock(),
                lead_ids=ids,
                progress=advance,
            )
    typer.echo(f"{res.leads:,} leads recomputed; {res.changes_added:,} stage changes added")


@score_app.command("explain")
def explain(
    email: str = typer.Argument(..., help="The lead's e-mail address."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Every rule that contributed to the lead's scores, before and after decay."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        lead_id = lead_id_by_email(conn, email)
        if lead_id is None:
            fail(f"no lead with e-mail {email!r}")
        now = services.clock()
        result = lifecycle.explain(conn, lead_id, services.models.active(conn, now), now)
    if fmt is Format.json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))
        return
    eng = result["engagement"]
    typer.echo(
        f"lead {lead_id} ({email}) - stage {result['stage']} - model {result['model_version']}"
    )
    typer.echo(
        f"engagement {eng['total']:.1f} (MQL at {eng['mql_threshold']}, half-life "
        f"{eng['half_life_days']} days); fit {result['fit']['score']:.0f} grade "
        f"{result['fit']['grade']}; qualification {result['qualification']['score']:.0f} "
        f"(hand-off at {result['qualification']['threshold']:.0f})"
    )
    render(
        eng["rules"],
        ["rule", "occurrences", "capped", "points_before_decay", "points_after_decay"],
        fmt,
        title="engagement rules",
    )
    render(result["fit"]["criteria"], ["criterion", "value", "points"], fmt, title="fit")
    render(
        result["qualification"]["criteria"],
        ["criterion", "level", "weight", "points"],
        fmt,
        title="qualification (BANT)",
    )
