"""run.launched_by: the user whose launch made a run active, so a per-user limit on concurrent runs can count it

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("launched_by", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_run_launched_by"), ["launched_by"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_run_launched_by_user_account"), "user_account", ["launched_by"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_run_launched_by_user_account"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_run_launched_by"))
        batch_op.drop_column("launched_by")
