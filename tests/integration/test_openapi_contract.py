"""Contract test: schemathesis over the whole OpenAPI document, on SQLite and PostgreSQL.

Every operation of the app's OpenAPI document (the Segment tracking calls, the public
forms, e-mail links and personalisation, the whole management API; the dashboard's HTML
pages are not in the document) is called with examples schemathesis generates from the
document: its explicit examples, boundary values (coverage phase) and random valid and
invalid inputs (fuzzing phase, at most ``LEADFLOW_CONTRACT_EXAMPLES`` per operation). A
response fails the test when it is

- a server error (5xx),
- a status the operation does not document,
- a content type the operation does not document for that status,
- a body that does not conform to the documented schema.

Requests carry the credentials the route asks for (an admin token on /api, a write key on
/v1); the refusals without them are asserted by the route tests. The database is shared by
all operations of a backend and seeded with a few leads, so lead id 1 (a boundary value
schemathesis tries) exists. The seed is fixed so a run is reproducible; set
``LEADFLOW_CONTRACT_SEED`` to explore other inputs. How many requests were sent is
printed at the end of the run.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import metadata
from leadflow.bootstrap import Services, build_services
from leadflow.entrypoints.api import build_app
from leadflow.services import keys as key_service
from leadflow.settings import Settings

BACKENDS = [
    b.strip()
    for b in os.environ.get("LEADFLOW_TEST_BACKENDS", "sqlite,postgresql").split(",")
    if b.strip()
]
MAX_EXAMPLES = int(os.environ.get("LEADFLOW_CONTRACT_EXAMPLES", "12"))
SEED = int(os.environ.get("LEADFLOW_CONTRACT_SEED", "20261202"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SENT: Counter[str] = Counter()


def _document() -> dict[str, Any]:
    """The app's OpenAPI document; building it touches no database."""
    services = build_services(
        Settings(database_url="sqlite:///contract-document-only.db", warm_reports=False)
    )
    try:
        return build_app(services).openapi()
    finally:
        services.close()


schema = schemathesis.openapi.from_dict(_document())
schema.config.seed = SEED
schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none", allow_x00=os.environ.get("X00","1")=="1")


@dataclass
class Api:
    backend: str
    app: FastAPI
    headers: dict[str, dict[str, str]]

    def credentials(self, path: str) -> dict[str, str]:
        return self.headers.get(path.split("/")[1], {})


def _empty_database(request: pytest.FixtureRequest, backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        path = tmp / "contract.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_schema_url")
    engine = create_db_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


def _seed(app: FastAPI, write_key: str) -> None:
    """A few leads (ids 1..3), an account and events through the tracking API."""
    batch = []
    for i in range(3):
        user = f"contract-{i}"
        batch += [
            {"type": "identify", "userId": user, "traits": {"email": f"p{i}@acme.example"}},
            {"type": "group", "userId": user, "groupId": "acme", "traits": {"name": "Acme"}},
            {"type": "track", "userId": user, "event": "demo_request"},
            {"type": "page", "userId": user, "properties": {"url": "https://acme.example/p"}},
        ]
    with TestClient(app) as client:
        r = client.post("/v1/batch", json={"batch": batch}, auth=(write_key, ""))
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The conftest's ``backend``, module-scoped: one database per backend for all operations."""
    return str(request.param)


@pytest.fixture(scope="module")
def api(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp(f"contract-{backend}")
    url = _empty_database(request, backend, tmp)
    services: Services = build_services(
        Settings(database_url=url, mail_dir=str(tmp / "outbox"), warm_reports=False)
    )
    now = datetime.now(UTC)
    write_key = key_service.create_key(services.engine, kind="write", name="c", now=now).token
    admin = key_service.create_key(services.engine, kind="admin", name="c", now=now).token
    app = build_app(services)
    _seed(app, write_key)
    basic = base64.b64encode(f"{write_key}:".encode()).decode()
    yield Api(
        backend,
        app,
        {"v1": {"Authorization": f"Basic {basic}"}, "api": {"Authorization": f"Bearer {admin}"}},
    )
    services.close()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nschemathesis sent {SENT[backend]} requests on {backend}")


@schema.parametrize()
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_operation_honours_the_contract(case: schemathesis.Case, api: Api) -> None:
    SENT[api.backend] += 1
    case.call_and_validate(
        app=api.app,
        base_url="http://testserver",
        headers=api.credentials(case.path),
        checks=CHECKS,
    )
