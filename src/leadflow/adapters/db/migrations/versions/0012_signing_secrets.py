"""signing_secrets: a random key per database signs links, form tokens and cookies

Until now, without LEADFLOW_SECRET_KEY the key was derived from the database URL, so
anyone guessing the URL could forge click redirects and one-click unsubscribes. The
upgrade stores a fresh random key; links signed with the URL-derived key stop verifying.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "signing_secrets",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("previous_secret", sa.String(length=128), nullable=True),
        sa.Column("previous_valid_until", sa.DateTime(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_signing_secrets_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_secrets")),
    )
    assert table is not None
    op.bulk_insert(
        table,
        [
            {
                "id": 1,
                "secret": secrets.token_urlsafe(48),
                "created_at": datetime.now(UTC).replace(tzinfo=None),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("signing_secrets")
