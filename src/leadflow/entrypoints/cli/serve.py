"""``leadflow init`` and ``leadflow serve``."""

from __future__ import annotations

import typer

from leadflow.adapters.db import migrate
from leadflow.bootstrap import Services
from leadflow.entrypoints.cli.common import DatabaseOption, fail, load_settings, services_for
from leadflow.services import keys as key_service
from leadflow.services import signing
from leadflow.services.worker import WorkerThread


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("serve")(serve)
    app.command("worker")(worker)


def init(database_url: str | None = DatabaseOption) -> None:
    """Create (or migrate) the database; on a new one, create a write key and an admin token."""
    with services_for(database_url, require_schema=False) as services:
        migrate.upgrade(services.engine)
        with services.engine.begin() as conn:
            has_keys = key_service.any_keys(conn)
            stored = signing.read_keys(conn, services.settings.secret_key).source == "database"
        url = services.engine.url.render_as_string(hide_password=True)
        typer.echo(f"database ready: {url} (revision {migrate.head_revision()})")
        typer.echo(
            "signing key: random, stored in the database (`leadflow secret rotate`)"
            if stored
            else "signing key: LEADFLOW_SECRET_KEY"
        )
        if not has_keys:
            now = services.clock()
            write = key_service.create_key(services.engine, kind="write", name="default", now=now)
            admin = key_service.create_key(services.engine, kind="admin", name="default", now=now)
            typer.echo(f"write key (tracking /v1, HTTP Basic username): {write.token}")
            typer.echo(f"admin token (/api, Authorization: Bearer): {admin.token}")
            typer.echo("These are shown once; `leadflow keys create` makes more.")


def start_embedded_worker(services: Services) -> WorkerThread | None:
    """Due work (ended pauses, routing, SLA, webhooks) inside the server process, every
    LEADFLOW_WORKER_INTERVAL seconds; 0 turns it off (run `leadflow worker` instead)."""
    interval = services.settings.worker_interval
    if interval <= 0:
        return None
    worker = WorkerThread(services, interval)
    worker.start()
    return worker


def worker(
    once: bool = typer.Option(False, "--once", help="One pass, then exit."),
    interval: float | None = typer.Option(
        None, "--interval", min=0.1, help="Seconds between passes (LEADFLOW_WORKER_INTERVAL)."
    ),
    database_url: str | None = DatabaseOption,
) -> None:
    """Run due work: ended recycle pauses, routing within capacity, SLA escalation,
    segments, nurture program steps and email, seminar reminders, webhook deliveries.
    Several workers may run at once."""
    import time

    from leadflow.adapters.webhooks import HttpSender
    from leadflow.services.worker import build_mailer, run_once

    with services_for(database_url) as services:
        pause = interval or services.settings.worker_interval or 5.0
        allow = services.settings.webhooks_allow_private_targets
        with HttpSender(allow_private=allow) as sender, build_mailer(services) as mailer:
            while True:
                report = run_once(services, sender, mailer=mailer)
                if once or report.busy():
                    typer.echo(
                        f"pauses ended {report.pauses_ended}, routed {report.routed}, "
                        f"escalated {report.escalated}, re-routed {report.rerouted}, "
                        f"segment joins {report.segment_joins}, leaves "
                        f"{report.segment_leaves}, enrolled {report.enrolled}, steps run "
                        f"{report.steps_run}, emails planned {report.emails_planned}, "
                        f"skipped {report.emails_skipped}, sent {report.emails_sent}, "
                        f"failed {report.emails_failed}, seminar emails "
                        f"{report.seminar_emails}, webhooks queued {report.webhooks_queued}, "
                        f"delivered {report.webhooks_delivered}, failed "
                        f"{report.webhooks_failed}"
                    )
                for name, error in report.failed_jobs.items():
                    typer.echo(f"job {name} failed: {error}", err=True)
                if once:  # a failed job fails the command (the other jobs ran)
                    raise typer.Exit(1 if report.failed_jobs else 0)
                time.sleep(pause)


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
        worker = start_embedded_worker(services)
        try:
            uvicorn.run(build_server_app(services), host=bind_host, port=bind_port, **options)  # type: ignore[arg-type]
        finally:
            if worker is not None:
                worker.stop()
            services.close()
    except OSError as exc:  # pragma: no cover - port in use
        fail(f"cannot listen on {bind_host}:{bind_port}: {exc}")
