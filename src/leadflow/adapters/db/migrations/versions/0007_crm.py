"""CRM sync: inbound CRM updates applied (idempotency keys)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "crm_updates",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("update_id", sa.String(length=255), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("opportunity_id", _ID, nullable=True),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["opportunity_id"],
            ["opportunities.id"],
            name=op.f("fk_crm_updates_opportunity_id_opportunities"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_updates")),
        sa.UniqueConstraint("update_id", name=op.f("uq_crm_updates_update_id")),
    )
    op.create_index("ix_crm_updates_external_id", "crm_updates", ["external_id"])


def downgrade() -> None:
    op.drop_index("ix_crm_updates_external_id", table_name="crm_updates")
    op.drop_table("crm_updates")
