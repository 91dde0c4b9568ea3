"""What every dashboard route reads from the application: its services and figure cache."""

from __future__ import annotations

from fastapi import Request

from leadflow.bootstrap import Services
from leadflow.entrypoints.web.cache import TTLCache


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def cache_of(request: Request) -> TTLCache:
    cache: TTLCache = request.app.state.web_cache
    return cache
