"""Rollouts: the replica that drives (judges and steps) a running rollout, so that exactly one
does, and another takes it over when that one goes silent.

Revision ID: 0003_rollout_runner
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_rollout_runner"
down_revision = "0002_replicas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rollouts", sa.Column("runner", sa.String(128), nullable=False, server_default=""))


def downgrade() -> None:
    raise NotImplementedError("Baton's schema only moves forward; restore a backup to go back.")
