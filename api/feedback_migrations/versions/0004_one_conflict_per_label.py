"""One conflict per image and label: the same conflicting label sent twice is a duplicate.

Repeats stored before (possible until this rule) are removed first, keeping each pair's first conflict:
they carried nothing the first one does not.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM feedback_conflicts WHERE id NOT IN "
        "(SELECT min(id) FROM feedback_conflicts GROUP BY feedback_id, label)"
    )
    op.create_index("feedback_conflicts_once", "feedback_conflicts", ["feedback_id", "label"], unique=True)


def downgrade() -> None:
    op.drop_index("feedback_conflicts_once", "feedback_conflicts")
