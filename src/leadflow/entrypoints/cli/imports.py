"""``leadflow import leads FILE.csv [--source S] [--map COLUMN=FIELD ...] [--rejects PATH]
[--without-email]``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from leadflow.core.importing import FIELDS, MappingError, check_source, parse_map_options
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services.importer import ImportFileError, import_leads

app = typer.Typer(help="Import leads from CSV files.", no_args_is_help=True)


@app.command("leads")
def leads(
    file: Path = typer.Argument(..., help="CSV: CRM export, trade-show or business-card list."),
    source: str | None = typer.Option(
        None, "--source", help="Lead source for every row (e.g. tradeshow); else the file's."
    ),
    maps: list[str] = typer.Option(
        [],
        "--map",
        help=f"COLUMN=FIELD, repeatable. Fields: {', '.join(FIELDS)}.",
    ),
    rejects: Path | None = typer.Option(
        None, "--rejects", help="Where bad rows go (default FILE.rejects.csv)."
    ),
    encoding: str | None = typer.Option(
        None, "--encoding", help="Force an encoding (default: detect utf-8 / cp949)."
    ),
    without_email: bool = typer.Option(
        False,
        "--without-email",
        help="Import rows without an e-mail by their record id (Record ID, Lead ID, "
        "Person - ID...), kept as the lead's identity so a re-import updates it.",
    ),
    fmt: Format = typer.Option(Format.table, "--format", help="Summary format."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Upsert leads by e-mail; bad rows go to a rejects file with the reason per row."""
    if not file.exists():
        fail(f"FILE: {file} does not exist")
    if not file.is_file():
        fail(f"FILE: {file} is not a file")
    try:
        mapping = parse_map_options(maps)
        checked_source = check_source(source) if source is not None else None
    except (MappingError, ValueError) as exc:
        fail(str(exc))
    console = Console(stderr=True)
    with services_for(database_url) as services:
        bar = Progress(
            TextColumn("importing {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not progress or not console.is_terminal,
            transient=True,
        )
        with bar:
            task = bar.add_task(file.name, total=file.stat().st_size)
            try:
                summary = import_leads(
                    services.engine,
                    file,
                    now=services.clock(),
                    source=checked_source,
                    mapping=mapping,
                    rejects_path=rejects,
                    encoding=encoding,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    after=services.after_ingest,
                    allow_without_email=without_email,
                )
            except ImportFileError as exc:
                fail(str(exc))
            except OSError as exc:
                fail(f"{exc.filename or file}: {exc.strerror or exc}")
    row = {
        "file": summary.file,
        "encoding": summary.encoding,
        "rows_read": summary.rows_read,
        "created": summary.created,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "rejected": summary.rejected,
        "accounts_created": summary.accounts_created,
        "without_email": summary.without_email,
        "company_on_lead": summary.company_on_lead,
        "rejects_file": summary.rejects_path or "",
    }
    if fmt is Format.json:
        render([{**row, "columns": summary.columns}], [*row, "columns"], fmt)
    else:
        render([row], list(row), fmt, title="import")
    if summary.rejected:
        typer.echo(
            f"{summary.rejected} row(s) rejected; reasons in {summary.rejects_path}", err=True
        )
