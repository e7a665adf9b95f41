"""The one schema history of Baton's database (the engine's tables, the admin stores', and Chainlit's
chat history), as Alembic migrations, for SQLite and Postgres alike. `upgrade` runs them on a
connection the caller holds (Store.migrate), so no alembic.ini is needed."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

# Chainlit's chat-history tables: created by the migrations, written by its data layer, in no metadata.
CHAT_TABLES = frozenset({"users", "threads", "steps", "elements", "feedbacks"})


def upgrade(connection: Connection) -> None:
    """Bring the database to the newest schema, in the caller's transaction (env.py uses `connection`)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
