"""Admin tokens that die with their credentials, and login failures that can be pruned cheaply.

`admin_users.token_version` is written into every token (`ver`) and bumped by a password change or a
deactivation, so every token issued before either is refused. The index on `failed_at` lets each login
prune failures older than the throttle window in small batches.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_admin_sessions"
down_revision = "0006_render_cache"


def upgrade() -> None:
    op.add_column("admin_users", sa.Column("token_version", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_admin_login_failures_failed_at", "admin_login_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_admin_login_failures_failed_at", table_name="admin_login_failures")
    op.drop_column("admin_users", "token_version")
