"""run.local_baselines (each site's local-only model on its own test split) and the site task kind that trains it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BEFORE = "kind IN ('train', 'statistics', 'evaluate', 'advertise', 'share', 'unmask')"
AFTER = "kind IN ('train', 'statistics', 'evaluate', 'advertise', 'share', 'unmask', 'local')"


def _kinds(check: str) -> None:
    with op.batch_alter_table("site_task", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_site_task_kind_known"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_site_task_kind_known"), check)


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("local_baselines", sa.JSON(), nullable=True))
    _kinds(AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM site_task WHERE kind = 'local'")
    _kinds(BEFORE)
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("local_baselines")
