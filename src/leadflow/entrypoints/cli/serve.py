"""``leadflow init`` and ``leadflow serve``."""

from __future__ import annotations

import typer
from sqlalchemy import func, select

from leadflow.adapters.db import migrate
from leadflow.adapters.db.tables import api_keys
from leadflow.entrypoints.cli.common import DatabaseOption, fail, load_settings, services_for
from leadflow.services import keys as key_service


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("serve")(serve)


def init(database_url: str | None = DatabaseOption) -> None:
    """Create (or migrate) the database; on a new one, create a write key and an admin token."""
    with services_for(database_url, require_schema=False) as services:
        migrate.upgrade(services.engine)
        with services.engine.connect() as conn:
            has_keys = conn.execute(select(func.count()).select_from(api_keys)).scalar_one()
        url = services.engine.url.render_as_string(hide_password=True)
        typer.echo(f"database ready: {url} (revision {migrate.head_revision()})")
        if not has_keys:
            now = services.clock()
            write = key_service.create_key(services.engine, kind="write", name="default", now=now)
            admin = key_service.create_key(services.engine, kind="admin", name="default", now=now)
            typer.echo(f"write key (tracking /v1, HTTP Basic username): {write.token}")
            typer.echo(f"admin token (/api, Authorization: Bearer): {admin.token}")
            typer.echo("These are shown once; `leadflow keys create` makes more.")


def serve(
    host: str | None = typer.Option(None, "--host", help="Bind address (LEADFLOW_HOST)."),
    port: int | None = typer.Option(None, "--port", help="Port (LEADFLOW_PORT).", min=1, max=65535),
    workers: int | None = typer.Option(
        None, "--workers", help="Server processes (LEADFLOW_WORKERS).", min=1, max=64
    ),
    database_url: str | None = DatabaseOption,
) -> None:
    """Serve the tracking API, management API and dashboard."""
    import os

    import uvicorn

    from leadflow.bootstrap import build_services
    from leadflow.entrypoints.asgi import build_server_app

    settings = load_settings(database_url)
    with services_for(settings.database_url):
        pass  # refuses clearly if the database is missing or not migrated
    bind_host, bind_port = host or settings.host, port or settings.port
    processes = workers or settings.workers
    options = {"log_level": "warning", "access_log": False}
    try:
        if processes > 1:
            # Each worker process builds its own settings and services from the environment
            # (leadflow.entrypoints.asgi); pass the database chosen on the command line on.
            os.environ["LEADFLOW_DATABASE_URL"] = settings.database_url
            uvicorn.run(
                "leadflow.entrypoints.asgi:create_app",
                factory=True,
                workers=processes,
                host=bind_host,
                port=bind_port,
                **options,  # type: ignore[arg-type]
            )
            return
        services = build_services(settings)
        try:
            uvicorn.run(build_server_app(services), host=bind_host, port=bind_port, **options)  # type: ignore[arg-type]
        finally:
            services.close()
    except OSError as exc:  # pragma: no cover - port in use
        fail(f"cannot listen on {bind_host}:{bind_port}: {exc}")
