"""Translation APIs: characters translated per API key and month (`key_usage`), and DeepL's named
glossaries (`named_glossaries`: a name and a language pair; their terms are glossary_terms rows).

Revision ID: 0006_key_usage_named_glossaries
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_key_usage_named_glossaries"
down_revision = "0005_translation_memory"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_usage",
        sa.Column("key_name", sa.String(64), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("characters", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "named_glossaries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("source_lang", sa.String(16), nullable=False),
        sa.Column("target_lang", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("Baton's schema only moves forward; restore a backup to go back.")
