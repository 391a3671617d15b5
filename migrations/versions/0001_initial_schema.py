"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment")),
    )
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiment_created_at"), ["created_at"], unique=False)

    op.create_table(
        "run",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("experiment_id", sa.Uuid(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("federated", "centralized", name="runkind", native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                name="runstatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("total_rounds", sa.Integer(), nullable=False),
        sa.Column("current_round", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("model_path", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiment.id"], name=op.f("fk_run_experiment_id_experiment"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run")),
    )
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_experiment_id"), ["experiment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_run_status"), ["status"], unique=False)

    op.create_table(
        "fl_round",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("wall_s", sa.Double(), nullable=False),
        sa.Column("train_s", sa.Double(), nullable=False),
        sa.Column("calibration_s", sa.Double(), nullable=False),
        sa.Column("aggregation_s", sa.Double(), nullable=False),
        sa.Column("evaluation_s", sa.Double(), nullable=False),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("bytes_received", sa.BigInteger(), nullable=False),
        sa.Column("test_samples", sa.Integer(), nullable=False),
        sa.Column("roc", sa.JSON(), nullable=False),
        sa.Column("checkpoint", sa.String(length=500), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("number >= 1", name=op.f("ck_fl_round_number_positive")),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_fl_round_run_id_run"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "number", name=op.f("pk_fl_round")),
    )
    op.create_table(
        "client_round",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("event IS NULL OR event IN ('joined', 'left')", name=op.f("ck_client_round_event_known")),
        sa.CheckConstraint(
            "status IN ('trained', 'kept', 'absent', 'failed')", name=op.f("ck_client_round_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["run_id", "round"],
            ["fl_round.run_id", "fl_round.number"],
            name="fk_client_round_round",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "round", "client_id", name=op.f("pk_client_round")),
    )
    op.create_table(
        "round_metric",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("is_nan", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id", "round"],
            ["fl_round.run_id", "fl_round.number"],
            name="fk_round_metric_round",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "round", "client_id", "key", name=op.f("pk_round_metric")),
    )


def downgrade() -> None:
    op.drop_table("round_metric")
    op.drop_table("client_round")
    op.drop_table("fl_round")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_status"))
        batch_op.drop_index(batch_op.f("ix_run_experiment_id"))

    op.drop_table("run")
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiment_created_at"))

    op.drop_table("experiment")
