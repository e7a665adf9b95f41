"""Alembic's environment: migrations run on the connection Store.migrate passes in (the documented
recipe for async engines: `conn.run_sync` hands over a sync connection through the Config)."""
from __future__ import annotations

from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
