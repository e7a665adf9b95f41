"""Replicas: the deployment's generation (bumped by every change, compared before writing), the
replicas' heartbeats, which replica started each recorded backend process (so a replica only ends
its own orphans: another's, on the same host, are alive), and remote versions (a URL and the name
of the variable holding its key; a remote version's model_path is "").

Revision ID: 0002_replicas
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_replicas"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deployment", sa.Column("generation", sa.Integer, nullable=False, server_default="0"))
    op.add_column("backend_processes", sa.Column("replica", sa.String(128), nullable=False, server_default=""))
    op.add_column("model_versions", sa.Column("url", sa.Text, nullable=True))
    op.add_column("model_versions", sa.Column("api_key_env", sa.String(128), nullable=True))
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_replicas_heartbeat_at", "replicas", ["heartbeat_at"])


def downgrade() -> None:
    raise NotImplementedError("Baton's schema only moves forward; restore a backup to go back.")
