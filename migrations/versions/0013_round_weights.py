"""fl_round.weights_path: every round's global weights alone, kept after its checkpoint is dropped (Grad-CAM of
any round)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fl_round", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weights_path", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fl_round", schema=None) as batch_op:
        batch_op.drop_column("weights_path")
