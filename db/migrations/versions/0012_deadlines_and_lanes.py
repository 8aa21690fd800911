"""Deadlines and priority lanes.

- `generation_jobs.deadline_at`: a job not finished by then ends `expired` (POST /generate's
  `deadline_seconds` or `Cancel-After`); None: no deadline.
- `generation_jobs.lane`: `interactive` (a shopper's job) or `batch` (prewarm, admin batches). Runners
  claim interactive jobs first and hold only a few batch jobs at once.
- `expired` is a final state: the ageing index counts it among the finished jobs.
- `queue_positions`: each pending job's place in the claim order and its estimated start, rewritten by
  a runner every tick (db/queue_positions.py), read by GET /jobs/{id} with one primary-key join.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_deadlines_and_lanes"
down_revision = "0011_swatch_digest"


def _finished_index(final: str) -> None:
    op.drop_index("ix_generation_jobs_finished", "generation_jobs")
    op.create_index("ix_generation_jobs_finished", "generation_jobs", ["completed_at"],
                    postgresql_where=sa.text(f"status IN ({final}) AND NOT kept"))


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("generation_jobs", sa.Column("lane", sa.String(), nullable=False, server_default="interactive"))
    op.create_index("ix_generation_jobs_deadlines", "generation_jobs", ["deadline_at"],
                    postgresql_where=sa.text("status = 'pending' AND deadline_at IS NOT NULL"))
    _finished_index("'completed', 'failed', 'canceled', 'expired'")
    op.create_table("queue_positions",
                    sa.Column("job_id", sa.String(), primary_key=True),
                    sa.Column("ahead", sa.Integer(), nullable=False),
                    sa.Column("estimated_start_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_table("queue_positions")
    _finished_index("'completed', 'failed', 'canceled'")
    op.drop_index("ix_generation_jobs_deadlines", "generation_jobs")
    op.drop_column("generation_jobs", "lane")
    op.drop_column("generation_jobs", "deadline_at")
