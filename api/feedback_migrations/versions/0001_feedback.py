"""The feedback table: one row per image (by the sha256 of its pixels), its label and the prediction."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("image_path", sa.String(255), nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("predicted_category", sa.String(64), nullable=False),
        sa.Column("predicted_confidence", sa.Float, nullable=False),
        sa.Column("confirmed", sa.Boolean, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("feedback")
