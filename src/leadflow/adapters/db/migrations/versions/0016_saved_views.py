"""saved_views, and the indexes smart-list filters and sorts need at 1,000,000 leads

A saved view is a name and a list's query string, private or shared. The campaign filter
looks up events by ``utm_campaign`` then lead; the fit sort and the grade filter read
``lead_states`` by ``fit`` and ``fit_grade``.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "saved_views",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("list", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("shared", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("list in ('leads', 'accounts')", name=op.f("ck_saved_views_list_known")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_saved_views_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_views")),
    )
    op.create_index("ix_saved_views_user_id", "saved_views", ["user_id"], unique=False)
    op.create_index(
        "ix_events_utm_campaign_lead_id", "events", ["utm_campaign", "lead_id"], unique=False
    )
    op.create_index("ix_lead_states_fit", "lead_states", ["fit"], unique=False)
    op.create_index("ix_lead_states_fit_grade", "lead_states", ["fit_grade"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_lead_states_fit_grade", table_name="lead_states")
    op.drop_index("ix_lead_states_fit", table_name="lead_states")
    op.drop_index("ix_events_utm_campaign_lead_id", table_name="events")
    op.drop_index("ix_saved_views_user_id", table_name="saved_views")
    op.drop_table("saved_views")
