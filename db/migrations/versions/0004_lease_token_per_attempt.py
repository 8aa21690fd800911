"""Fence every write by the attempt that makes it: a fresh lease token per claim."""

import sqlalchemy as sa
from alembic import op

revision = "0004_lease_token"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("lease_token", sa.String(), nullable=True))
    # A job processing across the upgrade gets a token too, so the rescuer can tell it from live attempts.
    op.execute("UPDATE generation_jobs SET lease_token = gen_random_uuid()::text WHERE status = 'processing'")
    # Login failures are counted per (username, client): one index serves both the count and the reset.
    op.create_index("ix_admin_login_failures_pair", "admin_login_failures", ["username", "address", "failed_at"])


def downgrade() -> None:
    op.drop_index("ix_admin_login_failures_pair", table_name="admin_login_failures")
    op.drop_column("generation_jobs", "lease_token")
