"""``leadflow email ...``: the send log, bounces reported by the mail provider, a test."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from email_validator import EmailNotValidError, validate_email

from leadflow.adapters.email import DeliveryError
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import mailing, privacy

app = typer.Typer(help="Email: sends, bounces, test messages.", no_args_is_help=True)
FormatOption = typer.Option(Format.table, "--format", help="Output format.")
LIST_COLUMNS = [
    "id",
    "lead_id",
    "to_email",
    "program_key",
    "step_id",
    "subject",
    "status",
    "skip_reason",
    "attempts",
    "planned_at",
    "sent_at",
    "opened_at",
    "clicked_at",
]


def _bad(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit code 1 (like every command), nothing stored."""
    fail(message)


@app.command("sends")
def sends(
    lead_id: int | None = typer.Option(None, "--lead-id", min=1, help="Only this lead."),
    status: str | None = typer.Option(
        None, "--status", help="planned, sending, sent, failed or skipped."
    ),
    program: str | None = typer.Option(None, "--program", help="Only this program key."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Email sends, newest first."""
    if status is not None and status not in mailing.SEND_STATUSES:
        _bad(f"--status must be one of {', '.join(mailing.SEND_STATUSES)}, not {status!r}")
    with services_for(database_url) as services, services.engine.connect() as conn:
        rows = mailing.list_sends(
            conn, lead_id=lead_id, status=status, program=program, limit=limit
        )
    render(rows, LIST_COLUMNS, fmt, title="email sends")


@app.command("show")
def show(
    send_id: int = typer.Argument(..., min=1),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """One send, every field."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        found = mailing.get_send(conn, send_id)
    if found is None:
        _bad(f"no email send {send_id}")
    if fmt is Format.table:
        rows = [{"field": k, "value": v} for k, v in found.items()]
        render(rows, ["field", "value"], fmt, title=f"email send {send_id}")
    else:
        render([found], mailing.SEND_COLUMNS, fmt)


@app.command("bounce")
def bounce(
    message_id: str | None = typer.Option(None, "--message-id", help="Message-ID of the send."),
    email: str | None = typer.Option(None, "--email", help="Address that bounced."),
    bounce_type: str = typer.Option(..., "--type", help="hard or soft."),
    reason: str = typer.Option("", "--reason", help="What the mail provider said."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Record a bounce reported by the mail provider (hard: no more email to the lead)."""
    if bounce_type not in ("hard", "soft"):
        _bad(f"--type must be hard or soft, not {bounce_type!r}")
    if (message_id is None) == (email is None):
        _bad("give exactly one of --message-id and --email")
    if len(reason) > 500:
        _bad("--reason is longer than 500 characters")
    with services_for(database_url) as services:
        try:
            result = mailing.record_bounce(
                services,
                bounce_type=bounce_type,
                now=services.clock(),
                message_id=message_id,
                email=email,
                reason=reason,
            )
        except (mailing.NotFound, ValueError) as exc:
            _bad(str(exc).strip("'\""))
    typer.echo(
        f"{result['type']} bounce recorded for lead {result['lead_id']}"
        + (f" (send {result['send_id']})" if result["send_id"] else "")
        + ("" if result["recorded"] else " (already known)")
    )


@app.command("test")
def test(
    to: str = typer.Option(..., "--to", help="Recipient address."),
    template: str = typer.Option("nurture", "--template", help="Email template name."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Send a test message with the configured mailer (SMTP, or .eml files)."""
    try:
        address = validate_email(to, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        _bad(f"--to: {exc}")
    if template not in mailing.email_templates():
        _bad(f"--template: unknown template {template!r} ({', '.join(mailing.email_templates())})")
    with services_for(database_url) as services:
        try:
            message_id = mailing.send_test(
                services.settings, address, template, services.clock(), engine=services.engine
            )
        except privacy.AddressSuppressed as exc:
            _bad(f"--{exc}")
        except DeliveryError as exc:
            print(f"error: not delivered: {exc}", file=sys.stderr)
            raise typer.Exit(code=1) from None
    typer.echo(f"sent {template} test to {address} ({message_id})")
