"""run.note (why a run stopped early) and privacy_spend, the per-(site, dataset) epsilon ledger

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
    op.create_table(
        "privacy_spend",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("experiment", sa.String(length=200), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("epsilon", sa.Double(), nullable=False),
        sa.Column("delta", sa.Double(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("level IN ('sample', 'client')", name=op.f("ck_privacy_spend_level_known")),
        sa.PrimaryKeyConstraint("run_id", "site", "dataset", name=op.f("pk_privacy_spend")),
    )
    op.create_index("ix_privacy_spend_site_dataset", "privacy_spend", ["site", "dataset"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_privacy_spend_site_dataset", table_name="privacy_spend")
    op.drop_table("privacy_spend")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("note")
