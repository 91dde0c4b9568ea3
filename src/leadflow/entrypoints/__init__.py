"""Entrypoints: HTTP API, web dashboard, CLI, worker."""
