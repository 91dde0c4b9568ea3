"""``leadflow users create|list``: dashboard users and their roles."""

from __future__ import annotations

import typer

from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import users as user_service

app = typer.Typer(help="Dashboard users: admin, marketer, sales, executive.", no_args_is_help=True)


@app.command("create")
def create(
    email: str = typer.Argument(..., help="Sign-in email (stored lower-cased)."),
    role: str = typer.Option(..., "--role", help="admin, marketer, sales or executive."),
    name: str | None = typer.Option(None, "--name", help="Display name (default: from email)."),
    password: str | None = typer.Option(
        None, "--password", help="Initial password (prompted for when omitted)."
    ),
    locale: str = typer.Option("en", "--locale", help="Dashboard language: en or ko."),
    sales_rep_key: str | None = typer.Option(
        None,
        "--sales-rep-key",
        help="For sales users: the owner name used on accounts (default: the name).",
    ),
    timezone: str | None = typer.Option(
        None, "--timezone", help="IANA time zone for dates, e.g. Asia/Seoul (default UTC)."
    ),
    database_url: str | None = DatabaseOption,
) -> None:
    """Create a user who can sign in to the dashboard."""
    if role not in user_service.ROLES:
        fail(f"--role: must be one of {', '.join(user_service.ROLES)}, not {role!r}")
    if locale not in user_service.LOCALES:
        fail(f"--locale: must be one of {', '.join(user_service.LOCALES)}, not {locale!r}")
    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with services_for(database_url) as services:
        try:
            user = user_service.create_user(
                services.engine,
                email=email,
                password=password,
                role=role,
                name=name,
                locale=locale,
                sales_rep_key=sales_rep_key,
                timezone=timezone,
                now=services.clock(),
            )
        except user_service.UserError as exc:
            fail(f"--{exc}" if not str(exc).startswith("email") else str(exc))
    typer.echo(f"created {user.role} user #{user.id} {user.email}")


@app.command("list")
def list_(
    fmt: Format = typer.Option(Format.table, "--format", help="Output format."),
    database_url: str | None = DatabaseOption,
) -> None:
    """List users (never their password hashes)."""
    with services_for(database_url) as services:
        rows = [
            {
                "id": u.id,
                "email": u.email,
                "name": u.name,
                "role": u.role,
                "locale": u.locale,
                "sales_rep_key": u.sales_rep_key,
                "timezone": u.timezone or "UTC",
                "active": u.active,
                "last_login_at": u.last_login_at,
            }
            for u in user_service.list_users(services.engine)
        ]
    render(
        rows,
        [
            "id",
            "email",
            "name",
            "role",
            "locale",
            "timezone",
            "sales_rep_key",
            "active",
            "last_login_at",
        ],
        fmt,
        title="users",
    )
