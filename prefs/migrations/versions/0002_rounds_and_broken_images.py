"""Steering-loop rounds, broken-image flags, and where an imported file came from.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("info", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("name", name=op.f("uq_rounds_name")),
    )
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("source_path", sa.Text(), nullable=True))
        batch.add_column(sa.Column("broken_at", TS, nullable=True))
        batch.add_column(sa.Column("broken_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("round_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_comparisons_round_id_rounds"), "rounds", ["round_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_constraint(op.f("fk_comparisons_round_id_rounds"), type_="foreignkey")
        batch.drop_column("round_id")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("broken_reason")
        batch.drop_column("broken_at")
        batch.drop_column("source_path")
    op.drop_table("rounds")
