"""Conflicting labels kept for review, and the reviewers' decisions."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_conflicts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("feedback_id", sa.Integer, sa.ForeignKey("feedback.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64)),
    )
    op.create_table(
        "feedback_reviews",
        sa.Column("feedback_id", sa.Integer, sa.ForeignKey("feedback.id"), primary_key=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feedback_reviews")
    op.drop_table("feedback_conflicts")
