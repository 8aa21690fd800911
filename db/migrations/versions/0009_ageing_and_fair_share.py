"""Ageing and fair share: who queued each job, which jobs an admin keeps, and when a cache entry was last used.

- `generation_jobs.client`: the caller's address as the rate limits see it ('' for rows written
  before, or by tools: all of those are one client). The claim takes each client's oldest job in
  turn, and POST /generate caps a client's unfinished jobs; both read the two partial indexes below.
- `generation_jobs.kept`: an admin keeps the job (an order's proof): it and its renders never age out.
- `render_cache.used_at`: an entry ages from its last hit, not its creation, so the catalog's
  pre-rendered views live as long as they are asked for.
- An index on the result keys in `cut_progress` and one on `render_cache.object_key`: before an
  aged-out object is deleted, the prune asks whether any row still names it, in one indexed look-up.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_ageing_and_fair_share"
down_revision = "0008_public_errors"

FINAL = "status IN ('completed', 'failed', 'canceled')"


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("client", sa.String(), nullable=False, server_default=""))
    op.add_column("generation_jobs", sa.Column("kept", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_generation_jobs_pending_by_client", "generation_jobs",
                    ["client", "next_attempt_at", "created_at", "id"], postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_generation_jobs_unfinished_by_client", "generation_jobs", ["client"],
                    postgresql_where=sa.text("status IN ('pending', 'processing')"))
    op.create_index("ix_generation_jobs_finished", "generation_jobs", ["completed_at"],
                    postgresql_where=sa.text(f"{FINAL} AND NOT kept"))
    op.execute("CREATE INDEX ix_generation_jobs_result_keys ON generation_jobs "
               "USING gin (jsonb_path_query_array(cut_progress, '$.*.key'))")
    op.add_column("render_cache", sa.Column("used_at", sa.DateTime(timezone=True), nullable=False,
                                            server_default=sa.func.now()))
    op.execute("UPDATE render_cache SET used_at = created_at")
    op.create_index("ix_render_cache_used_at", "render_cache", ["used_at"])
    op.create_index("ix_render_cache_object_key", "render_cache", ["object_key"])


def downgrade() -> None:
    op.drop_index("ix_render_cache_object_key", "render_cache")
    op.drop_index("ix_render_cache_used_at", "render_cache")
    op.drop_column("render_cache", "used_at")
    op.drop_index("ix_generation_jobs_result_keys", "generation_jobs")
    op.drop_index("ix_generation_jobs_finished", "generation_jobs")
    op.drop_index("ix_generation_jobs_unfinished_by_client", "generation_jobs")
    op.drop_index("ix_generation_jobs_pending_by_client", "generation_jobs")
    op.drop_column("generation_jobs", "kept")
    op.drop_column("generation_jobs", "client")
