"""site_task.kind: the steps of secure aggregation (advertise keys, share secrets, unmask) join train, statistics
and evaluate

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BEFORE = "kind IN ('train', 'statistics', 'evaluate')"
AFTER = "kind IN ('train', 'statistics', 'evaluate', 'advertise', 'share', 'unmask')"


def upgrade() -> None:
    with op.batch_alter_table("site_task", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_site_task_kind_known"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_site_task_kind_known"), AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM site_task WHERE kind IN ('advertise', 'share', 'unmask')")
    with op.batch_alter_table("site_task", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_site_task_kind_known"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_site_task_kind_known"), BEFORE)
