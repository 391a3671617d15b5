"""Hospital sites and their tasks (the /api/site/ pull protocol)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=60), nullable=True),
        sa.Column("enrollment_sha256", sa.String(length=64), nullable=True),
        sa.Column("enrollment_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent_version", sa.String(length=40), nullable=True),
        sa.Column("hardware", sa.JSON(), nullable=True),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("busy_with", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site")),
        sa.UniqueConstraint("enrollment_sha256", name=op.f("uq_site_enrollment_sha256")),
        sa.UniqueConstraint("name", name=op.f("uq_site_name")),
    )
    op.create_table(
        "site_task",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'taken', 'done', 'failed', 'late', 'expired')", name=op.f("ck_site_task_status_known")
        ),
        sa.CheckConstraint("kind IN ('train', 'statistics', 'evaluate')", name=op.f("ck_site_task_kind_known")),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_site_task_run_id_run"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_site_task_site_id_site"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_task")),
    )
    op.create_index(op.f("ix_site_task_run_id"), "site_task", ["run_id"], unique=False)
    op.create_index("ix_site_task_site_status", "site_task", ["site_id", "status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_site_task_site_status", table_name="site_task")
    op.drop_index(op.f("ix_site_task_run_id"), table_name="site_task")
    op.drop_table("site_task")
    op.drop_table("site")
