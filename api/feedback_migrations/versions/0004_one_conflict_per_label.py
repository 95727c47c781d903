"""One conflict per image and label: the same conflicting label sent twice is a duplicate.

A store holding repeats from before (possible only before this revision) fails here, naming the index;
remove the repeated rows (`SELECT feedback_id, label FROM feedback_conflicts GROUP BY 1, 2 HAVING
count(*) > 1`), then open the store again.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("feedback_conflicts_once", "feedback_conflicts", ["feedback_id", "label"], unique=True)


def downgrade() -> None:
    op.drop_index("feedback_conflicts_once", "feedback_conflicts")
