"""A review records the newest conflict its reviewer saw, so that a later conflict opens the row again."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feedback_reviews", sa.Column("last_conflict_id", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("feedback_reviews") as table:
        table.drop_column("last_conflict_id")
