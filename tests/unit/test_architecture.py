"""The core stays pure: no storage, web, mail or HTTP client imports, no clock reads."""

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
