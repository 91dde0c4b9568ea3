"""``leadflow webhooks ...``: subscriptions, secret rotation, the delivery log, the worker."""

from __future__ import annotations

import time

import typer

from leadflow.adapters.webhooks import HttpSender
from leadflow.core.webhooks import InvalidTarget
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import webhooks

app = typer.Typer(help="Outbound webhooks: endpoints, deliveries, replays.", no_args_is_help=True)
FormatOption = typer.Option(Format.table, "--format", help="Output format.")


@app.command("add")
def add(
    url: str = typer.Argument(..., help="Target URL (http or https)."),
    events: str = typer.Option("*", "--events", help="Comma-separated event types, or *."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Subscribe URL to events; prints the signing secret (shown only now)."""
    types = [e.strip() for e in events.split(",") if e.strip()]
    with services_for(database_url) as services:
        try:
            with services.engine.begin() as conn:
                ep = webhooks.create_endpoint(
                    conn,
                    url,
                    types,
                    services.clock(),
                    allow_private=services.settings.webhooks_allow_private_targets,
                )
        except (InvalidTarget, ValueError) as exc:
            fail(str(exc))
    typer.echo(f"endpoint {ep['id']} -> {ep['url']} ({', '.join(ep['event_types'])})")
    typer.echo(f"secret: {ep['secret']}")


@app.command("list")
def list_cmd(fmt: Format = FormatOption, database_url: str | None = DatabaseOption) -> None:
    """The endpoints."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        rows = webhooks.list_endpoints(conn)
    render(
        rows,
        ["id", "url", "event_types", "active", "secret_hint", "rotated_at", "created_at"],
        fmt,
        title="webhook endpoints",
    )


@app.command("rotate")
def rotate(
    endpoint_id: int = typer.Argument(..., min=1), database_url: str | None = DatabaseOption
) -> None:
    """A new secret; the previous one stays valid for 24 hours."""
    with services_for(database_url) as services:
        try:
            with services.engine.begin() as conn:
                ep = webhooks.rotate_secret(conn, endpoint_id, services.clock())
        except webhooks.NotFound as exc:
            fail(str(exc))
    typer.echo(f"secret: {ep['secret']}")
    typer.echo(f"previous secret valid until {ep['previous_valid_until'].isoformat()}")


@app.command("deliveries")
def deliveries(
    status: str | None = typer.Option(None, "--status", help="pending, delivered or dead."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """The delivery log (newest first); --status dead is the dead-letter list."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        try:
            rows = webhooks.list_deliveries(conn, status=status, limit=limit)
        except ValueError as exc:
            fail(f"--{exc}")
    render(
        rows,
        [
            "id",
            "endpoint_id",
            "event_type",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
        ],
        fmt,
        title="webhook deliveries",
    )


@app.command("replay")
def replay(
    delivery_id: int = typer.Argument(..., min=1), database_url: str | None = DatabaseOption
) -> None:
    """Queue a delivery again (e.g. from the dead-letter list), due now."""
    with services_for(database_url) as services:
        try:
            with services.engine.begin() as conn:
                webhooks.replay(conn, delivery_id, services.clock())
        except webhooks.NotFound as exc:
            fail(str(exc))
    typer.echo(f"delivery {delivery_id} queued again")


@app.command("run")
def run(
    once: bool = typer.Option(False, "--once", help="One pass, then exit."),
    interval: float = typer.Option(5.0, "--interval", min=0.1, help="Seconds between passes."),
    database_url: str | None = DatabaseOption,
) -> None:
    """The webhook worker: hand new outbox rows to deliveries and send what is due."""
    with services_for(database_url) as services:
        allow = services.settings.webhooks_allow_private_targets
        with HttpSender(allow_private=allow) as sender:
            while True:
                with services.engine.begin() as conn:
                    now = services.clock()
                    model = services.models.active(conn, now)
                    queued = webhooks.enqueue_new(conn, now, model)
                report = webhooks.deliver_due(services.engine, services.clock(), sender)
                if once or queued or report.attempted:
                    typer.echo(
                        f"queued {queued}, attempted {report.attempted}, delivered "
                        f"{report.delivered}, will retry {report.failed}, dead {report.dead}"
                    )
                if once:
                    return
                time.sleep(interval)
