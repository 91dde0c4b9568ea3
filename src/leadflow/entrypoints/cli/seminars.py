"""``leadflow seminars ...``: seminars and webinars, invitations, registrations,
attendance and the per-seminar funnel."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import segments as segment_service
from leadflow.services import seminars as sem

app = typer.Typer(help="Seminars and webinars: invite, remind, follow up.", no_args_is_help=True)
FormatOption = typer.Option(Format.table, "--format", help="Output format.")
COLUMNS = ["key", "title", "kind", "starts_at", "ends_at", "capacity", "status", "asset_key"]
FUNNEL_COLUMNS = [
    "key",
    "invited",
    "registered",
    "reminded",
    "attended",
    "no_show",
    "followed_up",
    "mql",
    "opportunity",
    "register_rate",
    "attend_rate",
    "mql_rate",
]


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: not an ISO 8601 time (e.g. 2026-05-12T14:00:00+09:00)")
    if parsed.tzinfo is None:
        fail(f"{option}: give a time zone offset (e.g. +09:00)")
    return parsed


def _errors(exc: Exception) -> str:
    if isinstance(exc, sem.NotFound | segment_service.NotFound):
        return str(exc.args[0])
    return str(exc)


@app.command("create")
def create(
    key: str = typer.Argument(...),
    title: str = typer.Option(..., "--title"),
    starts_at: str = typer.Option(..., "--starts-at", help="ISO 8601 with offset."),
    ends_at: str | None = typer.Option(None, "--ends-at"),
    kind: str = typer.Option("webinar", "--kind", help="webinar or seminar."),
    location: str | None = typer.Option(None, "--location", help="Join URL or venue."),
    asset_key: str | None = typer.Option(None, "--asset", help="Content asset for follow-ups."),
    capacity: int | None = typer.Option(None, "--capacity", min=1),
    database_url: str | None = DatabaseOption,
) -> None:
    """Schedule a seminar or webinar."""
    start = _when(starts_at, "--starts-at")
    assert start is not None
    with services_for(database_url) as services:
        try:
            with services.engine.begin() as conn:
                row = sem.create(
                    conn,
                    key=key,
                    title=title,
                    starts_at=start,
                    ends_at=_when(ends_at, "--ends-at"),
                    kind=kind,
                    location=location,
                    asset_key=asset_key,
                    capacity=capacity,
                    now=services.clock(),
                )
        except sem.SeminarError as exc:
            fail(str(exc))
    typer.echo(f"seminar {row['key']} scheduled for {row['starts_at'].isoformat()}")


@app.command("list")
def list_cmd(fmt: Format = FormatOption, database_url: str | None = DatabaseOption) -> None:
    """The seminars, by start time."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        rows = sem.list_seminars(conn)
    render(rows, COLUMNS, fmt, title="seminars")


def _funnel_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **r,
            "register_rate": r["rates"]["register"],
            "attend_rate": r["rates"]["attend"],
            "mql_rate": r["rates"]["mql"],
        }
        for r in rows
    ]


@app.command("show")
def show(
    key: str = typer.Argument(...),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """One seminar and its funnel."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        try:
            row = sem.get(conn, key)
            funnel = sem.funnel(conn, model, key)
        except sem.NotFound as exc:
            fail(_errors(exc))
    if fmt is Format.json:
        typer.echo(json.dumps({**row, "funnel": funnel[0]}, default=str, indent=2))
        return
    render([row], COLUMNS, fmt, title="seminar")
    render(_funnel_rows(funnel), FUNNEL_COLUMNS, fmt, title="funnel")


@app.command("funnel")
def funnel_cmd(
    key: str | None = typer.Argument(None, help="One seminar; all when omitted."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """invite → register → attend → follow-up → MQL → opportunity, per seminar."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        try:
            rows = sem.funnel(conn, model, key)
        except sem.NotFound as exc:
            fail(_errors(exc))
    if fmt is Format.json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    render(_funnel_rows(rows), FUNNEL_COLUMNS, fmt, title="seminar funnel")


@app.command("invite")
def invite(
    key: str = typer.Argument(...),
    lead: list[int] = typer.Option([], "--lead", help="Lead id (repeatable)."),
    segment: str | None = typer.Option(None, "--segment", help="Invite a segment's members."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Plan invitations (only to leads the send rules allow; never twice)."""
    if bool(lead) == bool(segment):
        fail("give --lead ... or --segment (one of them)")
    with services_for(database_url) as services:
        now = services.clock()
        try:
            with services.engine.begin() as conn:
                model = services.models.active(conn, now)
                result = sem.invite(conn, key, segment or lead, model, now)
        except (sem.NotFound, segment_service.NotFound, sem.SeminarError) as exc:
            fail(_errors(exc))
    blocked = ", ".join(f"{k}: {v}" for k, v in sorted(result["blocked"].items())) or "none"
    typer.echo(
        f"invited {result['invited']}, already invited {result['already']}, blocked {blocked}"
    )


@app.command("register")
def register(
    key: str = typer.Argument(...),
    email: str = typer.Argument(..., help="The lead's email address."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Register a lead (by email)."""
    with services_for(database_url) as services:
        now = services.clock()
        try:
            with services.engine.begin() as conn:
                found, _ = sem.lead_ids_for_emails(conn, [email])
                if not found:
                    fail(f"email: no lead with address {email!r}")
                result = sem.register(conn, key, found[0], now, after=services.after_ingest)
        except (sem.NotFound, sem.SeminarError) as exc:
            fail(_errors(exc))
    typer.echo("registered" if result["new"] else "already registered")


@app.command("attendance")
def attendance(
    key: str = typer.Argument(...),
    csv_file: Path = typer.Option(..., "--csv", help="Attendee list: a CSV with an email column."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Mark who attended; registered people not in the file become no-shows."""
    try:
        raw = csv_file.read_bytes()
    except OSError as exc:
        fail(f"--csv: cannot read {csv_file}: {exc.strerror or exc}")
    with services_for(database_url) as services:
        now = services.clock()
        try:
            emails = sem.emails_from_csv(raw)
            with services.engine.begin() as conn:
                ids, unknown = sem.lead_ids_for_emails(conn, emails)
                result = sem.mark_attendance(conn, key, ids, now, after=services.after_ingest)
        except (sem.NotFound, sem.SeminarError) as exc:
            fail(_errors(exc))
    typer.echo(f"attended {result['attended']}, no-show {result['no_show']}")
    if unknown:
        typer.echo(f"not found ({len(unknown)}): {', '.join(unknown[:10])}")
