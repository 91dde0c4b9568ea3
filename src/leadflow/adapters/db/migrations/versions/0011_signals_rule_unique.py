"""signals: unique per (name, lead, at, rule) so two segments joined at once are two signals

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("uq_signals_name_lead_id_at", table_name="signals")
    op.create_index(
        "uq_signals_name_lead_id_at_rule",
        "signals",
        ["name", "lead_id", "at", "rule"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_signals_name_lead_id_at_rule", table_name="signals")
    op.create_index("uq_signals_name_lead_id_at", "signals", ["name", "lead_id", "at"], unique=True)
