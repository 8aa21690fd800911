"""A job's public face reveals no other job and no internals.

`result_token`: the random name of a job's results in storage (`generated/{family}/{color}/{token}/{cut}.jpg`).
A job id is a capability (it reads, streams and cancels the job), and a render-cache hit hands one job's
object to another, so a result key must not carry the job id; it is drawn once, when the row is
inserted, so every attempt of the job writes the same keys (delivery is at-least-once). Rows already
there get a token too; their finished cuts keep the keys they were stored under (`cut_progress`).

`error_detail`: the raw reason a job failed (exception text, for logs and the admin view), while
`error_message` becomes the public code and sentence.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_public_errors"
down_revision = "0007_admin_sessions"

RANDOM_TOKEN = sa.text("replace(gen_random_uuid()::text, '-', '')")


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("result_token", sa.String(), nullable=False,
                                               server_default=RANDOM_TOKEN))
    op.add_column("generation_jobs", sa.Column("error_detail", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("generation_jobs", "error_detail")
    op.drop_column("generation_jobs", "result_token")
