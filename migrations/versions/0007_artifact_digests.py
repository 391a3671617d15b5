"""SHA-256 of every artifact as written: round checkpoints, final models and client task outputs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fl_round", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))
    op.create_table(
        "client_artifact",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("num_examples", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_client_artifact_run_id_run"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_client_artifact")),
    )
    with op.batch_alter_table("client_artifact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_client_artifact_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("client_artifact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_client_artifact_run_id"))
    op.drop_table("client_artifact")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("model_sha256")
    with op.batch_alter_table("fl_round", schema=None) as batch_op:
        batch_op.drop_column("checkpoint_sha256")
