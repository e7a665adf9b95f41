"""Translation memory: approved translations by owner ("" for the shared memory) and language pair,
looked up by a hash of the normalized source (engine/memory.py).

Revision ID: 0005_translation_memory
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_translation_memory"
down_revision = "0004_answer_checks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("src_lang", sa.String(16), nullable=False),
        sa.Column("tgt_lang", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_key", sa.String(64), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("added_by", sa.String(128), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.UniqueConstraint("owner", "src_lang", "tgt_lang", "source_key"),
    )
    op.create_index("ix_memory_entries_owner", "memory_entries", ["owner"])


def downgrade() -> None:
    raise NotImplementedError("Baton's schema only moves forward; restore a backup to go back.")
