"""webhook_deliveries: index by (source_kind, source_id)

Erasure and export find a person's deliveries through the signals and stage changes they
were made from; without this index that is a scan of every delivery ever made.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_deliveries_source_kind_source_id",
        "webhook_deliveries",
        ["source_kind", "source_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_source_kind_source_id", table_name="webhook_deliveries")
