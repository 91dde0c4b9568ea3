"""HTTP API: the Segment-compatible tracking endpoints and the management API."""

from leadflow.entrypoints.api.app import build_app

__all__ = ["build_app"]
