"""Hostile input never costs a valid event and never reaches storage (SQLite and PostgreSQL).

Each class has one test: text PostgreSQL cannot store (NUL, lone surrogates) in /v1
messages and in every kind of HTTP input (JSON body, path, query, dashboard form, public
form); numbers beyond 64 bits and out-of-range dates; traits that become integer columns;
deep JSON; broken gzip; search prefixes at the end of Unicode; the CLI's arguments and
files. Every refusal is a 4xx naming the field, the same on both backends, and stores
nothing.
"""

from __future__ import annotations

import gzip
import re
import threading
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import pytest
from sqlalchemy import func, insert, select

from leadflow.adapters.db.tables import accounts, api_keys, events, leads, segments
from leadflow.bootstrap import Services
from leadflow.entrypoints.cli import app as cli_app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import users as user_service

PASSWORD = "correct horse battery"


def auth(key: str) -> tuple[str, str]:
    return (key, "")


def count(services: Services, table: Any = events) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def dump(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    with services.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t)).all()]
            for t in (events, leads, accounts, segments, api_keys)
        }


def raw_post(client: Any, url: str, body: Any, **kw: Any) -> Any:
    """JSON as an SDK may send it: ASCII escapes, so lone surrogates survive the wire."""
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    import json

    return client.post(url, content=json.dumps(body).encode(), headers=headers, **kw)


# ------------------------------------------------------------------ /v1: item 1 and 6


@pytest.mark.parametrize(
    ("message", "field", "reason"),
    [
        ({"type": "track", "event": "demo\x00request"}, "batch[1].event", "NUL"),
        ({"type": "page", "name": "Pricing\x00"}, "batch[1].name", "NUL"),
        ({"type": "screen", "name": "Home\x00"}, "batch[1].name", "NUL"),
        ({"type": "track", "event": "x", "properties": {"a": ["\x00"]}}, "properties.a[0]", "NUL"),
        ({"type": "identify", "traits": {"title": "CTO\x00"}}, "batch[1].traits.title", "NUL"),
        ({"type": "track", "event": "x", "context": {"k\x00": 1}}, "batch[1].context", "key"),
        ({"type": "group", "groupId": "g", "traits": {"employees": 1e308}}, "employees", "range"),
        ({"type": "group", "groupId": "g", "traits": {"employees": 2**63}}, "employees", "range"),
        (
            {"type": "identify", "traits": {"company": {"name": "A", "employees": "9" * 25}}},
            "batch[1].traits.company.employees",
            "range",
        ),
        (
            {"type": "identify", "traits": {"company": {"name": "A", "id": "x" * 300}}},
            "batch[1].traits.company.id",
            "longer than 255",
        ),
        ({"type": "track", "event": "x", "timestamp": "0001-01-01T00:00:00Z"}, "timestamp", "1900"),
        ({"type": "track", "event": "x", "timestamp": "9999-12-31T00:00:00Z"}, "timestamp", "2999"),
        ({"type": "track", "event": "x", "properties": {"n": 18446744073709551615}}, "n", "64-bit"),
    ],
)
def test_a_bad_message_is_refused_naming_its_field_and_stores_nothing(
    client: Any,
    services: Services,
    write_key: str,
    message: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    good = {"type": "track", "userId": "u1", "event": "demo_request"}
    body = {"batch": [good, {"userId": "u1", **message}]}
    r = client.post("/v1/batch", content=orjson.dumps(body), auth=auth(write_key))
    assert r.status_code == 400, r.text
    assert field in r.json()["field"] and reason in r.json()["message"]
    assert r.json()["message"].startswith(r.json()["field"] + ": ")
    assert count(services) == 0
    # The same valid message alone is stored: the refusal cost nothing else.
    assert client.post("/v1/batch", json={"batch": [good]}, auth=auth(write_key)).status_code == 200
    assert count(services) == 1


def test_bad_requests_never_fail_other_clients_requests(
    client: Any, services: Services, write_key: str
) -> None:
    """Refused before the group commit: concurrent good requests are all stored."""
    statuses: list[int] = []

    def send(i: int) -> None:
        bad = i % 2 == 1
        event = "bad\x00name" if bad else "ok"
        body = {"batch": [{"type": "track", "userId": f"u{i}", "event": event}]}
        r = client.post("/v1/batch", content=orjson.dumps(body), auth=auth(write_key))
        statuses.append(r.status_code * (-1 if bad else 1))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(statuses)) == [-400, 200]
    assert count(services) == 12


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (lambda raw: raw[:-12], "truncated gzip"),
        (lambda raw: raw + b"garbage", "after the end of the gzip stream"),
    ],
)
def test_broken_gzip_is_refused(
    client: Any, services: Services, write_key: str, data: Any, reason: str
) -> None:
    raw = gzip.compress(orjson.dumps({"batch": [{"type": "track", "userId": "u", "event": "x"}]}))
    r = client.post(
        "/v1/batch",
        content=data(raw),
        headers={"content-encoding": "gzip", "content-type": "application/json"},
        auth=auth(write_key),
    )
    assert r.status_code == 400 and reason in r.json()["message"], r.text
    assert count(services) == 0


# ------------------------------------------------------- HTTP inputs of /api, dashboard, forms


@pytest.fixture
def admin(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


DEEP: Any = 1
for _ in range(40):
    DEEP = [DEEP]
JSON = {"content-type": "application/json"}

API_CASES = [
    # (method, url, JSON body or None, refused field)
    ("POST", "/api/segments", {"key": "s1", "name": "S\x00", "criteria": {}}, "name"),
    ("POST", "/api/segments", {"key": "s1", "name": "S\ud800", "criteria": {}}, "name"),
    ("POST", "/api/segments", {"key": "s1", "name": "S", "criteria": {"all\x00": []}}, "criteria"),
    ("POST", "/api/opportunities", {"name": "Deal\x00", "amount": 1, "currency": "KRW"}, "name"),
    ("POST", "/api/reps", {"key": "r1", "name": "Rep\ud800", "email": "r@x.io"}, "name"),
    ("POST", "/api/content", {"key": "c1", "title": "T\x00", "type": "blog_post"}, "title"),
    ("POST", "/api/webhooks", {"url": "https://h.example/\ud800"}, "url"),
    ("POST", "/api/email/test", {"to": "a\ud800@b.io"}, "to"),
    ("POST", "/api/privacy/erase", {"email": "a\ud800@b.io"}, "email"),
    ("GET", "/api/segments/a%00b", None, "key"),
    ("GET", "/api/email/sends?program=a%00", None, "program"),
    ("GET", "/api/leads?account=a%00", None, "account"),
    ("GET", "/api/leads/9223372036854775808", None, "lead_id"),
    ("GET", "/api/leads/-9223372036854775809/events", None, "lead_id"),
    ("GET", "/api/leads?cursor=99999999999999999999999", None, "cursor"),
    ("GET", "/api/reports/funnel?from=0001-01-01", None, "from"),
    ("GET", "/api/reports/kpis?to=9999-12-31", None, "to"),
    ("GET", "/api/reports/pipeline?as_of=0001-01-01", None, "as_of"),
    ("POST", "/api/segments", {"key": "s1", "name": "S", "criteria": {"n": 2**64}}, "criteria.n"),
    ("POST", "/api/segments", {"key": "s1", "name": "S", "criteria": {"a": DEEP}}, "criteria"),
]


@pytest.mark.parametrize(("method", "url", "body", "field"), API_CASES)
def test_api_refuses_what_cannot_be_stored_naming_the_field(
    client: Any,
    services: Services,
    admin: dict[str, str],
    method: str,
    url: str,
    body: Any,
    field: str,
) -> None:
    before = dump(services)
    if body is None:
        r = client.request(method, url, headers=admin)
    else:
        r = raw_post(client, url, body, headers=admin)
    assert r.status_code == 400, r.text
    assert r.json()["field"].startswith(field), r.json()
    assert r.json()["detail"].startswith(r.json()["field"] + ": ")
    assert dump(services) == before


def test_public_form_refuses_nul_deep_json_and_infinite_numbers(
    client: Any, services: Services
) -> None:
    deep = b'{"email": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    for kwargs, field in [
        ({"data": {"email": "a@b.io\x00"}}, "email"),
        ({"content": deep, "headers": JSON}, "body"),
        ({"content": b'{"email": "a@b.io", "n": 1e400}', "headers": JSON}, "n"),
    ]:
        r = client.post("/f/white-paper", **kwargs)
        assert r.status_code == 400, r.text
        assert r.json()["field"] == field
        assert r.headers["access-control-allow-origin"] == "*"
    assert count(services, leads) == 0


@pytest.fixture
def signed_in(client: Any, services: Services, monkeypatch: pytest.MonkeyPatch) -> str:
    from argon2 import PasswordHasher

    monkeypatch.setattr(
        user_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    user_service.create_user(
        services.engine,
        email="admin@example.com",
        password=PASSWORD,
        role="admin",
        now=datetime.now(UTC),
    )
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post(
        "/login",
        data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    home = client.get("/home").text
    return re.search(r'name="csrf_token" value="([^"]+)"', home).group(1)  # type: ignore[union-attr]


def test_dashboard_refuses_bad_fields_and_parameters_with_its_error_page(
    client: Any, services: Services, signed_in: str
) -> None:
    before = dump(services)
    posts = [
        ("/settings/keys", {"name": "k\x00", "kind": "write"}, "name"),
        ("/timezone", {"timezone": "Asia/Seoul\x00"}, "timezone"),
        ("/settings/keys/99999999999999999999/revoke", {}, "key_id"),
    ]
    for url, data, field in posts:
        r = client.post(url, data={**data, "csrf_token": signed_in}, follow_redirects=False)
        assert r.status_code == 400, (url, r.status_code)
        assert f"{field}: " in r.text and 'data-status="400"' in r.text
    for url, field in [
        ("/leads?q=a%00", "q"),
        ("/leads/99999999999999999999999", "lead_id"),
        ("/funnel?from=0001-01-01", "from"),
        ("/queue?lead=99999999999999999999", "lead"),
    ]:
        r = client.get(url)
        assert r.status_code in (400, 200), (url, r.status_code)
        if r.status_code == 400:
            assert f"{field}: " in r.text
    assert client.get("/funnel?from=0001-01-01").status_code != 500
    assert dump(services) == before


def test_search_ending_at_the_last_code_point_finds_by_prefix(
    client: Any, services: Services, signed_in: str, write_key: str
) -> None:
    body = {"userId": "u1", "traits": {"email": "ann@acme.io", "firstName": "Ann"}}
    assert client.post("/v1/identify", json=body, auth=auth(write_key)).status_code == 200
    for q in ("ann\U0010ffff", "\U0010ffff", "an\ud7ff", "ann"):
        r = client.get("/leads", params={"q": q})
        assert r.status_code == 200, (q, r.status_code)
        assert ("ann@acme.io" in r.text) == (q == "ann")
        r = client.get("/accounts", params={"q": q})
        assert r.status_code == 200


# ------------------------------------------------------------------------------ CLI


def test_cli_refuses_arguments_and_file_values_that_cannot_be_stored(
    db_url: str, services: Services, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = dump(services)
    criteria = tmp_path / "c.yaml"
    criteria.write_text('all:\n  - field: title\n    contains: "a\\0b"\n', encoding="utf-8")
    cases = [
        (["keys", "create", "--name", "a\udcffb"], "--name: is not valid UTF-8 text"),
        (["keys", "create", "--name=a\x00b"], "--name: contains a NUL character"),
        (["report", "funnel", "--from", "0001-01-01"], "--from: out of range"),
        (
            ["segments", "create", "s1", "--name", "S", "--criteria", str(criteria)],
            "all[0].contains: contains a NUL character",
        ),
    ]
    for args, message in cases:
        code = run_guarded(cli_app, [*args, "--database-url", db_url])
        err = capsys.readouterr().err
        assert code != 0 and message in err, (args, err)
    assert dump(services) == before


def test_an_employee_count_poisoned_before_the_fix_does_not_break_the_backtest(
    db_url: str, services: Services, client: Any, write_key: str, tmp_path: Any
) -> None:
    """The tracking API refuses `employees: 1e308` now; one stored earlier is ignored."""
    r = client.post(
        "/v1/group",
        json={"userId": "u1", "groupId": "g1", "traits": {"employees": 1e308}},
        auth=auth(write_key),
    )
    assert r.status_code == 400 and r.json()["field"] == "traits.employees"
    assert (
        client.post(
            "/v1/identify",
            json={"userId": "u1", "traits": {"email": "a@b.io"}},
            auth=auth(write_key),
        ).status_code
        == 200
    )
    with services.engine.begin() as conn:
        lead_id = conn.execute(select(leads.c.id)).scalar_one()
        conn.execute(
            insert(events).values(
                message_id="poisoned",
                type="group",
                lead_id=lead_id,
                occurred_at=datetime.now(UTC),
                received_at=datetime.now(UTC),
                properties={"employees": 1e308},
                context={},
            )
        )
    model = tmp_path / "m.yaml"
    model.write_text(
        resources.files("leadflow").joinpath("default.yaml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    assert run_guarded(cli_app, ["model", "backtest", str(model), "--database-url", db_url]) == 0


def test_digits_int_cannot_read_are_not_numbers(
    client: Any, services: Services, signed_in: str, write_key: str
) -> None:
    """``"²".isdigit()`` is true but ``int("²")`` fails: such text is never taken for a
    number (a cursor, a limit, an employee count)."""
    assert client.get("/leads", params={"after": "²"}).status_code == 200
    assert client.get("/leads", params={"account": "¹²"}).status_code == 200
    r = client.get("/v1/personalize", params={"limit": "²", "writeKey": write_key})
    assert r.status_code == 400 and r.json()["detail"].startswith("limit: ")
    r = client.get(
        "/v1/personalize", params={"anonymousId": "a", "writeKey": write_key, "limit": "9" * 5000}
    )
    assert r.status_code == 400
    group = {"userId": "u1", "groupId": "g1", "traits": {"employees": "²"}}
    assert client.post("/v1/group", json=group, auth=auth(write_key)).status_code == 200
    with services.engine.connect() as conn:
        assert conn.execute(select(accounts.c.employee_count)).scalar_one() is None
    r = client.get("/v1/personalize", params={"anonymousId": "a\x00", "writeKey": write_key})
    assert r.status_code == 400


def test_ingest_drops_an_employee_count_no_column_can_hold_from_any_path(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """Forms and other services build messages without the tracking parser: ingest still
    never stores a count beyond the column (it drops it, with a warning)."""
    from leadflow.core.tracking import TrackedMessage
    from leadflow.services.ingest import ingest_in

    now = datetime.now(UTC)
    company = {"name": "Huge", "employee_count": "9" * 25}
    message = TrackedMessage(
        message_id="m-1",
        type="identify",
        occurred_at=now,
        user_id="u1",
        traits={"email": "a@huge.io", "company": company},
    )
    with services.engine.begin() as conn:
        ingest_in(conn, [message], now)
    with services.engine.connect() as conn:
        assert conn.execute(select(accounts.c.name, accounts.c.employee_count)).one() == (
            "Huge",
            None,
        )
    assert "employee count" in caplog.text and "dropped" in caplog.text
