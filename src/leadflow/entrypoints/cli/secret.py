"""``leadflow secret show|rotate``: the key that signs email links, form tokens and cookies."""

from __future__ import annotations

from datetime import timedelta

import typer

from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.services import signing

app = typer.Typer(
    help="The signing key of email links, form tokens and dashboard cookies.",
    no_args_is_help=True,
)


def _describe(keys: signing.SigningKeys) -> list[str]:
    if keys.source == "setting":
        return ["signing key: LEADFLOW_SECRET_KEY (the key stored in the database is unused)"]
    made = keys.created_at.isoformat() if keys.created_at else "unknown"
    lines = [f"signing key: random, stored in the database (since {made})"]
    if keys.previous is not None and keys.previous_valid_until is not None:
        lines.append(
            f"previous key verifies (never signs) until {keys.previous_valid_until.isoformat()}"
        )
    return lines


@app.command("show")
def show(database_url: str | None = DatabaseOption) -> None:
    """Which key signs (never the key itself) and how long a rotated-out key verifies."""
    with services_for(database_url) as services:
        keys = services.signing.keys(refresh=True)
        now = services.clock()
    for line in _describe(keys):
        typer.echo(line)
    if keys.previous is not None and len(keys.verifying(now)) == 1:
        typer.echo("(the previous key's window has ended: its links no longer verify)")


@app.command("rotate")
def rotate(
    grace_hours: float = typer.Option(
        24.0,
        "--grace-hours",
        min=0,
        max=24 * 90,
        help="How long links and cookies signed with the current key keep verifying.",
    ),
    database_url: str | None = DatabaseOption,
) -> None:
    """A new random signing key. New links are signed with it at once; links already sent
    keep working for --grace-hours (24 by default), then stop."""
    with services_for(database_url) as services:
        if services.signing.from_setting:
            fail(
                "LEADFLOW_SECRET_KEY is set and signs everything; rotating the stored key "
                "would change nothing (change the setting, or unset it to use the stored key)"
            )
        keys = signing.rotate(services.engine, services.clock(), timedelta(hours=grace_hours))
    for line in _describe(keys):
        typer.echo(line)
