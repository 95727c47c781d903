"""Alembic's entry point for the feedback store's migrations. Run through `api.feedback_schema`, which
passes the connection (inside its transaction and lock) and the version table's name."""

from alembic import context

config = context.config
context.configure(
    connection=config.attributes["connection"],
    version_table=config.attributes["version_table"],
    render_as_batch=True,  # SQLite alters tables by copying them; Alembic's batch mode does that
)
with context.begin_transaction():
    context.run_migrations()
