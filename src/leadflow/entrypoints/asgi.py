"""ASGI application factory for ``uvicorn --factory`` (``leadflow serve --workers N``).

Each worker process builds its own settings (from the environment), services and app:
nothing is shared between processes but the database. Usable directly, too:

    uvicorn --factory leadflow.entrypoints.asgi:create_app --workers 2
"""

from __future__ import annotations

from leadflow.bootstrap import Services, build_services
from leadflow.entrypoints.api import build_app
from leadflow.entrypoints.api.tracking import TrackingFastPath
from leadflow.settings import Settings


def build_server_app(services: Services) -> TrackingFastPath:
    """What `leadflow serve` runs: the app, with tracking calls on a short path."""
    return TrackingFastPath(build_app(services))


def create_app() -> TrackingFastPath:
    from leadflow.entrypoints.cli.serve import start_embedded_worker

    services = build_services(Settings())
    server = build_server_app(services)
    worker = start_embedded_worker(services)
    if worker is not None:
        server.app.router.on_shutdown.append(worker.stop)
    server.app.router.on_shutdown.append(services.close)
    return server
