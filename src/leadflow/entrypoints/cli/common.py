"""What every CLI command shares: settings, services, one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError

from leadflow.adapters.db.engine import DatabaseUnavailable, check_connection
from leadflow.bootstrap import Services, build_services
from leadflow.core.inputs import InputError, argument_problem, check_json
from leadflow.settings import Settings


class CliError(Exception):
    """An error meant for the person at the terminal: printed as one line, exit 1."""


def check_file_data(data: Any, source: str) -> Any:
    """Values read from a JSON or YAML file given on the command line: text that cannot
    be stored, 64-bit overflows and absurd nesting are refused naming the key path."""
    try:
        check_json(data)
    except InputError as exc:
        fail(f"{source}: {exc}")
    return data


def fail(message: str) -> NoReturn:
    raise CliError(message)


def load_settings(database_url: str | None = None) -> Settings:
    try:
        if database_url:
            return Settings(database_url=database_url)
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        if not loc:  # a check across settings (e.g. production needs a real secret key)
            fail(f"settings: {first['msg']}")
        fail(f"setting LEADFLOW_{loc.upper()}: {first['msg']}")


@contextmanager
def services_for(
    database_url: str | None = None, *, require_schema: bool = True
) -> Iterator[Services]:
    """Services for one command; refuses clearly when the database is missing or old."""
    settings = load_settings(database_url)
    if require_schema:
        _refuse_missing_sqlite_file(settings.database_url)
    services = build_services(settings)
    try:
        check_connection(services.engine)
        if require_schema:
            from leadflow.adapters.db.migrate import current_revision, head_revision

            current = current_revision(services.engine)
            if current is None:
                fail(
                    f"database {services.engine.url.render_as_string(hide_password=True)} "
                    "has no leadflow schema: run `leadflow init` (or `leadflow db upgrade`)"
                )
            if current != head_revision():
                fail(
                    f"database schema is at revision {current}, this leadflow needs "
                    f"{head_revision()}: run `leadflow db upgrade`"
                )
        yield services
    finally:
        services.close()


def _refuse_missing_sqlite_file(url: str) -> None:
    """SQLite would silently create an empty file; say what to do instead."""
    parsed = make_url(url)
    is_file = parsed.get_backend_name() == "sqlite" and parsed.database not in ("", ":memory:")
    if is_file and not Path(str(parsed.database)).exists():
        fail(f"database file {parsed.database} does not exist: run `leadflow init` first")


DatabaseOption = typer.Option(
    None,
    "--database-url",
    envvar="LEADFLOW_DATABASE_URL",
    help="Database URL (default sqlite:///./leadflow.db).",
    show_default=False,
)


def run_guarded(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the Typer app; turn known failures into one line on stderr."""
    bad = argument_problem(sys.argv[1:] if args is None else list(args))
    if bad is not None:  # refused before any command runs: nothing reaches the database
        print(f"error: {bad[0]}: {bad[1]}", file=sys.stderr)
        return 2
    try:
        result: Any = app(args=args, standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ArgumentError as exc:
        print(f"error: database URL: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OperationalError, ProgrammingError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        print(f"error: database: {reason}", file=sys.stderr)
        return 1
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    # Typer >= 0.2x parses with its own copy of click: its usage errors, Exit and Abort
    # are not click's classes.
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
