"""The first schema: image pool, raters, comparisons.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("prompt_hash", sa.String(16), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("model", sa.String(512), nullable=True),
        sa.Column("lora", sa.String(512), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("caption_source", sa.String(32), nullable=True),
        sa.Column("n_judgements", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("origin IN ('generated', 'imported')", name=op.f("ck_images_origin")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("sha256", name=op.f("uq_images_sha256")),
    )
    op.create_index(op.f("ix_images_prompt_hash"), "images", ["prompt_hash"])
    op.create_index(op.f("ix_images_n_judgements"), "images", ["n_judgements"])
    op.create_table(
        "raters",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raters")),
        sa.UniqueConstraint("name", name=op.f("uq_raters_name")),
    )
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client_vote_id", sa.String(100), nullable=False),
        sa.Column("image_a_id", sa.Integer(), nullable=False),
        sa.Column("image_b_id", sa.Integer(), nullable=False),
        sa.Column("shown_left", sa.String(1), nullable=True),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("decision_ms", sa.Integer(), nullable=True),
        sa.Column("strategy", sa.String(32), nullable=True),
        sa.Column("predicted_p", sa.Float(), nullable=True),
        sa.Column("undone_at", TS, nullable=True),
        sa.CheckConstraint("outcome IN ('a', 'b', 'tie', 'both_bad', 'skip')", name=op.f("ck_comparisons_outcome")),
        sa.CheckConstraint("image_a_id <> image_b_id", name=op.f("ck_comparisons_distinct_images")),
        sa.CheckConstraint("shown_left IS NULL OR shown_left IN ('a', 'b')", name=op.f("ck_comparisons_shown_left")),
        sa.ForeignKeyConstraint(["image_a_id"], ["images.id"], name=op.f("fk_comparisons_image_a_id_images")),
        sa.ForeignKeyConstraint(["image_b_id"], ["images.id"], name=op.f("fk_comparisons_image_b_id_images")),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name=op.f("fk_comparisons_rater_id_raters")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comparisons")),
        sa.UniqueConstraint("client_vote_id", name=op.f("uq_comparisons_client_vote_id")),
    )
    op.create_index("ix_comparisons_rater_pair", "comparisons", ["rater_id", "image_a_id", "image_b_id"])
    op.create_index("ix_comparisons_rater_id_id", "comparisons", ["rater_id", "id"])
    op.create_index("ix_comparisons_image_b_id", "comparisons", ["image_b_id"])


def downgrade() -> None:
    op.drop_table("comparisons")
    op.drop_table("raters")
    op.drop_table("images")
