"""Layer rules: the core stays pure (no storage, web, mail or HTTP client imports, no clock
reads); entrypoints build no SQL (it lives in repositories and services)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "src" / "leadflow" / "core"
FORBIDDEN_MODULES = (
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "httpx",
    "requests",
    "smtplib",
    "typer",
    "leadflow.adapters",
    "leadflow.entrypoints",
    "leadflow.services",
    "leadflow.bootstrap",
)


def _imports(tree: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
    return found


def test_core_modules_import_no_adapters_or_frameworks():
    offenders = []
    for path in CORE.rglob("*.py"):
        for name in _imports(ast.parse(path.read_text())):
            if name.startswith(FORBIDDEN_MODULES):
                offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_core_modules_never_read_the_clock():
    offenders = []
    for path in CORE.rglob("*.py"):
        source = path.read_text()
        for call in ("datetime.now(", "datetime.utcnow(", "time.time(", "date.today("):
            if call in source:
                offenders.append(f"{path.name}: {call}")
    assert offenders == []


# ---------------------------------------------------------------- no SQL in entrypoints

ENTRYPOINTS = CORE.parent / "entrypoints"
# What an entrypoint may take from SQLAlchemy: types to pass a connection along, URL
# parsing and the exceptions it maps. Anything else (select, insert, update, delete, text,
# func, and_, case, ...) builds SQL, which belongs in a repository or a service.
SQLALCHEMY_ALLOWED = {
    "sqlalchemy": {"Connection", "Engine"},
    "sqlalchemy.engine": {"Connection", "Engine", "make_url"},
}
SQLALCHEMY_ALLOWED_MODULES = ("sqlalchemy.exc",)
TABLES = "leadflow.adapters.db.tables"


def _sql_imports(tree: ast.AST) -> list[str]:
    """Imports in ``tree`` that build SQL or reach the table objects."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy" or alias.name.startswith(TABLES):
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            names = [alias.name for alias in node.names]
            if module == TABLES or module.startswith(TABLES + "."):
                found.append(f"from {module} import {', '.join(names)}")
            elif module == "leadflow.adapters.db" and "tables" in names:
                found.append(f"from {module} import tables")
            elif module.split(".")[0] == "sqlalchemy":
                if module.startswith(SQLALCHEMY_ALLOWED_MODULES):
                    continue
                allowed = SQLALCHEMY_ALLOWED.get(module, set())
                found.extend(f"from {module} import {n}" for n in names if n not in allowed)
    return found


STATEMENT_CALLS = {"execute", "exec_driver_sql", "scalar", "scalars"}


def _statement_calls(tree: ast.AST) -> list[str]:
    """Calls that run a statement (``conn.execute(...)``, raw SQL through
    ``exec_driver_sql``): an entrypoint hands its connection to a repository instead."""
    return [
        f"line {node.lineno}: .{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in STATEMENT_CALLS
    ]


def test_the_sql_import_check_catches_what_it_should():
    source = (
        "from sqlalchemy import Engine, select\n"
        "from sqlalchemy.sql import func\n"
        "import sqlalchemy as sa\n"
        "from leadflow.adapters.db.tables import leads\n"
        "from leadflow.adapters.db import engine, tables\n"
        "from sqlalchemy.exc import IntegrityError\n"
        "from sqlalchemy.engine import make_url\n"
        "def f(conn):\n"
        "    from sqlalchemy import text\n"
        "    conn.exec_driver_sql('DELETE FROM leads')\n"
    )
    assert _statement_calls(ast.parse(source)) == ["line 10: .exec_driver_sql()"]
    assert sorted(_sql_imports(ast.parse(source))) == sorted(
        [
            "from sqlalchemy import select",
            "from sqlalchemy.sql import func",
            "import sqlalchemy",
            "from leadflow.adapters.db.tables import leads",
            "from leadflow.adapters.db import tables",
            "from sqlalchemy import text",
        ]
    )


def test_entrypoints_build_no_sql():
    """API, dashboard and CLI call repositories and services; no statement is built in
    ``entrypoints`` (and no table object is reached from there)."""
    offenders = []
    for path in sorted(ENTRYPOINTS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for found in [*_sql_imports(tree), *_statement_calls(tree)]:
            offenders.append(f"{path.relative_to(ENTRYPOINTS)}: {found}")
    assert offenders == []
