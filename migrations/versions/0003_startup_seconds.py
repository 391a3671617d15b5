"""run.startup_s and fl_round.startup_s: one-off start-up time kept apart from the rounds' training time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("startup_s", sa.Double(), server_default="0", nullable=False))
    with op.batch_alter_table("fl_round", schema=None) as batch_op:
        batch_op.add_column(sa.Column("startup_s", sa.Double(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("fl_round", schema=None) as batch_op:
        batch_op.drop_column("startup_s")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("startup_s")
