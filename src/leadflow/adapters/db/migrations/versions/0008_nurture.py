"""Nurture: content library, forms, programs, due work, email sends, seminars, segments

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "content_assets",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=8), nullable=False),
        sa.Column("gated", sa.Boolean(), nullable=False),
        sa.Column("industries", _JSON, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "source in ('config', 'api')", name=op.f("ck_content_assets_source_known")
        ),
        sa.CheckConstraint(
            "stage in ('early', 'middle', 'late')", name=op.f("ck_content_assets_stage_known")
        ),
        sa.CheckConstraint(
            "type in ('blog_post', 'white_paper', 'case_study', 'demo_video', 'pricing', "
            "'webinar', 'trial')",
            name=op.f("ck_content_assets_type_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_assets")),
        sa.UniqueConstraint("key", name=op.f("uq_content_assets_key")),
    )
    op.create_table(
        "due_work",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ref_id", sa.BigInteger(), nullable=True),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status in ('pending', 'claimed', 'done', 'failed', 'cancelled')",
            name=op.f("ck_due_work_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_due_work")),
        sa.UniqueConstraint("key", name=op.f("uq_due_work_key")),
    )
    with op.batch_alter_table("due_work", schema=None) as batch_op:
        batch_op.create_index("ix_due_work_status_due_at", ["status", "due_at"], unique=False)

    op.create_table(
        "segments",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("criteria", _JSON, nullable=False),
        sa.Column("sync", sa.Boolean(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("key", name=op.f("uq_segments_key")),
    )
    op.create_table(
        "seminars",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("asset_key", sa.String(length=64), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind in ('seminar', 'webinar')", name=op.f("ck_seminars_kind_known")),
        sa.CheckConstraint(
            "status in ('scheduled', 'held', 'cancelled')", name=op.f("ck_seminars_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seminars")),
        sa.UniqueConstraint("key", name=op.f("uq_seminars_key")),
    )
    op.create_table(
        "email_sends",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("program_key", sa.String(length=64), nullable=True),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("seminar_id", sa.BigInteger(), nullable=True),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("asset_key", sa.String(length=64), nullable=True),
        sa.Column("to_email", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("skip_reason", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("planned_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("opened_at", sa.DateTime(), nullable=True),
        sa.Column("clicked_at", sa.DateTime(), nullable=True),
        sa.Column("unsubscribed_at", sa.DateTime(), nullable=True),
        sa.Column("bounced_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "category in ('marketing', 'transactional')", name=op.f("ck_email_sends_category_known")
        ),
        sa.CheckConstraint(
            "status in ('planned', 'sending', 'sent', 'failed', 'skipped')",
            name=op.f("ck_email_sends_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_email_sends_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_sends")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_email_sends_idempotency_key")),
        sa.UniqueConstraint("message_id", name=op.f("uq_email_sends_message_id")),
    )
    with op.batch_alter_table("email_sends", schema=None) as batch_op:
        batch_op.create_index(
            "ix_email_sends_lead_id_sent_at", ["lead_id", "sent_at"], unique=False
        )
        batch_op.create_index(
            "ix_email_sends_program_key_step_id", ["program_key", "step_id"], unique=False
        )
        batch_op.create_index("ix_email_sends_status", ["status"], unique=False)

    op.create_table(
        "form_submissions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("form_key", sa.String(length=64), nullable=False),
        sa.Column("lead_id", _ID, nullable=True),
        sa.Column("anonymous_id", sa.String(length=255), nullable=True),
        sa.Column("fields", _JSON, nullable=False),
        sa.Column("consent", _JSON, nullable=True),
        sa.Column("asset_key", sa.String(length=64), nullable=True),
        sa.Column("page_url", sa.Text(), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("submitted_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_form_submissions_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_form_submissions")),
    )
    with op.batch_alter_table("form_submissions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_form_submissions_form_key_submitted_at", ["form_key", "submitted_at"], unique=False
        )
        batch_op.create_index("ix_form_submissions_lead_id", ["lead_id"], unique=False)

    op.create_table(
        "program_enrollments",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("program_key", sa.String(length=64), nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("active_key", sa.String(length=96), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(), nullable=False),
        sa.Column("last_step_at", sa.DateTime(), nullable=True),
        sa.Column("exited_at", sa.DateTime(), nullable=True),
        sa.Column("exit_reason", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "status in ('active', 'completed', 'exited')",
            name=op.f("ck_program_enrollments_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_program_enrollments_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_enrollments")),
        sa.UniqueConstraint("active_key", name=op.f("uq_program_enrollments_active_key")),
    )
    with op.batch_alter_table("program_enrollments", schema=None) as batch_op:
        batch_op.create_index("ix_program_enrollments_lead_id", ["lead_id"], unique=False)
        batch_op.create_index(
            "ix_program_enrollments_program_key_status", ["program_key", "status"], unique=False
        )

    op.create_table(
        "segment_changes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("segment_id", _ID, nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("change", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "change in ('join', 'leave')", name=op.f("ck_segment_changes_change_known")
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_segment_changes_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_changes_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_changes")),
    )
    with op.batch_alter_table("segment_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_segment_changes_segment_id_id", ["segment_id", "id"], unique=False
        )

    op.create_table(
        "segment_members",
        sa.Column("segment_id", _ID, nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("joined_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_segment_members_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_members_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "lead_id", name=op.f("pk_segment_members")),
    )
    with op.batch_alter_table("segment_members", schema=None) as batch_op:
        batch_op.create_index("ix_segment_members_lead_id", ["lead_id"], unique=False)

    op.create_table(
        "seminar_attendees",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("seminar_id", _ID, nullable=False),
        sa.Column("lead_id", _ID, nullable=False),
        sa.Column("invited_at", sa.DateTime(), nullable=True),
        sa.Column("registered_at", sa.DateTime(), nullable=True),
        sa.Column("reminded_at", sa.DateTime(), nullable=True),
        sa.Column("attended_at", sa.DateTime(), nullable=True),
        sa.Column("no_show_at", sa.DateTime(), nullable=True),
        sa.Column("followed_up_at", sa.DateTime(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_seminar_attendees_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["seminar_id"],
            ["seminars.id"],
            name=op.f("fk_seminar_attendees_seminar_id_seminars"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seminar_attendees")),
    )
    with op.batch_alter_table("seminar_attendees", schema=None) as batch_op:
        batch_op.create_index("ix_seminar_attendees_lead_id", ["lead_id"], unique=False)
        batch_op.create_index(
            "uq_seminar_attendees_seminar_id_lead_id", ["seminar_id", "lead_id"], unique=True
        )

    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unsubscribed_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("bounced_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_column("bounced_at")
        batch_op.drop_column("unsubscribed_at")

    with op.batch_alter_table("seminar_attendees", schema=None) as batch_op:
        batch_op.drop_index("uq_seminar_attendees_seminar_id_lead_id")
        batch_op.drop_index("ix_seminar_attendees_lead_id")

    op.drop_table("seminar_attendees")
    with op.batch_alter_table("segment_members", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_members_lead_id")

    op.drop_table("segment_members")
    with op.batch_alter_table("segment_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_changes_segment_id_id")

    op.drop_table("segment_changes")
    with op.batch_alter_table("program_enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_program_enrollments_program_key_status")
        batch_op.drop_index("ix_program_enrollments_lead_id")

    op.drop_table("program_enrollments")
    with op.batch_alter_table("form_submissions", schema=None) as batch_op:
        batch_op.drop_index("ix_form_submissions_lead_id")
        batch_op.drop_index("ix_form_submissions_form_key_submitted_at")

    op.drop_table("form_submissions")
    with op.batch_alter_table("email_sends", schema=None) as batch_op:
        batch_op.drop_index("ix_email_sends_status")
        batch_op.drop_index("ix_email_sends_program_key_step_id")
        batch_op.drop_index("ix_email_sends_lead_id_sent_at")

    op.drop_table("email_sends")
    op.drop_table("seminars")
    op.drop_table("segments")
    with op.batch_alter_table("due_work", schema=None) as batch_op:
        batch_op.drop_index("ix_due_work_status_due_at")

    op.drop_table("due_work")
    op.drop_table("content_assets")
