"""Baseline: every table as it stood before Alembic, created when missing; in a database made
before Alembic (by create_all and the hand-written column patches, possibly without the late
columns) the missing columns are added, and the rows stay.

A snapshot: it must not import the models, which move on. Chainlit's data layer creates no
tables itself, and when one is missing its writes fail with only a warning, so its tables are
here too: Chainlit's documented PostgreSQL DDL, plus what 2.12 writes that the doc lacks (steps
carry "autoCollapse", "command", "modes", "defaultOpen" and "icon", and a missing one silently
drops the whole step, i.e. the chat history; elements carry "autoPlay" and "playerConfig"). On
SQLite UUID/JSONB/TEXT[] become TEXT and BOOLEAN stays (stored as 0/1).

Revision ID: 0001_baseline
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _when() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def _tables(md: sa.MetaData) -> list[sa.Table]:
    """The engine's and the admin stores' tables as of this revision."""
    s64, s128, s16 = sa.String(64), sa.String(128), sa.String(16)
    tz = sa.DateTime(timezone=True)
    return [
        sa.Table("model_versions", md,
                 sa.Column("name", s64, primary_key=True),
                 sa.Column("model_path", sa.Text, nullable=False),
                 sa.Column("served_name", s128, nullable=False),
                 sa.Column("flags", sa.JSON, nullable=False),
                 sa.Column("interpreter", sa.Text, nullable=True),
                 sa.Column("prompt_template", sa.Text, nullable=False),
                 sa.Column("templates", sa.JSON, nullable=True),
                 sa.Column("sampling", sa.JSON, nullable=False),
                 sa.Column("notes", sa.Text, nullable=False),
                 sa.Column("created_by", s128, nullable=False),
                 _when(),
                 sa.Column("desired", s16, nullable=True)),
        sa.Table("deployment", md,
                 sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("active", s64, nullable=True),
                 sa.Column("previous", s64, nullable=True),
                 sa.Column("canary", s64, nullable=True),
                 sa.Column("canary_percent", sa.Integer, nullable=False),
                 sa.Column("shadow", s64, nullable=True),
                 sa.Column("shadow_percent", sa.Integer, nullable=True),
                 sa.Column("updated_by", s128, nullable=False),
                 sa.Column("updated_at", tz, nullable=False)),
        sa.Table("audit_events", md,
                 sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                 sa.Column("at", tz, nullable=False, index=True),
                 sa.Column("actor", s128, nullable=False),
                 sa.Column("action", s64, nullable=False),
                 sa.Column("arguments", sa.Text, nullable=False),
                 sa.Column("outcome", s16, nullable=False),
                 sa.Column("detail", sa.Text, nullable=False)),
        sa.Table("evaluations", md,
                 sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                 sa.Column("version", s64, nullable=False, index=True),
                 sa.Column("set_name", s64, nullable=False),
                 sa.Column("set_checksum", s64, nullable=False),
                 sa.Column("scores", sa.JSON, nullable=False),
                 sa.Column("latency_p50_ms", sa.Float, nullable=True),
                 sa.Column("latency_p95_ms", sa.Float, nullable=True),
                 sa.Column("errors", sa.Integer, nullable=False),
                 sa.Column("rows", sa.Integer, nullable=False),
                 sa.Column("at", tz, nullable=False),
                 sa.Column("by", s128, nullable=False)),
        sa.Table("rollouts", md,
                 sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                 sa.Column("candidate", s64, nullable=False),
                 sa.Column("baseline", s64, nullable=False),
                 sa.Column("plan", sa.JSON, nullable=False),
                 sa.Column("state", s16, nullable=False, index=True),
                 sa.Column("step", sa.Integer, nullable=False),
                 sa.Column("started_by", s128, nullable=False),
                 sa.Column("started_at", tz, nullable=False),
                 sa.Column("ended_at", tz, nullable=True),
                 sa.Column("detail", sa.Text, nullable=False),
                 sa.Column("timeline", sa.JSON, nullable=False)),
        sa.Table("backend_processes", md,
                 sa.Column("pgid", sa.Integer, primary_key=True),
                 sa.Column("version", s64, nullable=False),
                 sa.Column("marker", s64, nullable=False),
                 sa.Column("started_at", tz, nullable=False)),
        sa.Table("accounts", md,
                 sa.Column("username", s64, primary_key=True),
                 sa.Column("password_hash", sa.Text, nullable=False),
                 sa.Column("role", s16, nullable=False),
                 sa.Column("created_by", s64, nullable=False),
                 _when()),
        sa.Table("api_keys", md,
                 sa.Column("name", s64, primary_key=True),
                 sa.Column("role", s16, nullable=False),
                 sa.Column("key_hash", s64, nullable=False, unique=True, index=True),
                 sa.Column("hint", s16, nullable=False),
                 sa.Column("created_by", s128, nullable=False),
                 _when(),
                 sa.Column("revoked_at", tz, nullable=True)),
        sa.Table("answer_votes", md,
                 sa.Column("id", s64, primary_key=True),
                 sa.Column("version", s64, nullable=False),
                 sa.Column("username", s64, nullable=False, index=True),
                 sa.Column("thread_id", s64, nullable=False),
                 sa.Column("feedback_id", s64, nullable=True, index=True),
                 sa.Column("vote", sa.Integer, nullable=True),
                 _when()),
        sa.Table("glossary_terms", md,
                 sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("owner", s64, nullable=False, index=True),
                 sa.Column("source", sa.String(100), nullable=False),
                 sa.Column("source_key", sa.String(100), nullable=False),
                 sa.Column("target", sa.String(100), nullable=False),
                 sa.Column("lang", s16, nullable=False),
                 _when(),
                 sa.UniqueConstraint("owner", "source_key", "lang")),
    ]


# Chainlit's tables: (column, Postgres type, SQLite type, NOT NULL), then the table's extra clauses.
_UUID, _JSON, _TAGS = ("UUID", "TEXT"), ("JSONB", "TEXT"), ("TEXT[]", "TEXT")
_TEXT, _BOOL, _INT = ("TEXT", "TEXT"), ("BOOLEAN", "BOOLEAN"), ("INTEGER", "INTEGER")
_THREAD_FK = 'FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE'
CHAT: dict[str, tuple[list[tuple[str, tuple[str, str], bool]], list[str]]] = {
    "users": ([("id", _UUID, True), ("identifier", _TEXT, True), ("metadata", _JSON, True),
               ("createdAt", _TEXT, False)], ['UNIQUE ("identifier")']),
    "threads": ([("id", _UUID, True), ("createdAt", _TEXT, False), ("name", _TEXT, False),
                 ("userId", _UUID, False), ("userIdentifier", _TEXT, False), ("tags", _TAGS, False),
                 ("metadata", _JSON, False)],
                ['FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE']),
    "steps": ([("id", _UUID, True), ("name", _TEXT, True), ("type", _TEXT, True), ("threadId", _UUID, True),
               ("parentId", _UUID, False), ("streaming", _BOOL, True), ("waitForAnswer", _BOOL, False),
               ("isError", _BOOL, False), ("metadata", _JSON, False), ("tags", _TAGS, False),
               ("input", _TEXT, False), ("output", _TEXT, False), ("createdAt", _TEXT, False),
               ("command", _TEXT, False), ("modes", _JSON, False), ("start", _TEXT, False), ("end", _TEXT, False),
               ("generation", _JSON, False), ("showInput", _TEXT, False), ("language", _TEXT, False),
               ("indent", _INT, False), ("defaultOpen", _BOOL, False), ("autoCollapse", _BOOL, False),
               ("icon", _TEXT, False)], [_THREAD_FK]),
    "elements": ([("id", _UUID, True), ("threadId", _UUID, False), ("type", _TEXT, False), ("url", _TEXT, False),
                  ("chainlitKey", _TEXT, False), ("name", _TEXT, True), ("display", _TEXT, False),
                  ("objectKey", _TEXT, False), ("size", _TEXT, False), ("page", _INT, False),
                  ("language", _TEXT, False), ("forId", _UUID, False), ("mime", _TEXT, False),
                  ("props", _JSON, False), ("autoPlay", _BOOL, False), ("playerConfig", _JSON, False)], [_THREAD_FK]),
    "feedbacks": ([("id", _UUID, True), ("forId", _UUID, True), ("threadId", _UUID, True), ("value", _INT, True),
                   ("comment", _TEXT, False)], [_THREAD_FK]),
}
CHAT_INDEXES = (("steps_thread", "steps", "threadId"), ("threads_user", "threads", "userId"),
                ("elements_thread", "elements", "threadId"))


def _chat_ddl(name: str, postgres: bool) -> str:
    columns, clauses = CHAT[name]
    lines = [f'"{col}" {kind[0] if postgres else kind[1]}' + (" NOT NULL" if not_null else "")
             + (" PRIMARY KEY" if col == "id" else "") for col, kind, not_null in columns]
    return f"CREATE TABLE {name} (" + ", ".join(lines + clauses) + ")"


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    insp = sa.inspect(bind)
    for table in _tables(sa.MetaData()):
        if not insp.has_table(table.name):
            table.create(bind)
            continue
        existing = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name not in existing:  # the rows already there have no value for it
                op.add_column(table.name, sa.Column(col.name, col.type, nullable=True))
    for name, (columns, _clauses) in CHAT.items():
        if not insp.has_table(name):
            op.execute(_chat_ddl(name, postgres))
            continue
        existing = {c["name"] for c in insp.get_columns(name)}
        for column, kind, _not_null in columns:
            if column not in existing:
                op.execute(f'ALTER TABLE {name} ADD COLUMN "{column}" {kind[0] if postgres else kind[1]}')
    for index, table_name, column in CHAT_INDEXES:
        op.execute(f'CREATE INDEX IF NOT EXISTS {index} ON {table_name} ("{column}")')


def downgrade() -> None:
    raise NotImplementedError("Baton's schema only moves forward; restore a backup to go back.")
