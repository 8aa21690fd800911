"""A job's swatch digest, worked out once when the job is accepted: no later reader hashes the swatch again."""

import sqlalchemy as sa
from alembic import op

revision = "0011_swatch_digest"
down_revision = "0010_client_cap_lock"


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("swatch_digest", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("generation_jobs", "swatch_digest")
