"""scoring and lifecycle: lead models, lead states, stage-history log, signals, sales actions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "lead_models",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_models")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_lead_models_content_hash")),
    )
    op.create_table(
        "lead_states",
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("stage_since", sa.DateTime(), nullable=True),
        sa.Column("pause_until", sa.DateTime(), nullable=True),
        sa.Column("engagement", sa.Float(), nullable=False),
        sa.Column("fit", sa.Float(), nullable=False),
        sa.Column("fit_grade", sa.String(length=8), nullable=True),
        sa.Column("qualification", sa.Float(), nullable=False),
        sa.Column("scored_at", sa.DateTime(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("model_hash", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.DateTime(), nullable=True),
        sa.Column("revision", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_lead_states_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_lead_states")),
    )
    op.create_index("ix_lead_states_stage", "lead_states", ["stage"])
    op.create_index("ix_lead_states_engagement", "lead_states", ["engagement"])
    op.create_table(
        "stage_changes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("from_stage", sa.String(length=64), nullable=False),
        sa.Column("to_stage", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("rule", sa.String(length=255), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("cause", sa.String(length=255), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_stage_changes_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_changes")),
    )
    op.create_index("ix_stage_changes_lead_id_at", "stage_changes", ["lead_id", "at"])
    op.create_index("ix_stage_changes_to_stage_at", "stage_changes", ["to_stage", "at"])
    op.create_table(
        "signals",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("rule", sa.String(length=255), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_signals_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signals")),
    )
    op.create_index("uq_signals_name_lead_id_at", "signals", ["name", "lead_id", "at"], unique=True)
    op.create_table(
        "sales_actions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("action_id", sa.String(length=255), nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("bant", _JSON, nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_sales_actions_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sales_actions")),
        sa.UniqueConstraint("action_id", name=op.f("uq_sales_actions_action_id")),
    )
    op.create_index("ix_sales_actions_lead_id", "sales_actions", ["lead_id"])


def downgrade() -> None:
    for table in ("sales_actions", "signals", "stage_changes", "lead_states", "lead_models"):
        op.drop_table(table)
