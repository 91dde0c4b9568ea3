"""The ``leadflow`` command: ``leadflow <noun> <verb>``.

Errors are one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from leadflow.entrypoints.cli import db as db_cli
from leadflow.entrypoints.cli import keys as keys_cli
from leadflow.entrypoints.cli.common import CliError, fail, run_guarded
from leadflow.entrypoints.cli.serve import register as register_serve

app = typer.Typer(
    name="leadflow",
    help="B2B lead management: tracking, scoring, stages, nurture, hand-off, analytics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db_cli.app, name="db")
app.add_typer(keys_cli.app, name="keys")
register_serve(app)


def _register_optional() -> None:
    """Nouns added by later modules register themselves here (one import each)."""
    from leadflow.entrypoints.cli import extra

    extra.register(app)


_register_optional()


def main() -> None:
    sys.exit(run_guarded(app))


__all__ = ["CliError", "app", "fail", "main"]
