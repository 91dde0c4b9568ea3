"""sales hand-off: reps, assignments, ready queue, opportunities and their contacts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _lead_fk(table: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["lead_id"], ["leads.id"], name=op.f(f"fk_{table}_lead_id_leads"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "sales_reps",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("daily_capacity", sa.Integer(), nullable=False),
        sa.Column("territories", _JSON, nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("daily_capacity >= 0", name=op.f("ck_sales_reps_capacity_not_negative")),
        sa.CheckConstraint("weight > 0", name=op.f("ck_sales_reps_weight_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sales_reps")),
        sa.UniqueConstraint("key", name=op.f("uq_sales_reps_key")),
    )
    op.create_table(
        "assignments",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("active_lead_id", _ID, nullable=True),
        sa.Column("rep_key", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", _JSON, nullable=False),
        sa.Column("escalated_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("close_reason", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "status in ('routed', 'accepted', 'rejected', 'escalated', 'rerouted', 'closed')",
            name=op.f("ck_assignments_status_known"),
        ),
        _lead_fk("assignments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignments")),
        sa.UniqueConstraint("active_lead_id", name=op.f("uq_assignments_active_lead_id")),
    )
    op.create_index("ix_assignments_lead_id", "assignments", ["lead_id"])
    op.create_index("ix_assignments_rep_key_assigned_at", "assignments", ["rep_key", "assigned_at"])
    op.create_index("ix_assignments_status_due_at", "assignments", ["status", "due_at"])
    op.create_table(
        "ready_queue",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("exclude_reps", _JSON, nullable=False),
        _lead_fk("ready_queue"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ready_queue")),
        sa.UniqueConstraint("lead_id", name=op.f("uq_ready_queue_lead_id")),
    )
    op.create_index("ix_ready_queue_priority", "ready_queue", ["priority"])
    op.create_table(
        "opportunities",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("lead_id", _ID, nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("expected_close", sa.Date(), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("lost_reason", sa.String(length=64), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "stage in ('open', 'won', 'lost')", name=op.f("ck_opportunities_stage_known")
        ),
        sa.CheckConstraint(
            "amount is null or amount >= 0", name=op.f("ck_opportunities_amount_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_opportunities_account_id_accounts"),
            ondelete="SET NULL",
        ),
        _lead_fk("opportunities", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opportunities")),
        sa.UniqueConstraint("external_id", name=op.f("uq_opportunities_external_id")),
    )
    op.create_index("ix_opportunities_account_id", "opportunities", ["account_id"])
    op.create_index("ix_opportunities_lead_id", "opportunities", ["lead_id"])
    op.create_table(
        "opportunity_contacts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("opportunity_id", _ID, nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["opportunity_id"],
            ["opportunities.id"],
            name=op.f("fk_opportunity_contacts_opportunity_id_opportunities"),
            ondelete="CASCADE",
        ),
        _lead_fk("opportunity_contacts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opportunity_contacts")),
    )
    op.create_index(
        "uq_opportunity_contacts_opportunity_id_lead_id",
        "opportunity_contacts",
        ["opportunity_id", "lead_id"],
        unique=True,
    )
    op.create_index("ix_opportunity_contacts_lead_id", "opportunity_contacts", ["lead_id"])


def downgrade() -> None:
    for table in (
        "opportunity_contacts",
        "opportunities",
        "ready_queue",
        "assignments",
        "sales_reps",
    ):
        op.drop_table(table)
