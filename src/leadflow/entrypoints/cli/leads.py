"""``leadflow leads list|show|export|erase``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from leadflow.core.tracking import is_valid_email, normalise_email
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import leads as lead_service
from leadflow.services import privacy

app = typer.Typer(help="Leads: list, show, export, erase.", no_args_is_help=True)

FormatOption = typer.Option(Format.table, "--format", help="Output format: table, json or csv.")


def _email(value: str) -> str:
    email = normalise_email(value)
    if not is_valid_email(email):
        fail(f"EMAIL: {value[:80]!r} is not a valid e-mail address")
    return email


@app.command("list")
def list_(
    search: str | None = typer.Option(None, "--search", help="Part of e-mail, name or company."),
    source: str | None = typer.Option(None, "--source", help="Only leads from this source."),
    account: str | None = typer.Option(None, "--account", help="Only this account's domain."),
    limit: int = typer.Option(50, "--limit", help=f"At most N leads (1-{lead_service.MAX_LIMIT})."),
    cursor: int | None = typer.Option(None, "--after", help="Continue after this lead id."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """List leads, newest first."""
    query = lead_service.LeadFilter(
        search=search, source=source, account_domain=account, limit=limit, cursor=cursor
    )
    try:
        query.checked()
    except lead_service.QueryError as exc:
        fail(f"--{exc.field}: {exc.reason}")
    with services_for(database_url) as services:
        rows, next_cursor = lead_service.list_leads(services.engine, query)
    render(rows, lead_service.LIST_COLUMNS, fmt, title="leads")
    if next_cursor is not None and fmt is Format.table:
        typer.echo(f"more: --after {next_cursor}", err=True)


@app.command("show")
def show(
    email: str = typer.Argument(..., help="The lead's e-mail address."),
    events: int = typer.Option(50, "--events", help="How many recent events to show."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Show one lead, its account and its event timeline."""
    address = _email(email)
    if not 1 <= events <= lead_service.MAX_LIMIT:
        fail(f"--events: must be between 1 and {lead_service.MAX_LIMIT}")
    with services_for(database_url) as services:
        lead_id = lead_service.find_lead_id(services.engine, address)
        if lead_id is None:
            fail(f"no lead with e-mail {address}")
        lead = lead_service.get_lead(services.engine, lead_id)
        timeline, _ = lead_service.lead_events(services.engine, lead_id, limit=events)
    assert lead is not None
    timeline.reverse()  # oldest first reads as a story
    account = lead.pop("account")
    if fmt is Format.json:
        typer.echo(
            json.dumps(
                {"lead": lead, "account": account, "events": timeline},
                default=str,
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    fields = [{"field": k, "value": v} for k, v in lead.items() if k != "erased"]
    if account is not None:
        fields += [
            {"field": f"account.{k}", "value": account[k]}
            for k in ("name", "domain", "industry", "employee_count", "country")
        ]
    render(fields, ["field", "value"], fmt, title=f"lead {lead_id}")
    if fmt is Format.csv:
        return
    render(timeline, lead_service.EVENT_COLUMNS, fmt, title="timeline (oldest first)")


@app.command("export")
def export(
    email: str = typer.Argument(..., help="The person's e-mail address."),
    out: Path | None = typer.Option(None, "--out", help="Write the JSON here (default stdout)."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Write everything stored about a person as JSON (data-subject access request)."""
    address = _email(email)
    with services_for(database_url) as services:
        try:
            data = privacy.export_person(services.engine, address, now=services.clock())
        except privacy.PersonNotFound as exc:
            fail(str(exc))
    text = json.dumps(data, default=str, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        # Personal data: readable by the owner only.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror}")
    rows = sum(len(v) for v in data.values() if isinstance(v, list))
    typer.echo(f"wrote {rows} rows about {address} to {out}", err=True)


@app.command("erase")
def erase(
    email: str = typer.Argument(..., help="The person's e-mail address."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Remove a person's data and identities, anonymise their events, suppress the address."""
    address = _email(email)
    with services_for(database_url) as services:
        if lead_service.find_lead_id(services.engine, address) is None:
            # Let the service phrase it (it knows whether the address was already erased).
            try:
                privacy.export_person(services.engine, address, now=services.clock())
            except privacy.PersonNotFound as exc:
                fail(str(exc))
        if not yes:
            if not sys.stdin.isatty():
                fail("erase is permanent: pass --yes to confirm (no terminal to ask)")
            typer.confirm(f"Erase {address} permanently?", abort=True)
        try:
            result = privacy.erase_person(services.engine, address, now=services.clock())
        except privacy.PersonNotFound as exc:
            fail(str(exc))
    typer.echo(
        f"erased lead {result.lead_id}: {result.events_anonymised} events anonymised, "
        f"{result.identities_removed} identities removed, {result.rows_scrubbed} other rows "
        "scrubbed; address suppressed"
    )
