"""Alembic environment: the engine is handed in by ``engine.alembic_config``."""

from alembic import context

from billingo_pipeline.warehouse.schema import metadata

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
