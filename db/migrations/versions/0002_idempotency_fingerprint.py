"""Remember what an idempotent request asked for, so a reused key with another body is refused."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("request_hash", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("generation_jobs", "request_hash")
