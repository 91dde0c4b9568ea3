"""``leadflow programs ...``: nurture programs, their per-step results, due steps."""

from __future__ import annotations

import typer

from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import nurture

app = typer.Typer(help="Nurture programs: list, show, run due steps.", no_args_is_help=True)
FormatOption = typer.Option(Format.table, "--format", help="Output format.")

STEP_COLUMNS = [
    "index",
    "id",
    "wait_days",
    "action",
    "waiting",
    "planned",
    "sent",
    "failed",
    "skipped",
    "opens",
    "clicks",
]


@app.command("list")
def list_cmd(fmt: Format = FormatOption, database_url: str | None = DatabaseOption) -> None:
    """The programs of the active model with their enrolment counts."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        rows = nurture.program_stats(conn, model)
    for row in rows:
        row["steps_count"] = len(row["steps"])
    render(
        rows,
        ["key", "name", "stages", "steps_count", "enrolled", "active", "completed", "exited"],
        fmt,
        title="nurture programs",
    )


@app.command("show")
def show(
    key: str = typer.Argument(..., help="Program key."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """One program's steps: who waits at each, sends planned/sent/skipped, opens, clicks."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        rows = nurture.program_stats(conn, model)
    program = next((p for p in rows if p["key"] == key), None)
    if program is None:
        known = ", ".join(p["key"] for p in rows) or "none"
        fail(f"program {key!r} not found in the active model (programs: {known})")
    render(program["steps"], STEP_COLUMNS, fmt, title=f"program {key}: {program['name']}")


@app.command("run-due")
def run_due(
    once: bool = typer.Option(False, "--once", help="One batch, then exit."),
    limit: int = typer.Option(500, "--limit", min=1, max=100_000),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Enrol by stage and run due program steps (plans emails; `leadflow worker` delivers
    them). Without --once, batches run until nothing is due."""
    from leadflow.services.worker import worker_id

    with services_for(database_url) as services:
        totals: dict[str, int] = {}
        now = services.clock()
        with services.engine.begin() as conn:
            model = services.models.active(conn, now)
            synced = nurture.sync_enrolments(conn, model, now)
        totals["enrolled"], totals["exited"] = synced.enrolled, synced.exited
        while True:
            report = nurture.run_due_steps(services, now, worker_id(), limit)
            for name, value in report.as_dict().items():
                if isinstance(value, dict):
                    for reason, n in value.items():
                        totals[f"skipped_{reason}"] = totals.get(f"skipped_{reason}", 0) + n
                else:
                    totals[name] = totals.get(name, 0) + value
            if once or report.claimed < limit:
                break
    render([totals], list(totals), fmt, title="due program steps")
