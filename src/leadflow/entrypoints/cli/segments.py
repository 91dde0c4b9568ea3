"""``leadflow segments ...``: saved segments, their members and audience exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml

from leadflow.core.segments import CriteriaError
from leadflow.entrypoints.cli.common import DatabaseOption, check_file_data, fail, services_for
from leadflow.entrypoints.cli.output import Format, render, to_csv_string
from leadflow.services import segments as seg

app = typer.Typer(help="Segments: saved lists kept current, audience sync.", no_args_is_help=True)
FormatOption = typer.Option(Format.table, "--format", help="Output format.")
COLUMNS = ["key", "name", "sync", "member_count", "refreshed_at", "updated_at"]


def _read_criteria(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"--criteria: cannot read {path}: {exc.strerror or exc}")
    try:
        if path.suffix.lower() == ".json":
            return check_file_data(json.loads(text), f"--criteria: {path}")
        return check_file_data(yaml.safe_load(text), f"--criteria: {path}")
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        fail(f"--criteria: {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}")


@app.command("list")
def list_cmd(fmt: Format = FormatOption, database_url: str | None = DatabaseOption) -> None:
    """The segments."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        rows = seg.list_segments(conn)
    render(rows, COLUMNS, fmt, title="segments")


@app.command("create")
def create(
    key: str = typer.Argument(..., help="Segment key (lower-case letters, digits, - _)."),
    name: str = typer.Option(..., "--name", help="Display name."),
    criteria: Path = typer.Option(..., "--criteria", help="Criteria as YAML or JSON."),
    sync: bool = typer.Option(False, "--sync/--no-sync", help="Send joins/leaves to webhooks."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Create a segment from a criteria file and compute its members."""
    data = _read_criteria(criteria)
    with services_for(database_url) as services:
        now = services.clock()
        try:
            with services.engine.begin() as conn:
                seg.create(conn, key, name, data, now, sync=sync)
                joined, _ = seg.refresh(conn, key, now)
        except (CriteriaError, seg.Conflict) as exc:
            fail(str(exc))
    typer.echo(f"segment {key}: {joined} members")


@app.command("show")
def show(
    key: str = typer.Argument(...),
    limit: int = typer.Option(20, "--limit", min=1, max=10_000, help="Members to list."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """The segment, its criteria and its first members."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        try:
            row = seg.get(conn, key)
            members, total = seg.members(conn, key, limit=limit)
        except seg.NotFound as exc:
            fail(str(exc.args[0]))
    if fmt is Format.json:
        typer.echo(json.dumps({**row, "members": members, "total": total}, default=str, indent=2))
        return
    typer.echo(f"{row['key']}: {row['name']} (sync: {'on' if row['sync'] else 'off'})")
    typer.echo("criteria: " + json.dumps(row["criteria"], ensure_ascii=False))
    typer.echo(f"members: {total} (refreshed {row['refreshed_at'] or 'never'})")
    render(members, ["lead_id", "email", "first_name", "last_name", "company", "stage"], fmt)


@app.command("refresh")
def refresh(
    key: str | None = typer.Argument(None, help="One segment; all when omitted."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Recompute members now (the worker does it every pass)."""
    with services_for(database_url) as services:
        now = services.clock()
        if key is None:
            results = seg.refresh_all(services.engine, now)
        else:
            try:
                with services.engine.begin() as conn:
                    results = {key: seg.refresh(conn, key, now)}
            except (CriteriaError, seg.NotFound) as exc:
                fail(str(exc.args[0]) if isinstance(exc, seg.NotFound) else str(exc))
    for k, (joined, left) in results.items():
        typer.echo(f"{k}: +{joined} -{left}")


@app.command("export")
def export(
    key: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", help="CSV file to write."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Write the audience CSV (email, SHA-256 of email, names, company, stage)."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        try:
            rows = seg.audience_rows(conn, key)
        except seg.NotFound as exc:
            fail(str(exc.args[0]))
    try:
        out.write_text(to_csv_string(rows, seg.AUDIENCE_COLUMNS), encoding="utf-8")
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"{len(rows)} rows written to {out}")
