"""Alembic migrations: they build exactly the declared schema and keep rows on upgrade."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text
from tests.conftest import PG_URL

from leadflow.adapters.db import migrate
from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import accounts, events, leads, metadata, signing_secrets
from leadflow.services import signing


def _fresh_url(backend: str, tmp_path) -> tuple[str, object]:
    """An empty database (no migrations yet) and a cleanup callable."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}", lambda: None
    schema = f"lf_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{PG_URL}?options=-csearch_path%3D{schema}", drop


@pytest.fixture
def fresh_engine(backend, tmp_path):
    url, cleanup = _fresh_url(backend, tmp_path)
    engine = create_db_engine(url)
    yield engine
    engine.dispose()
    cleanup()


def test_migrations_build_exactly_the_declared_schema(fresh_engine):
    migrate.upgrade(fresh_engine)
    with fresh_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [
            d
            for d in compare_metadata(ctx, metadata)
            if d[0] != "add_index" or "lower" not in str(d)
        ]
    assert diff == []
    assert migrate.current_revision(fresh_engine) == migrate.head_revision()


def test_upgrade_step_by_step_keeps_every_row(fresh_engine):
    revisions = migrate.revisions_in_order()
    migrate.upgrade(fresh_engine, revisions[0])
    now = datetime.now(UTC)
    with fresh_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO accounts (name, domain, is_target, traits, created_at, updated_at) "
                "VALUES ('Acme', 'acme.example', false, '{}', :t, :t)"
            ),
            {"t": now.replace(tzinfo=None)},
        )
        for i in range(25):
            conn.execute(
                text(
                    "INSERT INTO leads (email, consent_status, attributes, created_at, updated_at)"
                    " VALUES (:e, 'unknown', '{}', :t, :t)"
                ),
                {"e": f"p{i}@acme.example", "t": now.replace(tzinfo=None)},
            )
            conn.execute(
                text(
                    "INSERT INTO events (message_id, type, name, properties, context, "
                    "occurred_at, received_at) VALUES (:m, 'track', 'x', '{}', '{}', :t, :t)"
                ),
                {"m": f"m{i}", "t": now.replace(tzinfo=None)},
            )
    for revision in revisions[1:]:
        migrate.upgrade(fresh_engine, revision)
    migrate.upgrade(fresh_engine)  # idempotent at head
    with fresh_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(leads)).scalar_one() == 25
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 25
        assert conn.execute(select(accounts.c.domain)).scalar_one() == "acme.example"
        emails = set(conn.execute(select(leads.c.email)).scalars())
    assert emails == {f"p{i}@acme.example" for i in range(25)}


def test_a_migrated_database_gets_its_own_random_signing_key(fresh_engine):
    """Migration 0012 stores a random key: nothing about it follows from the URL."""
    migrate.upgrade(fresh_engine)
    with fresh_engine.connect() as conn:
        rows = conn.execute(select(signing_secrets)).all()
    assert len(rows) == 1
    secret = rows[0].secret
    assert len(secret) >= 64 and rows[0].previous_secret is None
    url = fresh_engine.url.render_as_string(hide_password=False).encode()
    derived = hashlib.sha256(b"leadflow-development-secret:" + url).digest()
    assert signing.load_keys(fresh_engine).current == secret.encode() != derived
    migrate.upgrade(fresh_engine)  # at head: the key stays
    assert signing.load_keys(fresh_engine).current == secret.encode()
    with fresh_engine.begin() as conn:  # a database that lost its row gets a new key
        conn.execute(signing_secrets.delete())
    again = signing.load_keys(fresh_engine).current
    assert again != secret.encode() and len(again) >= 64
