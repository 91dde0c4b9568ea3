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
/v1); schemathesis also sends a few without them, so the 401s are checked too. The database
is shared by
all operations of a backend and seeded with a few leads, so lead id 1 (a boundary value
schemathesis tries) exists. The seed is fixed so a run is reproducible; set
``LEADFLOW_CONTRACT_SEED`` to explore other inputs. How many requests were sent is
printed at the end of the run (tests/conftest.py sums them per backend).
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
schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")


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


@pytest.fixture
def counted(api: Api, record_property: Any) -> Iterator[None]:
    """Records how many requests the test sent (summed per backend by tests/conftest.py)."""
    before = SENT[api.backend]
    yield
    record_property(f"schemathesis_requests:{api.backend}", SENT[api.backend] - before)


@pytest.mark.usefixtures("counted")
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


# --- the classes of bug the run found, pinned on both backends --------------------------


@pytest.fixture
def admin(client: TestClient, admin_token: str, write_key: str) -> TestClient:
    r = client.post(
        "/v1/identify",
        json={"userId": "u1", "traits": {"email": "a@acme.example"}},
        auth=(write_key, ""),
    )
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


@pytest.mark.parametrize(
    ("path", "field", "status"),
    [
        # Outside 1900-2999: the input door (400); inside it but before 1970: the route (422).
        ("/api/reports/funnel?from=1013-01-01", "from", 400),
        ("/api/reports/funnel?from=0001-01-01&to=0001-02-01", "from", 400),
        ("/api/reports/attribution?to=9999-12-31", "to", 400),
        ("/api/reports/campaigns?from=0001-01-01", "from", 400),
        ("/api/reports/kpis?from=1969-12-31", "from", 422),
        ("/api/reports/pipeline?as_of=0001-01-01", "as_of", 400),
    ],
)
def test_report_dates_far_from_today_are_refused_naming_the_field(
    admin: TestClient, path: str, field: str, status: int
) -> None:
    """A funnel from 1013 compared itself with a period before year 1: OverflowError, 500."""
    r = admin.get(path)
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(f"{field}: ")
    assert admin.get("/api/reports/funnel?from=1970-01-01").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/leads/9223372036854775808",
        "/api/leads/9223372036854775808/events",
        "/api/leads/1/events?cursor=9223372036854775808",
        "/api/leads?cursor=9223372036854775808",
    ],
)
def test_ids_beyond_the_database_integers_are_refused(admin: TestClient, path: str) -> None:
    """Ids above 2^63-1 reached PostgreSQL (DataError) and SQLite (OverflowError): 500.
    The input door refuses them (400 naming the parameter)."""
    r = admin.get(path)
    assert r.status_code == 400, r.text
    assert r.json()["field"] in ("lead_id", "cursor")
    assert admin.get("/api/leads/1").status_code == 200


def test_undecodable_json_bodies_are_a_documented_400(admin: TestClient) -> None:
    document = admin.app.openapi()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert "400" in operation["responses"], f"{method.upper()} {path}"
    r = admin.post(
        "/api/privacy/erase",
        content=b'{"email": "\xff"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and isinstance(r.json()["detail"], str)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "A\x00n"}, "name"),
        ({"email": "a\x00n@acme.example"}, "email"),
        ({"territories": [{"industries": ["Soft\x00ware"]}]}, "territories"),
    ],
)
def test_sales_rep_text_with_a_nul_is_refused_naming_the_field(
    admin: TestClient, body: dict[str, Any], field: str
) -> None:
    """PostgreSQL refuses NUL in text: a rep named with one answered 500 there."""
    rep = {"key": "ann", "name": "Ann", "email": "ann@acme.example", **body}
    r = admin.post("/api/reps", json=rep)
    assert r.status_code == 400, r.text
    assert r.json()["field"].startswith(field)
    assert "ann" not in {rep["key"] for rep in admin.get("/api/reps").json()["reps"]}


@pytest.mark.parametrize(
    ("body", "content_type", "answer"),
    [
        (
            b"--x\r\nContent-Disposition: form-data; name=List-Unsubscribe\r\n\r\n"
            b"One-Click\r\n--x--\r\n",
            "multipart/form-data; boundary=x",
            "text/plain",
        ),
        (b"garbage", "multipart/form-data", "application/json"),
    ],
)
def test_unsubscribe_answers_only_documented_content_types(
    client: TestClient, body: bytes, content_type: str, answer: str
) -> None:
    """RFC 8058 one-click posts may be multipart; a broken one got an undocumented JSON 400."""
    r = client.post("/u/not-a-signed-token", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith(answer)
    documented = client.app.openapi()["paths"]["/u/{token}"]["post"]
    assert answer in documented["responses"]["400"]["content"]
    assert "multipart/form-data" in documented["requestBody"]["content"]


def test_an_unreadable_attendance_csv_is_422_naming_the_file(admin: TestClient) -> None:
    """A field over the csv module's 128 KB limit raised csv.Error: a 500."""
    seminar = {"key": "launch", "title": "Launch", "starts_at": "2026-05-01T09:00:00Z"}
    assert admin.post("/api/seminars", json=seminar).status_code == 201
    r = admin.post(
        "/api/seminars/launch/attendance",
        content=b"email\n" + b"a" * 140_000 + b"@acme.example\n",
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("file: not a readable CSV")


def test_unicode_digits_in_api_inputs_are_refused_or_ignored(
    client: TestClient, write_key: str, services: Services
) -> None:
    """'²'.isdigit() is true but int('²') fails: each of these answered 500."""
    r = client.post(
        "/v1/group",
        json={"userId": "u2", "groupId": "g2", "traits": {"name": "Two", "employees": "²"}},
        auth=(write_key, ""),
    )
    assert r.status_code == 200, r.text
    with services.engine.connect() as conn:
        counts = conn.execute(text("SELECT employee_count FROM accounts")).scalars().all()
    assert counts == [None]
    r = client.get("/v1/personalize?anonymousId=a1&limit=²", auth=(write_key, ""))
    assert r.status_code == 400 and r.json()["detail"].startswith("limit: ")
    form = {"lf_token": "².abc", "anonymousId": "a" * 32, "email": "ann@acme.example"}
    r = client.post("/f/white-paper", data=form, headers={"Accept": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("lf_token: ")


def test_numbers_longer_than_int_reads_are_refused(client: TestClient, write_key: str) -> None:
    """int() refuses more than 4,300 digits (ValueError): ?limit= of 5,000 digits was a 500,
    and so was such a Content-Length on the tracking and form posts."""
    huge = "9" * 5000
    r = client.get(f"/v1/personalize?anonymousId=a1&limit={huge}", auth=(write_key, ""))
    assert r.status_code == 400 and r.json()["detail"].startswith("limit: ")
    body = b'{"userId": "u1", "event": "e"}'
    r = client.post(
        "/v1/track",
        content=body,
        headers={"Content-Type": "application/json", "Content-Length": huge},
        auth=(write_key, ""),
    )
    assert r.status_code == 400 and r.json()["field"] == "body"


@pytest.mark.parametrize(
    ("path", "body", "field", "status"),
    [
        # Date fields of a declared body model: the input door (400). The CRM update body is
        # read by its route (declared in the document only): the route refuses it (422).
        (
            "/api/seminars",
            {"key": "s1", "title": "T", "starts_at": "0001-01-01T00:00:00+05:00"},
            "starts_at",
            400,
        ),
        (
            "/api/seminars",
            {"key": "s2", "title": "T", "starts_at": "9999-12-31T23:59:59Z"},
            "starts_at",
            400,
        ),
        (
            "/api/crm/updates",
            {"external_id": "x", "update_id": "u", "closed_at": "9999-12-31T23:59:59-05:00"},
            "closed_at",
            422,
        ),
        (
            "/api/opportunities",
            {"name": "Deal", "expected_close": "9999-12-31"},
            "expected_close",
            400,
        ),
    ],
)
def test_dates_at_the_calendars_ends_are_refused_naming_the_field(
    admin: TestClient, path: str, body: dict[str, Any], field: str, status: int
) -> None:
    """Converted to UTC or extended by a duration, they overflowed: a 500 at once (crm,
    a +05:00 seminar) or later (registering for a seminar starting 9999-12-31)."""
    r = admin.post(path, json=body)
    assert r.status_code == status, r.text
    assert field in str(r.json()["detail"])
    ok = {"key": "ok", "title": "T", "starts_at": "2999-12-30T09:00:00+09:00"}
    assert admin.post("/api/seminars", json=ok).status_code == 201
    assert admin.post("/api/seminars/ok/register", json={"lead_id": 1}).status_code == 200
