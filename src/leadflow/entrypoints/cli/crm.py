"""``leadflow crm export|apply``: CSV exports in HubSpot/Salesforce column names and CRM
updates from a JSON file (the same format as ``POST /api/crm/updates``)."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import typer

from leadflow.adapters.csv_export import to_csv_string
from leadflow.entrypoints.cli.common import DatabaseOption, check_file_data, fail, services_for
from leadflow.services import crm
from leadflow.services.lifecycle import ActionRefused

app = typer.Typer(help="CRM sync: export to HubSpot/Salesforce, apply CRM updates.")
MAX_FILE_BYTES = 50 * 1024 * 1024


class Kind(enum.StrEnum):
    leads = "leads"
    opportunities = "opportunities"


class Flavour(enum.StrEnum):
    hubspot = "hubspot"
    salesforce = "salesforce"


@app.command("export")
def export(
    kind: Kind = typer.Option(Kind.leads, "--kind", help="What to export."),
    flavour: Flavour = typer.Option(Flavour.hubspot, "--flavour", help="Column names of."),
    out: Path | None = typer.Option(None, "--out", help="Write to FILE (default: stdout)."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Leads or opportunities as CSV with the CRM's import column names (cells a
    spreadsheet would run as formulas are neutralised)."""
    if out is not None and not out.parent.exists():
        fail(f"--out: directory {out.parent} does not exist")
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        columns, rows = crm.export_rows(conn, kind.value, flavour.value, model)
    text = to_csv_string(rows, columns)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {len(rows)} {kind.value} to {out}", err=True)


def _updates(file: Path) -> list[Any]:
    if not file.is_file():
        fail(f"{file}: no such file")
    if file.stat().st_size > MAX_FILE_BYTES:
        fail(f"{file}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        fail(f"{file}: not UTF-8 text")
    except json.JSONDecodeError as exc:
        fail(f"{file}: not JSON ({exc.msg} at line {exc.lineno})")
    if isinstance(data, dict) and "updates" in data:
        data = data["updates"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        fail(f"{file}: expected an update, a list of updates or {{'updates': [...]}}")
    return check_file_data(data, str(file))


@app.command("apply")
def apply(
    file: Path = typer.Argument(..., help="A JSON file: one update, a list, or {updates: [...]}."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Apply CRM updates, each in its own transaction; refused ones are listed with the
    reason and change nothing. Each changes only the deal its external_id names; a past
    closed_at (with the deal's created_at) is recorded as history at that date. Exit status
    1 when any was refused."""
    updates = _updates(file)
    applied = refused = duplicates = 0
    with services_for(database_url) as services:
        for i, update in enumerate(updates):
            try:
                with services.engine.begin() as conn:
                    now = services.clock()
                    model = services.models.active(conn, now)
                    result = crm.apply_update(conn, model, update, now)
            except (ActionRefused, ValueError, LookupError) as exc:
                refused += 1
                typer.echo(f"update {i}: refused: {str(exc).strip(chr(39))}", err=True)
                continue
            if result["duplicate"]:
                duplicates += 1
            else:
                applied += 1
    typer.echo(f"{applied} applied, {duplicates} already applied, {refused} refused")
    if refused:
        raise typer.Exit(1)
