"""Answer checks: each version's policy for an answer that does not read as the target language
("flag", the default when NULL, or "retranslate" once by another version).

Revision ID: 0004_answer_checks
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_answer_checks"
down_revision = "0003_rollout_runner"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("on_wrong_language", sa.String(16), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("Baton's schema only moves forward; restore a backup to go back.")
