"""Registration point for CLI nouns: each module adds its Typer sub-app here."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    # Sub-apps are imported lazily here so a broken optional module names itself clearly.
    return None
