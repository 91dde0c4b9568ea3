"""Alembic environment: the engine comes from leadflow's own config, never from alembic.ini."""

from __future__ import annotations

from alembic import context

from leadflow.adapters.db.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - leadflow always passes a connection
    raise RuntimeError("run migrations through `leadflow db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
