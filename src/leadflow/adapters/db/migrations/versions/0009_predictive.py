"""Predictive scoring: model versions and per-lead predictions

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "predictive_models",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("report", _JSON, nullable=False),
        sa.Column("features", _JSON, nullable=False),
        sa.Column("model", sa.LargeBinary(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("activated_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "kind in ('store', 'csv')", name=op.f("ck_predictive_models_kind_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictive_models")),
        sa.UniqueConstraint("version", name=op.f("uq_predictive_models_version")),
    )
    op.create_table(
        "lead_predictions",
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("contributions", _JSON, nullable=False),
        sa.Column("scored_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_lead_predictions_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_lead_predictions")),
    )
    with op.batch_alter_table("lead_predictions", schema=None) as batch_op:
        batch_op.create_index("ix_lead_predictions_version", ["version"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lead_predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_lead_predictions_version")
    op.drop_table("lead_predictions")
    op.drop_table("predictive_models")
