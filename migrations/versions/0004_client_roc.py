"""client_round.roc: the global model's ROC on each client's own test set, from its grid counts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("client_round", schema=None) as batch_op:
        batch_op.add_column(sa.Column("roc", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("client_round", schema=None) as batch_op:
        batch_op.drop_column("roc")
