"""SQLAlchemy 2 Core tables: the one place the schema is declared.

The same tables run on SQLite and PostgreSQL; dialect differences (JSON vs JSONB, upserts)
are kept in :mod:`leadflow.adapters.db.engine` and the repositories. Alembic migrations in
``migrations/versions`` create exactly this schema (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC, returned as aware UTC on both backends."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC time")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
# Integer primary keys that autoincrement on SQLite (rowid alias) and are BIGINT identity on PG.
BigId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    # The Segment groupId (or CRM id) the account is known by, when it came from one.
    Column("external_id", String(255), nullable=True, unique=True),
    Column("domain", String(255), nullable=True, unique=True),
    Column("industry", String(100), nullable=True),
    Column("employee_count", Integer, nullable=True),
    Column("country", String(100), nullable=True),
    Column("is_target", Boolean, nullable=False, default=False, server_default=false()),
    Column("owner", String(255), nullable=True),
    Column("traits", JSONType, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("domain = lower(domain)", name="domain_lowercase"),
)
Index("ix_accounts_name_lower", func.lower(accounts.c.name))

leads = Table(
    "leads",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # Stored lower-cased (a CHECK enforces it), so the unique index is case-insensitive.
    Column("email", String(320), nullable=True, unique=True),
    Column("user_id", String(255), nullable=True, unique=True),
    Column("first_name", String(255), nullable=True),
    Column("last_name", String(255), nullable=True),
    Column("title", String(255), nullable=True),
    Column("phone", String(64), nullable=True),
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="SET NULL"), nullable=True),
    Column("source", String(100), nullable=True),
    Column("consent_status", String(16), nullable=False, default="unknown"),
    Column("consent_at", UTCDateTime, nullable=True),
    Column("consent_method", String(255), nullable=True),
    Column("attributes", JSONType, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("email = lower(email)", name="email_lowercase"),
    CheckConstraint(
        "consent_status in ('granted', 'denied', 'unknown')", name="consent_status_known"
    ),
)
Index("ix_leads_account_id", leads.c.account_id)
Index("ix_leads_created_at", leads.c.created_at)

# An anonymous id (one browser/device) or a userId, linked to at most one lead.
identities = Table(
    "identities",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("value", String(255), nullable=False),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("kind in ('anonymous', 'user')", name="kind_known"),
)
Index("uq_identities_kind_value", identities.c.kind, identities.c.value, unique=True)
Index("ix_identities_lead_id", identities.c.lead_id)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("type", String(16), nullable=False),
    Column("name", String(255), nullable=True),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="SET NULL"), nullable=True),
    Column("anonymous_id", String(255), nullable=True),
    Column("user_id", String(255), nullable=True),
    Column("properties", JSONType, nullable=False, default=dict),
    Column("context", JSONType, nullable=False, default=dict),
    Column("page_url", Text, nullable=True),
    Column("referrer", Text, nullable=True),
    Column("utm_campaign", String(255), nullable=True),
    Column("utm_source", String(255), nullable=True),
    Column("utm_medium", String(255), nullable=True),
    Column("channel", String(32), nullable=True),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    CheckConstraint(
        "type in ('identify', 'track', 'page', 'screen', 'group', 'alias')", name="type_known"
    ),
)
Index("ix_events_lead_id_occurred_at", events.c.lead_id, events.c.occurred_at)
Index("ix_events_anonymous_id", events.c.anonymous_id)
Index("ix_events_occurred_at", events.c.occurred_at)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(255), nullable=False),
    Column("prefix", String(16), nullable=False),
    # sha256 of the whole secret; keys are long random tokens, so a fast hash is safe here.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    CheckConstraint("kind in ('write', 'admin')", name="kind_known"),
)

# Erased people: only a hash of the e-mail address, so they are never contacted again.
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email_hash", String(64), nullable=False, unique=True),
    Column("reason", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

ALL_TABLES = [accounts, leads, identities, events, api_keys, suppressions]
