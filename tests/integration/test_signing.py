"""The signing key of email links, form tokens and cookies (issue 12, item 5).

Without LEADFLOW_SECRET_KEY the key used to be derived from the database URL, so anyone
who guessed the URL could forge click redirects and one-click unsubscribes. Now each
database holds a random key; ``leadflow secret rotate`` replaces it and keeps the previous
one verifying for a window. Every test runs on SQLite and PostgreSQL; time is explicit
(the services' clock), nothing sleeps.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import form_submissions, leads, signing_secrets
from leadflow.adapters.email import FileMailer
from leadflow.bootstrap import Services, build_services
from leadflow.core import email_tokens
from leadflow.entrypoints.api import build_app
from leadflow.entrypoints.api.forms import make_token
from leadflow.entrypoints.cli import app as cli_app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import keys as key_service
from leadflow.services import mailing, signing
from leadflow.settings import Settings

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SITE = "https://site.example/pricing"


def _url_derived_key(database_url: str) -> bytes:
    """The key leadflow used before issue 12 when LEADFLOW_SECRET_KEY was unset."""
    return hashlib.sha256(b"leadflow-development-secret:" + database_url.encode()).digest()


@contextmanager
def _server(
    db_url: str, tmp_path: Path, clock: Callable[[], datetime], **settings: Any
) -> Iterator[tuple[Services, Any]]:
    """A freshly built process (its own key cache) on the same database."""
    services = build_services(
        Settings(
            database_url=db_url,
            mail_dir=str(tmp_path / "outbox"),
            warm_reports=False,
            **settings,
        ),
        clock=clock,
    )
    try:
        with TestClient(build_app(services)) as client:
            yield services, client
    finally:
        services.close()


def _stored_keys(db_url: str) -> signing.SigningKeys:
    engine = create_db_engine(db_url)
    try:
        return signing.load_keys(engine)
    finally:
        engine.dispose()


def _a_send(services: Services, client: Any) -> int:
    """A consenting lead (through /v1/identify) and one planned marketing email to them."""
    now = services.clock()
    write = key_service.create_key(services.engine, kind="write", name="t", now=now).token
    r = client.post(
        "/v1/identify",
        json={
            "userId": "ann",
            "messageId": "identify-ann",
            "timestamp": now.isoformat(),
            "traits": {"email": "ann@acme.example", "consent": {"status": "granted"}},
        },
        auth=(write, ""),
    )
    assert r.status_code == 200, r.text
    with services.engine.begin() as conn:
        lead_id = conn.execute(select(leads.c.id)).scalar_one()
        send_id = mailing.plan_email(
            conn, idempotency_key="k1", lead_id=lead_id, subject="Hello", now=now
        )
    assert send_id is not None
    return send_id


def _click(client: Any, token: str) -> int:
    return int(client.get(f"/e/c/{token}", follow_redirects=False).status_code)


def _one_click(client: Any, token: str) -> int:
    return int(
        client.post(
            f"/u/{token}",
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).status_code
    )


def _unsubscribed(services: Services) -> bool:
    with services.engine.connect() as conn:
        return conn.execute(select(leads.c.unsubscribed_at)).scalar_one() is not None


def test_links_signed_with_the_url_derived_key_are_refused(db_url, tmp_path):
    with _server(db_url, tmp_path, lambda: T0) as (services, client):
        send_id = _a_send(services, client)
        derived = _url_derived_key(db_url)
        assert services.signing.current() != derived
        assert len(services.signing.current()) >= 64
        forged_click = email_tokens.click_token(derived, send_id, "https://evil.example/")
        assert _click(client, forged_click) == 400
        assert client.get(f"/e/o/{email_tokens.open_token(derived, send_id)}").status_code == 400
        assert _one_click(client, email_tokens.unsubscribe_token(derived, send_id)) == 400
        assert not _unsubscribed(services)
        # A hosted-form token made with the derived key is refused too.
        anon = "anon-forged"
        forged_form = make_token(derived, "white-paper", anon, T0.timestamp())
        r = client.post(
            "/f/white-paper",
            data={"email": "x@acme.example", "lf_token": forged_form, "anonymous_id": anon},
            headers={"Accept": "application/json"},
        )
        assert r.status_code == 400 and "lf_token" in r.json()["errors"]
        with services.engine.connect() as conn:
            assert conn.execute(select(form_submissions)).first() is None
        # The genuine link works.
        good = email_tokens.click_token(services.signing.current(), send_id, SITE)
        assert _click(client, good) == 302


def test_links_keep_verifying_across_a_restart(db_url, tmp_path):
    outbox = tmp_path / "outbox"
    with _server(db_url, tmp_path, lambda: T0) as (services, client):
        send_id = _a_send(services, client)
        report = mailing.deliver_planned(services, FileMailer(outbox), T0, worker_id="w1")
        assert report.sent == 1
    message = email.message_from_bytes(
        next(outbox.glob("*.eml")).read_bytes(), policy=email.policy.default
    )
    assert isinstance(message, EmailMessage)
    text = message.get_body(("plain",)).get_content()
    unsubscribe = re.search(r"/u/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", text)
    assert unsubscribe, text
    later = T0 + timedelta(days=400)
    with _server(db_url, tmp_path, lambda: later) as (services, client):
        assert client.get(f"/u/{unsubscribe.group(1)}").status_code == 200
        assert _one_click(client, unsubscribe.group(1)) == 200
        assert _unsubscribed(services)
        key = services.signing.current()
        assert email_tokens.verify(key, unsubscribe.group(1), "u").send_id == send_id


@pytest.mark.parametrize("grace_hours", [24.0, 2.0])
def test_after_rotation_old_links_verify_during_the_window_only(db_url, tmp_path, grace_hours):
    with _server(db_url, tmp_path, lambda: T0) as (services, client):
        send_id = _a_send(services, client)
        old = services.signing.current()
    url = db_url
    assert (
        run_guarded(
            cli_app, ["secret", "rotate", "--grace-hours", str(grace_hours), "--database-url", url]
        )
        == 0
    )
    engine = create_db_engine(url)
    with engine.connect() as conn:
        row = conn.execute(select(signing_secrets)).one()
    engine.dispose()
    rotated_at = row.created_at
    grace = timedelta(hours=grace_hours)
    assert row.previous_valid_until == rotated_at + grace
    old_link = email_tokens.click_token(old, send_id, SITE)
    old_unsubscribe = email_tokens.unsubscribe_token(old, send_id)

    just_inside = rotated_at + grace - timedelta(seconds=1)
    with _server(url, tmp_path, lambda: just_inside) as (services, client):
        new = services.signing.current()
        assert new != old
        assert _click(client, old_link) == 302
        assert _click(client, email_tokens.click_token(new, send_id, SITE)) == 302
        # New links are signed with the new key only.
        key = services.signing.current()
        assert email_tokens.verify(key, email_tokens.click_token(key, send_id, SITE), "c")

    after = rotated_at + grace
    with _server(url, tmp_path, lambda: after) as (services, client):
        assert _click(client, old_link) == 400
        assert _one_click(client, old_unsubscribe) == 400
        assert not _unsubscribed(services)
        assert _click(client, email_tokens.click_token(new, send_id, SITE)) == 302


def test_a_key_rotated_by_another_process_is_picked_up_without_waiting(db_url, tmp_path):
    ticks = [1000.0]
    with _server(db_url, tmp_path, lambda: T0) as (services, client):
        send_id = _a_send(services, client)
        services.signing = signing.SigningKeyStore(services.engine, monotonic=lambda: ticks[0])
        client.app.state.services.signing = services.signing
        before = services.signing.current()
        # Another process (here: another engine) rotates; this one still caches the old key.
        other = create_db_engine(db_url)
        new = signing.rotate(other, T0).current
        other.dispose()
        ticks[0] += signing.RETRY_AFTER  # no time for a scheduled refresh has passed
        assert services.signing.keys().current == before
        assert _click(client, email_tokens.click_token(new, send_id, SITE)) == 302
        assert services.signing.current() == new


def test_the_secret_key_setting_wins_and_rotation_then_refuses(
    db_url, tmp_path, capsys, monkeypatch
):
    configured = "k" * 40
    with _server(db_url, tmp_path, lambda: T0, secret_key=configured) as (services, client):
        send_id = _a_send(services, client)
        assert services.signing.current() == configured.encode()
        stored = signing.load_keys(services.engine).current
        assert _click(client, email_tokens.click_token(stored, send_id, SITE)) == 400
        assert _click(client, email_tokens.click_token(configured.encode(), send_id, SITE)) == 302
    monkeypatch.setenv("LEADFLOW_SECRET_KEY", configured)
    before = _stored_keys(db_url)
    assert run_guarded(cli_app, ["secret", "rotate", "--database-url", db_url]) == 1
    assert "LEADFLOW_SECRET_KEY is set" in capsys.readouterr().err
    assert _stored_keys(db_url) == before
