"""Registration point for CLI nouns beyond db/keys/init/serve."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from leadflow.entrypoints.cli import demo, imports, leads

    app.add_typer(leads.app, name="leads", help="Leads: list, show, export, erase.")
    app.add_typer(imports.app, name="import", help="Import leads from CSV files.")
    app.add_typer(demo.app, name="demo", help="Load the simulated demo world.")
