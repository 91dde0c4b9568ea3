"""Shared fixtures: every integration test runs on SQLite and on PostgreSQL.

Backends come from ``LEADFLOW_TEST_BACKENDS`` (default ``sqlite,postgresql``). PostgreSQL
is at ``LEADFLOW_TEST_PG_URL`` (default 127.0.0.1:5432, database ``test``, trust auth); each
pytest process gets its own schema, migrated once with Alembic, truncated between tests.
SQLite tests get a copy of a template file migrated once with Alembic. An unreachable
PostgreSQL fails the run: it is never skipped silently.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from leadflow.adapters.db import migrate
from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import metadata
from leadflow.bootstrap import Services, build_services
from leadflow.services import keys as key_service
from leadflow.settings import Settings

BACKENDS = [
    b.strip()
    for b in os.environ.get("LEADFLOW_TEST_BACKENDS", "sqlite,postgresql").split(",")
    if b.strip()
]
PG_URL = os.environ.get("LEADFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RAN: Counter[str] = Counter()
# Requests the OpenAPI contract test sent, per backend (tests/integration/test_openapi_contract.py
# records them as a user property, which also reaches the controller under pytest-xdist).
CONTRACT_REQUESTS: Counter[str] = Counter()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "backend" in callspec.params:
            item.add_marker(getattr(pytest.mark, callspec.params["backend"]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties if report.when == "teardown" else ():
        if name.startswith("schemathesis_requests:"):
            CONTRACT_REQUESTS[name.partition(":")[2]] += int(value)
    if report.when == "call" and report.passed:
        for backend in ("sqlite", "postgresql"):
            if (
                f"[{backend}" in report.nodeid
                or f"-{backend}]" in report.nodeid
                or (f"-{backend}-" in report.nodeid)
            ):
                RAN[backend] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(
        "database tests passed per backend: "
        + ", ".join(f"{b}={RAN.get(b, 0)}" for b in ("sqlite", "postgresql"))
    )
    if CONTRACT_REQUESTS:
        terminalreporter.write_line(
            "schemathesis requests per backend (API contract): "
            + ", ".join(f"{b}={n}" for b, n in sorted(CONTRACT_REQUESTS.items()))
        )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    schema = f"lf_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_URL} ({exc.__class__.__name__}: {exc}). "
            "Start it (make test does) or set LEADFLOW_TEST_BACKENDS=sqlite."
        )
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on the test's backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "leadflow.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("pg_schema_url")
    _truncate(url)
    yield url


def _truncate(url: str) -> None:
    engine = create_db_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def services(db_url: str, tmp_path: Path) -> Iterator[Services]:
    # Without an SMTP host, email goes to .eml files: keep them in the test's directory.
    # Reports are not warmed in the background: tests read the store when they mean to.
    built = build_services(
        Settings(database_url=db_url, mail_dir=str(tmp_path / "outbox"), warm_reports=False)
    )
    yield built
    built.close()


@pytest.fixture
def write_key(services: Services) -> str:
    return key_service.create_key(
        services.engine, kind="write", name="test", now=datetime.now(UTC)
    ).token


@pytest.fixture
def admin_token(services: Services) -> str:
    return key_service.create_key(
        services.engine, kind="admin", name="test", now=datetime.now(UTC)
    ).token


@pytest.fixture
def client(services: Services) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from leadflow.entrypoints.api import build_app

    with TestClient(build_app(services)) as test_client:
        yield test_client
