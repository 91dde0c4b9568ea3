"""``leadflow keys create|list|revoke``."""

from __future__ import annotations

import typer

from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import keys as key_service

app = typer.Typer(
    help="API keys: write keys for /v1 tracking, admin tokens for /api.", no_args_is_help=True
)

FormatOption = typer.Option(Format.table, "--format", help="Output format.")


@app.command("create")
def create(
    kind: str = typer.Option("write", "--kind", help="write (tracking /v1) or admin (/api)."),
    name: str = typer.Option("default", "--name", help="A label to recognise the key by."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    if kind not in key_service.KINDS:
        fail(f"--kind: must be one of {', '.join(key_service.KINDS)}, not {kind!r}")
    with services_for(database_url) as services:
        try:
            created = key_service.create_key(
                services.engine, kind=kind, name=name, now=services.clock()
            )
        except ValueError as exc:
            fail(f"--{exc}")
    typer.echo(created.token)
    typer.echo(f"({created.kind} key #{created.id} '{created.name}'; shown once)", err=True)


@app.command("list")
def list_(
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """List keys (prefixes only, never the secret)."""
    with services_for(database_url) as services:
        rows = key_service.list_keys(services.engine)
    render(rows, ["id", "kind", "name", "prefix", "created_at", "revoked_at"], fmt, title="keys")


@app.command("revoke")
def revoke(
    key_id: int = typer.Argument(..., help="Key id from `leadflow keys list`."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Revoke a key; requests using it are refused within seconds."""
    with services_for(database_url) as services:
        if not key_service.revoke_key(services.engine, key_id, services.clock()):
            fail(f"no live key with id {key_id}")
    typer.echo(f"revoked key #{key_id}")
