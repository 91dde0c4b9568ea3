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
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
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
    # Look-alike target discovery (issue 8): similarity to won accounts (0-1), the account
    # valued as an opportunity of its segment's average won deal, and when it was marked.
    Column("target_score", Float, nullable=True),
    Column("target_value", Float, nullable=True),
    Column("targeted_at", UTCDateTime, nullable=True),
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
    # Set when the person was erased (privacy): the row stays, stripped of personal data,
    # so counts, stages and attribution stay right.
    Column("erased_at", UTCDateTime, nullable=True),
    # Email deliverability (issue 4): an unsubscribe or a hard bounce stops marketing mail.
    Column("unsubscribed_at", UTCDateTime, nullable=True),
    Column("bounced_at", UTCDateTime, nullable=True),
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

# Dashboard users (issue 7). Emails are stored lower-cased; ``sales_rep_key`` links a
# sales user to the owner name used on accounts (``accounts.owner``).
users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("locale", String(8), nullable=False, default="en"),
    # IANA time zone the dashboard shows this user's dates in (None: the sales time zone).
    Column("timezone", String(64), nullable=True),
    Column("sales_rep_key", String(255), nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_login_at", UTCDateTime, nullable=True),
    CheckConstraint("email = lower(email)", name="email_lowercase"),
    CheckConstraint("role in ('admin', 'marketer', 'sales', 'executive')", name="role_known"),
    CheckConstraint("locale in ('en', 'ko')", name="locale_known"),
)

# Server-side dashboard sessions (revocable). Only a SHA-256 of the cookie token is stored.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_web_sessions_user_id", web_sessions.c.user_id)
# Dashboard look-ups at 1,000,000 leads: filters, sales-rep scoping and name search.
Index("ix_accounts_owner", accounts.c.owner)
Index("ix_leads_source_id", leads.c.source, leads.c.id)
Index("ix_leads_first_name_lower", func.lower(leads.c.first_name))
Index("ix_leads_last_name_lower", func.lower(leads.c.last_name))

ALL_TABLES = [accounts, leads, identities, events, api_keys, suppressions, users, web_sessions]

# --- scoring and lifecycle (issue 3) ------------------------------------------------------

# Every lead model (leadflow.yaml) ever applied; exactly one is active.
lead_models = Table(
    "lead_models",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False, unique=True),
    Column("source", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("activated_at", UTCDateTime, nullable=True),
    Column("active", Boolean, nullable=False, default=False, server_default=false()),
)

# The derived state of each lead under the active model: a cache of core.lifecycle.replay,
# always recomputable from events and sales actions.
lead_states = Table(
    "lead_states",
    metadata,
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True),
    Column("stage", String(64), nullable=False),
    Column("stage_since", UTCDateTime, nullable=True),
    Column("pause_until", UTCDateTime, nullable=True),
    Column("engagement", Float, nullable=False, default=0.0),
    Column("fit", Float, nullable=False, default=0.0),
    Column("fit_grade", String(8), nullable=True),
    Column("qualification", Float, nullable=False, default=0.0),
    Column("scored_at", UTCDateTime, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("model_hash", String(64), nullable=False),
    # The stage log mirrors the model's replay only after this time: a model switch
    # (``leadflow model apply``) keeps the history that happened and starts a new epoch.
    Column("epoch", UTCDateTime, nullable=True),
    # Bumped by every write: a process's cached state of the lead is valid only while equal.
    Column("revision", Integer, nullable=False, default=0, server_default="0"),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_lead_states_stage", lead_states.c.stage)
Index("ix_lead_states_engagement", lead_states.c.engagement)

# The stage-history log: the source of truth for funnel analytics.
stage_changes = Table(
    "stage_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("from_stage", String(64), nullable=False),
    Column("to_stage", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("rule", String(255), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("cause", String(255), nullable=True),
    Column("recorded_at", UTCDateTime, nullable=False),
)
Index("ix_stage_changes_lead_id_at", stage_changes.c.lead_id, stage_changes.c.at)
Index("ix_stage_changes_to_stage_at", stage_changes.c.to_stage, stage_changes.c.at)

# Signals for the outside world (lead.returning, ...): an outbox the hand-off issue delivers.
signals = Table(
    "signals",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("rule", String(255), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("data", JSONType, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
)
# One signal per name, lead, moment and rule (two segments joined at once are two signals).
Index(
    "uq_signals_name_lead_id_at_rule",
    signals.c.name,
    signals.c.lead_id,
    signals.c.at,
    signals.c.rule,
    unique=True,
)

# Sales actions (accept, not_now, qualify, win, lose, ...): inputs of the stage machine.
sales_actions = Table(
    "sales_actions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("action_id", String(255), nullable=False, unique=True),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("amount", Float, nullable=True),
    Column("bant", JSONType, nullable=True),
    Column("reason", String(255), nullable=True),
    Column("actor", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_sales_actions_lead_id", sales_actions.c.lead_id)

ALL_TABLES += [lead_models, lead_states, stage_changes, signals, sales_actions]

# --- sales hand-off (issue 5) -------------------------------------------------------------

# The sales team. Reps listed in leadflow.yaml (``sales.reps``) are added on first routing;
# /api/reps manages them afterwards. ``key`` is what accounts.owner and assignments name.
sales_reps = Table(
    "sales_reps",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("email", String(320), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("daily_capacity", Integer, nullable=False),
    Column("territories", JSONType, nullable=False, default=list),
    Column("weight", Float, nullable=False, default=1.0),
    Column("source", String(16), nullable=False, default="api"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("daily_capacity >= 0", name="capacity_not_negative"),
    CheckConstraint("weight > 0", name="weight_positive"),
)

# Hand-offs: one row per lead given to a rep. ``active_lead_id`` equals ``lead_id`` while
# the assignment is open (routed, accepted, escalated) and is NULL otherwise: its unique
# constraint makes "one open assignment per lead" hold on both backends.
assignments = Table(
    "assignments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("active_lead_id", BigId, nullable=True, unique=True),
    Column("rep_key", String(64), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("priority", Float, nullable=False, default=0.0),
    Column("assigned_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("summary", JSONType, nullable=False, default=dict),
    Column("escalated_at", UTCDateTime, nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("close_reason", String(64), nullable=True),
    CheckConstraint(
        "status in ('routed', 'accepted', 'rejected', 'escalated', 'rerouted', 'closed')",
        name="status_known",
    ),
)
Index("ix_assignments_lead_id", assignments.c.lead_id)
Index("ix_assignments_rep_key_assigned_at", assignments.c.rep_key, assignments.c.assigned_at)
Index("ix_assignments_status_due_at", assignments.c.status, assignments.c.due_at)

# MQLs waiting for a rep with capacity (drained highest priority first).
ready_queue = Table(
    "ready_queue",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False, unique=True
    ),
    Column("priority", Float, nullable=False, default=0.0),
    Column("queued_at", UTCDateTime, nullable=False),
    Column("reason", String(16), nullable=False, default="handoff"),
    # Reps the lead must not go back to (re-routed after an SLA breach).
    Column("exclude_reps", JSONType, nullable=False, default=list),
)
Index("ix_ready_queue_priority", ready_queue.c.priority)

opportunities = Table(
    "opportunities",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("external_id", String(255), nullable=True, unique=True),
    Column("account_id", BigId, ForeignKey("accounts.id", ondelete="SET NULL"), nullable=True),
    # The primary contact (the lead sales qualified).
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="SET NULL"), nullable=True),
    Column("name", String(255), nullable=False),
    Column("amount", Float, nullable=True),
    Column("currency", String(3), nullable=False, default="KRW"),
    Column("expected_close", Date, nullable=True),
    Column("stage", String(16), nullable=False, default="open"),
    Column("lost_reason", String(64), nullable=True),
    Column("owner", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    # What a CRM backfill gives besides the deal's own fields: the product, and every other
    # column of the export, typed (migration 0015).
    Column("product", String(255), nullable=True),
    Column("attributes", JSONType, nullable=True),
    CheckConstraint("stage in ('open', 'won', 'lost')", name="stage_known"),
    CheckConstraint("amount is null or amount >= 0", name="amount_not_negative"),
)
Index("ix_opportunities_account_id", opportunities.c.account_id)
Index("ix_opportunities_lead_id", opportunities.c.lead_id)

# The buying committee of an opportunity: people with their buying roles.
opportunity_contacts = Table(
    "opportunity_contacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "opportunity_id",
        BigId,
        ForeignKey("opportunities.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(32), nullable=False),
)
Index(
    "uq_opportunity_contacts_opportunity_id_lead_id",
    opportunity_contacts.c.opportunity_id,
    opportunity_contacts.c.lead_id,
    unique=True,
)
Index("ix_opportunity_contacts_lead_id", opportunity_contacts.c.lead_id)

ALL_TABLES += [sales_reps, assignments, ready_queue, opportunities, opportunity_contacts]

# Notes, calls and tasks sales logs on a lead (a task has a due time and, once done, done_at).
lead_notes = Table(
    "lead_notes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("body", String(2000), nullable=False),
    Column("due_at", UTCDateTime, nullable=True),
    Column("done_at", UTCDateTime, nullable=True),
    Column("author", String(255), nullable=True),
    Column("at", UTCDateTime, nullable=False),
    CheckConstraint("kind in ('note', 'call', 'task')", name="kind_known"),
)
Index("ix_lead_notes_lead_id_at", lead_notes.c.lead_id, lead_notes.c.at)
ALL_TABLES.append(lead_notes)

# --- outbound webhooks (issue 5) ----------------------------------------------------------

# Subscriptions. ``event_types`` is a list of event names or ["*"]. During a rotation the
# previous secret stays valid (both signatures are sent) until 24 h after ``rotated_at``.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False),
    Column("description", String(255), nullable=True),
    Column("event_types", JSONType, nullable=False, default=list),
    Column("secret", String(128), nullable=False),
    Column("previous_secret", String(128), nullable=True),
    Column("rotated_at", UTCDateTime, nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One row per (endpoint, event): the delivery outbox and its dead-letter list.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "endpoint_id",
        BigId,
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("source_kind", String(16), nullable=False),
    Column("source_id", BigInteger, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", JSONType, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    # The claim of the worker sending it (adapters.db.claims): a lease, past it another
    # worker may take the delivery again.
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    CheckConstraint("status in ('pending', 'delivered', 'dead')", name="status_known"),
)
Index(
    "ix_webhook_deliveries_source_kind_source_id",
    webhook_deliveries.c.source_kind,
    webhook_deliveries.c.source_id,
)
Index(
    "uq_webhook_deliveries_endpoint_id_event_type_source_id",
    webhook_deliveries.c.endpoint_id,
    webhook_deliveries.c.event_type,
    webhook_deliveries.c.source_id,
    unique=True,
)
Index(
    "ix_webhook_deliveries_status_next_attempt_at",
    webhook_deliveries.c.status,
    webhook_deliveries.c.next_attempt_at,
)

# The delivery log: every attempt with its outcome.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        BigId,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False, default=0),
)
Index("ix_webhook_attempts_delivery_id", webhook_attempts.c.delivery_id)

# High-water marks of outbox scans (``stage_changes`` has no delivered column).
webhook_cursors = Table(
    "webhook_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_id", BigInteger, nullable=False, default=0),
    # Rows at or below it are never scanned (they predate the first endpoint, or came
    # while no endpoint was active: services/outbox.py).
    Column("floor_id", BigInteger, nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
)

ALL_TABLES += [webhook_endpoints, webhook_deliveries, webhook_attempts, webhook_cursors]

# --- CRM sync (issue 5) -------------------------------------------------------------------

# Inbound CRM updates already applied, by their idempotency key (``update_id``): the same
# update again changes nothing and returns the first result.
crm_updates = Table(
    "crm_updates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("update_id", String(255), nullable=False, unique=True),
    Column("external_id", String(255), nullable=False),
    Column(
        "opportunity_id",
        BigId,
        ForeignKey("opportunities.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("payload", JSONType, nullable=False, default=dict),
    Column("result", JSONType, nullable=False, default=dict),
    Column("received_at", UTCDateTime, nullable=False),
)
Index("ix_crm_updates_external_id", crm_updates.c.external_id)

ALL_TABLES += [crm_updates]

# --- nurture, forms, email, seminars, segments (issue 4) ----------------------------------

# The content library: assets from leadflow.yaml (``source='config'``, synced when a model
# is applied) and assets managed through /api/content and the CLI (``source='api'``).
content_assets = Table(
    "content_assets",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("title", String(255), nullable=False),
    Column("type", String(32), nullable=False),
    Column("stage", String(8), nullable=False),
    Column("gated", Boolean, nullable=False, default=False),
    Column("industries", JSONType, nullable=False, default=list),
    Column("url", Text, nullable=False),
    Column("source", String(8), nullable=False, default="api"),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(
        "type in ('blog_post', 'white_paper', 'case_study', 'demo_video', 'pricing', "
        "'webinar', 'trial')",
        name="type_known",
    ),
    CheckConstraint("stage in ('early', 'middle', 'late')", name="stage_known"),
    CheckConstraint("source in ('config', 'api')", name="source_known"),
)

# Every hosted-form submission, with the consent given (text, time, page, address).
form_submissions = Table(
    "form_submissions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("form_key", String(64), nullable=False),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=True),
    Column("anonymous_id", String(255), nullable=True),
    Column("fields", JSONType, nullable=False, default=dict),
    Column("consent", JSONType, nullable=True),
    Column("asset_key", String(64), nullable=True),
    Column("page_url", Text, nullable=True),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("submitted_at", UTCDateTime, nullable=False),
)
Index(
    "ix_form_submissions_form_key_submitted_at",
    form_submissions.c.form_key,
    form_submissions.c.submitted_at,
)
Index("ix_form_submissions_lead_id", form_submissions.c.lead_id)

# A lead in a nurture program. ``active_key`` = "<program>:<lead id>" while active and NULL
# afterwards: its unique constraint keeps one active enrolment per program and lead.
program_enrollments = Table(
    "program_enrollments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("program_key", String(64), nullable=False),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("active_key", String(96), nullable=True, unique=True),
    Column("status", String(16), nullable=False, default="active"),
    # Index of the next step to run (== len(steps) when done).
    Column("step_index", Integer, nullable=False, default=0),
    Column("enrolled_at", UTCDateTime, nullable=False),
    Column("last_step_at", UTCDateTime, nullable=True),
    Column("exited_at", UTCDateTime, nullable=True),
    Column("exit_reason", String(64), nullable=True),
    CheckConstraint("status in ('active', 'completed', 'exited')", name="status_known"),
)
Index("ix_program_enrollments_lead_id", program_enrollments.c.lead_id)
Index(
    "ix_program_enrollments_program_key_status",
    program_enrollments.c.program_key,
    program_enrollments.c.status,
)

# Due work: rows with a due time, claimed by workers (adapters.db.claims).
# ``key`` makes scheduling idempotent (e.g. "step:<enrollment>:<step index>").
due_work = Table(
    "due_work",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("ref_id", BigInteger, nullable=True),
    Column("data", JSONType, nullable=False, default=dict),
    Column("due_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("claimed_by", String(64), nullable=True),
    # A claim is a lease: past it, another worker may take the row again (crash recovery).
    Column("lease_until", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("done_at", UTCDateTime, nullable=True),
    CheckConstraint(
        "status in ('pending', 'claimed', 'done', 'failed', 'cancelled')", name="status_known"
    ),
)
Index("ix_due_work_status_due_at", due_work.c.status, due_work.c.due_at)

# Every email leadflow decided to send. The row is written (with its idempotency key and
# RFC 5322 Message-ID) before the message goes to SMTP; a crash between the two is
# reconciled on restart, so a step is never lost and never sent twice.
email_sends = Table(
    "email_sends",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("category", String(16), nullable=False, default="marketing"),
    Column("program_key", String(64), nullable=True),
    Column("step_id", String(64), nullable=True),
    Column("seminar_id", BigInteger, nullable=True),
    Column("template", String(64), nullable=False),
    Column("asset_key", String(64), nullable=True),
    Column("to_email", String(320), nullable=False),
    Column("subject", String(998), nullable=False),
    Column("status", String(16), nullable=False, default="planned"),
    Column("skip_reason", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("planned_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("opened_at", UTCDateTime, nullable=True),
    Column("clicked_at", UTCDateTime, nullable=True),
    Column("unsubscribed_at", UTCDateTime, nullable=True),
    Column("bounced_at", UTCDateTime, nullable=True),
    # Delivery bookkeeping: the next retry after a temporary failure, and the claim of the
    # worker handing the row to SMTP (a lease: past it, reconcile may take the row back).
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    CheckConstraint("category in ('marketing', 'transactional')", name="category_known"),
    CheckConstraint(
        "status in ('planned', 'sending', 'sent', 'failed', 'skipped')", name="status_known"
    ),
)
Index("ix_email_sends_lead_id_sent_at", email_sends.c.lead_id, email_sends.c.sent_at)
Index("ix_email_sends_program_key_step_id", email_sends.c.program_key, email_sends.c.step_id)
Index("ix_email_sends_status", email_sends.c.status)
Index("ix_email_sends_status_next_attempt_at", email_sends.c.status, email_sends.c.next_attempt_at)

# Seminars and webinars, and each person's way through one:
# invited -> registered -> reminded -> attended | no-show -> followed up.
seminars = Table(
    "seminars",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("title", String(255), nullable=False),
    Column("kind", String(16), nullable=False, default="webinar"),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=True),
    Column("location", Text, nullable=True),
    Column("asset_key", String(64), nullable=True),
    Column("capacity", Integer, nullable=True),
    Column("status", String(16), nullable=False, default="scheduled"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("kind in ('seminar', 'webinar')", name="kind_known"),
    CheckConstraint("status in ('scheduled', 'held', 'cancelled')", name="status_known"),
)

seminar_attendees = Table(
    "seminar_attendees",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("seminar_id", BigId, ForeignKey("seminars.id", ondelete="CASCADE"), nullable=False),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("invited_at", UTCDateTime, nullable=True),
    Column("registered_at", UTCDateTime, nullable=True),
    Column("reminded_at", UTCDateTime, nullable=True),
    Column("attended_at", UTCDateTime, nullable=True),
    Column("no_show_at", UTCDateTime, nullable=True),
    Column("followed_up_at", UTCDateTime, nullable=True),
    Column("source", String(32), nullable=True),
)
Index(
    "uq_seminar_attendees_seminar_id_lead_id",
    seminar_attendees.c.seminar_id,
    seminar_attendees.c.lead_id,
    unique=True,
)
Index("ix_seminar_attendees_lead_id", seminar_attendees.c.lead_id)

# Saved segments: named lists defined by criteria, kept current by the worker.
segments = Table(
    "segments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("criteria", JSONType, nullable=False, default=dict),
    # Send joins and leaves to webhooks (audience sync for retargeting).
    Column("sync", Boolean, nullable=False, default=False),
    Column("member_count", Integer, nullable=False, default=0),
    Column("refreshed_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("segment_id", BigId, ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True),
    Column("joined_at", UTCDateTime, nullable=False),
)
Index("ix_segment_members_lead_id", segment_members.c.lead_id)

# Joins and leaves, in order: the audience-sync feed.
segment_changes = Table(
    "segment_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("segment_id", BigId, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False),
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), nullable=False),
    Column("change", String(8), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    CheckConstraint("change in ('join', 'leave')", name="change_known"),
)
Index("ix_segment_changes_segment_id_id", segment_changes.c.segment_id, segment_changes.c.id)

ALL_TABLES += [
    content_assets,
    form_submissions,
    program_enrollments,
    due_work,
    email_sends,
    seminars,
    seminar_attendees,
    segments,
    segment_members,
    segment_changes,
]

# --- predictive scoring (issue 8) ---------------------------------------------------------

# Trained conversion models (``leadflow predict train``), each with its evaluation report and
# the pickled TrainedModel. At most one is active; training never activates one by itself.
predictive_models = Table(
    "predictive_models",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("target", String(64), nullable=False),
    Column("report", JSONType, nullable=False, default=dict),
    # Feature definition (event names, windows) and training-time distributions for drift.
    Column("features", JSONType, nullable=False, default=dict),
    Column("model", LargeBinary, nullable=False),
    Column("active", Boolean, nullable=False, default=False, server_default=false()),
    Column("activated_at", UTCDateTime, nullable=True),
    CheckConstraint("kind in ('store', 'csv')", name="kind_known"),
)

# The active model's probability per lead: the fourth score, refreshed by the worker.
lead_predictions = Table(
    "lead_predictions",
    metadata,
    Column("lead_id", BigId, ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("probability", Float, nullable=False),
    Column("contributions", JSONType, nullable=False, default=dict),
    Column("scored_at", UTCDateTime, nullable=False),
)
Index("ix_lead_predictions_version", lead_predictions.c.version)

ALL_TABLES += [predictive_models, lead_predictions]

# --- the signing secret (issue 12) ---------------------------------------------------------

# The random key that signs email tracking links, hosted-form tokens and dashboard cookies
# when LEADFLOW_SECRET_KEY is not set: one row (id 1), created by migration 0012 and again
# on first use if it is missing. After `leadflow secret rotate` the previous key still
# verifies (never signs) until ``previous_valid_until``.
signing_secrets = Table(
    "signing_secrets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("secret", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("previous_secret", String(128), nullable=True),
    Column("previous_valid_until", UTCDateTime, nullable=True),
    CheckConstraint("id = 1", name="single_row"),
)

ALL_TABLES += [signing_secrets]

# --- smart lists (issue 15) ----------------------------------------------------------------

# A saved list view: a name and the list's query string (filters, sort, columns), the
# user's own or shared with every dashboard user.
saved_views = Table(
    "saved_views",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("list", String(16), nullable=False, default="leads"),
    Column("name", String(100), nullable=False),
    Column("query", Text, nullable=False),
    Column("shared", Boolean, nullable=False, default=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("list in ('leads', 'accounts')", name="list_known"),
)
Index("ix_saved_views_user_id", saved_views.c.user_id)
# Smart-list filters and sorts at 1,000,000 leads.
Index("ix_events_utm_campaign_lead_id", events.c.utm_campaign, events.c.lead_id)
Index("ix_lead_states_fit", lead_states.c.fit)
Index("ix_lead_states_fit_grade", lead_states.c.fit_grade)

ALL_TABLES += [saved_views]
