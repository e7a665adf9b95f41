"""The schema Chainlit's SQLAlchemyDataLayer expects, adapted for SQLite. The data layer
creates no tables itself, and when one is missing its writes fail with only a warning.

Based on Chainlit's documented PostgreSQL DDL, with what 2.12 actually writes: steps carry
"autoCollapse", "command", "modes" and "icon" too (a missing column silently drops the
whole step, i.e. the chat history), and elements carry "autoPlay" and "playerConfig".
UUID/JSONB/TEXT[] become TEXT, BOOLEAN stays (SQLite stores 0/1).
"""
from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

TABLES: dict[str, str] = {
    "users": """
        CREATE TABLE IF NOT EXISTS users (
            "id" TEXT PRIMARY KEY,
            "identifier" TEXT NOT NULL UNIQUE,
            "metadata" TEXT NOT NULL,
            "createdAt" TEXT
        )""",
    "threads": """
        CREATE TABLE IF NOT EXISTS threads (
            "id" TEXT PRIMARY KEY,
            "createdAt" TEXT,
            "name" TEXT,
            "userId" TEXT,
            "userIdentifier" TEXT,
            "tags" TEXT,
            "metadata" TEXT,
            FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE
        )""",
    "steps": """
        CREATE TABLE IF NOT EXISTS steps (
            "id" TEXT PRIMARY KEY,
            "name" TEXT NOT NULL,
            "type" TEXT NOT NULL,
            "threadId" TEXT NOT NULL,
            "parentId" TEXT,
            "streaming" BOOLEAN NOT NULL,
            "waitForAnswer" BOOLEAN,
            "isError" BOOLEAN,
            "metadata" TEXT,
            "tags" TEXT,
            "input" TEXT,
            "output" TEXT,
            "createdAt" TEXT,
            "command" TEXT,
            "modes" TEXT,
            "start" TEXT,
            "end" TEXT,
            "generation" TEXT,
            "showInput" TEXT,
            "language" TEXT,
            "indent" INTEGER,
            "defaultOpen" BOOLEAN,
            "autoCollapse" BOOLEAN,
            "icon" TEXT,
            FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
        )""",
    "elements": """
        CREATE TABLE IF NOT EXISTS elements (
            "id" TEXT PRIMARY KEY,
            "threadId" TEXT,
            "type" TEXT,
            "url" TEXT,
            "chainlitKey" TEXT,
            "name" TEXT NOT NULL,
            "display" TEXT,
            "objectKey" TEXT,
            "size" TEXT,
            "page" INTEGER,
            "language" TEXT,
            "forId" TEXT,
            "mime" TEXT,
            "props" TEXT,
            "autoPlay" BOOLEAN,
            "playerConfig" TEXT,
            FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
        )""",
    "feedbacks": """
        CREATE TABLE IF NOT EXISTS feedbacks (
            "id" TEXT PRIMARY KEY,
            "forId" TEXT NOT NULL,
            "threadId" TEXT NOT NULL,
            "value" INTEGER NOT NULL,
            "comment" TEXT,
            FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
        )""",
}

# Columns added after a database may have been created: (table, column, type).
LATE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("steps", "command", "TEXT"),
    ("steps", "modes", "TEXT"),
    ("steps", "defaultOpen", "BOOLEAN"),
    ("steps", "autoCollapse", "BOOLEAN"),
    ("steps", "icon", "TEXT"),
    ("elements", "autoPlay", "BOOLEAN"),
    ("elements", "playerConfig", "TEXT"),
)

log = logging.getLogger("baton.datalayer")

INDEXES = (
    'CREATE INDEX IF NOT EXISTS steps_thread ON steps ("threadId")',
    'CREATE INDEX IF NOT EXISTS threads_user ON threads ("userId")',
    'CREATE INDEX IF NOT EXISTS elements_thread ON elements ("threadId")',
)


async def create_schema(engine: AsyncEngine) -> None:
    """Create the data layer's tables (idempotent), adding late columns to older databases."""
    if engine.dialect.name != "sqlite":
        log.warning("chat history schema: only SQLite is created automatically; on %s, create Chainlit's "
                    "documented tables (with steps.\"autoCollapse\") yourself", engine.dialect.name)
        return
    async with engine.begin() as conn:
        for ddl in TABLES.values():
            await conn.execute(text(ddl))
        for table, column, kind in LATE_COLUMNS:
            rows = (await conn.execute(text(f'PRAGMA table_info("{table}")'))).all()
            if column not in {r[1] for r in rows}:
                await conn.execute(text(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}'))
        for ddl in INDEXES:
            await conn.execute(text(ddl))
