"""${message}"""

import sqlalchemy as sa  # noqa: F401 - for the operations this migration will hold
from alembic import op  # noqa: F401

revision = "${up_revision}"
down_revision = ${'"%s"' % down_revision if down_revision else "None"}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
