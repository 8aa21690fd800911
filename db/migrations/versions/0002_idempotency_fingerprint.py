"""Remember what an idempotent request asked for, so a reused key with another body is refused.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("request_hash", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("generation_jobs", "request_hash")
