"""``leadflow db upgrade|current``."""

from __future__ import annotations

import typer

from leadflow.adapters.db import migrate
from leadflow.entrypoints.cli.common import DatabaseOption, services_for
from leadflow.services import signing

app = typer.Typer(help="Database schema: migrate forward, show the revision.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(database_url: str | None = DatabaseOption) -> None:
    """Create the schema or migrate an existing database forward (rows are kept)."""
    with services_for(database_url, require_schema=False) as services:
        before = migrate.current_revision(services.engine)
        migrate.upgrade(services.engine)
        with services.engine.begin() as conn:
            signing.read_keys(conn)  # a database always has its own random signing key
        after = migrate.current_revision(services.engine)
    url = services.engine.url.render_as_string(hide_password=True)
    if before == after:
        typer.echo(f"{url}: already at revision {after}")
    else:
        typer.echo(f"{url}: migrated {before or 'empty'} -> {after}")


@app.command("current")
def current(database_url: str | None = DatabaseOption) -> None:
    """Print the schema revision of the database and the one this leadflow needs."""
    with services_for(database_url, require_schema=False) as services:
        typer.echo(
            f"current: {migrate.current_revision(services.engine) or 'none'}; "
            f"head: {migrate.head_revision()}"
        )
