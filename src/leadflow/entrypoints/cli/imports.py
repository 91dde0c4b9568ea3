"""``leadflow import leads FILE.csv [--source S] [--map COLUMN=FIELD ...] [--rejects PATH]
[--without-email]``; the CRM history backfill ``leadflow import accounts|opportunities|activities
FILE.csv [--map COLUMN=FIELD ...] [--stage NAME=open|won|lost ...] [--currency CODE]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

from leadflow.core import backfill as backfill_core
from leadflow.core.importing import FIELDS, MappingError, check_source, parse_map_options
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services.backfill import import_backfill
from leadflow.services.importer import ImportFileError, import_leads

app = typer.Typer(
    help="Import leads, and CRM history (accounts, opportunities, activities), from CSV files.",
    no_args_is_help=True,
)


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


# --------------------------------------------------------------------------- CRM backfill

_KIND_HELP = {
    "accounts": "CSV: accounts / companies / organizations export.",
    "opportunities": "CSV: opportunities / deals export.",
    "activities": "CSV: activities / engagements / tasks export.",
}


def _backfill(
    kind: backfill_core.Kind,
    file: Path,
    maps: list[str],
    stages: list[str],
    currency: str | None,
    rejects: Path | None,
    encoding: str | None,
    fmt: Format,
    progress: bool,
    database_url: str | None,
) -> None:
    if not file.exists():
        fail(f"FILE: {file} does not exist")
    if not file.is_file():
        fail(f"FILE: {file} is not a file")
    try:
        mapping = backfill_core.parse_map_options(kind, maps)
        stage_map = backfill_core.parse_stage_options(stages)
        checked_currency = backfill_core.check_currency(currency) if currency else None
    except (MappingError, ValueError) as exc:
        fail(str(exc))
    console = Console(stderr=True)
    with services_for(database_url) as services:
        now = services.clock()
        bar = Progress(
            TextColumn(f"importing {kind} " + "{task.description}"),
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
                summary = import_backfill(
                    services.engine,
                    kind,
                    file,
                    now=now,
                    model_for=lambda conn: services.models.active(conn, now),
                    mapping=mapping,
                    stages=stage_map,
                    currency=checked_currency,
                    rejects_path=rejects,
                    encoding=encoding,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    after=services.after_ingest,
                )
            except ImportFileError as exc:
                fail(str(exc))
            except OSError as exc:
                fail(f"{exc.filename or file}: {exc.strerror or exc}")
    row = {
        "kind": summary.kind,
        "file": summary.file,
        "encoding": summary.encoding,
        "rows_read": summary.rows_read,
        "created": summary.created,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "rejected": summary.rejected,
        "accounts_created": summary.accounts_created,
        "leads_created": summary.leads_created,
        "contacts_added": summary.contacts_added,
        "stage_actions": summary.stage_actions,
        "stage_refused": summary.stage_refused,
        "closed_alone": summary.closed_alone,
        "seconds": summary.seconds,
        "rows_per_second": summary.rows_per_second,
        "rejects_file": summary.rejects_path or "",
    }
    if fmt is Format.json:
        render([{**row, "columns": summary.columns}], [*row, "columns"], fmt)
    else:
        render([row], list(row), fmt, title=f"import {kind}")
    if summary.rejected:
        typer.echo(
            f"{summary.rejected} row(s) rejected; reasons in {summary.rejects_path}", err=True
        )


def _maps_option(kind: backfill_core.Kind) -> Any:
    fields = ", ".join((*backfill_core.FIELDS_BY_KIND[kind], "ignore"))
    return typer.Option([], "--map", help=f"COLUMN=FIELD, repeatable. Fields: {fields}.")


_REJECTS = typer.Option(None, "--rejects", help="Where bad rows go (default FILE.rejects.csv).")
_ENCODING = typer.Option(None, "--encoding", help="Force an encoding (default: detect).")
_FORMAT = typer.Option(Format.table, "--format", help="Summary format.")
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")


@app.command("accounts")
def import_accounts(
    file: Path = typer.Argument(..., help=_KIND_HELP["accounts"]),
    maps: list[str] = _maps_option("accounts"),
    rejects: Path | None = _REJECTS,
    encoding: str | None = _ENCODING,
    fmt: Format = _FORMAT,
    progress: bool = _PROGRESS,
    database_url: str | None = DatabaseOption,
) -> None:
    """Upsert accounts by their CRM id (else domain, else name); other columns are kept as
    typed traits."""
    _backfill("accounts", file, maps, [], None, rejects, encoding, fmt, progress, database_url)


@app.command("opportunities")
def import_opportunities(
    file: Path = typer.Argument(..., help=_KIND_HELP["opportunities"]),
    maps: list[str] = _maps_option("opportunities"),
    stages: list[str] = typer.Option(
        [],
        "--stage",
        help="STAGE NAME=open|won|lost for a company-specific stage, repeatable "
        "(e.g. --stage 'Signed=won').",
    ),
    currency: str | None = typer.Option(
        None,
        "--currency",
        help="ISO code for rows without a currency (there is no default: such rows are "
        "rejected without it).",
    ),
    rejects: Path | None = _REJECTS,
    encoding: str | None = _ENCODING,
    fmt: Format = _FORMAT,
    progress: bool = _PROGRESS,
    database_url: str | None = DatabaseOption,
) -> None:
    """Upsert deals by their CRM id, with accounts, contacts and roles; each person's stage
    log gets the deal's open, win and loss at the export's own dates."""
    _backfill(
        "opportunities",
        file,
        maps,
        stages,
        currency,
        rejects,
        encoding,
        fmt,
        progress,
        database_url,
    )


@app.command("activities")
def import_activities(
    file: Path = typer.Argument(..., help=_KIND_HELP["activities"]),
    maps: list[str] = _maps_option("activities"),
    rejects: Path | None = _REJECTS,
    encoding: str | None = _ENCODING,
    fmt: Format = _FORMAT,
    progress: bool = _PROGRESS,
    database_url: str | None = DatabaseOption,
) -> None:
    """Store activities (e-mails, meetings, webinars, campaign touches) as tracked events
    at their own dates, so reports and attribution see them when they happened."""
    _backfill("activities", file, maps, [], None, rejects, encoding, fmt, progress, database_url)
