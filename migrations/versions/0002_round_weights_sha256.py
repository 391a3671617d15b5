"""fl_round.weights_sha256: digest of the global weights each round's checkpoint holds

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fl_round", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weights_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fl_round", schema=None) as batch_op:
        batch_op.drop_column("weights_sha256")
