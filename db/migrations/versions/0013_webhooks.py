"""Webhooks: the endpoints admins register, the outbox of deliveries, and every attempt.

The outbox is written by triggers on `generation_jobs`, in the transaction that writes the job's final
state, so every final write (runner, cancel route, rescuer, deadline sweep) emits its event and no
job-writing statement had to change. They fire on UPDATE only (POST /generate's INSERT and GET /jobs
never reach them), and `WHEN` keeps the function from even running for the updates that are no event:
a lease renewal, a claim, a cut started. An event is fanned out at once to the enabled endpoints
subscribed to its type; with none, nothing is written.

Deliveries and attempts reference the job (ON DELETE CASCADE): they age out with it.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0013_webhooks"
down_revision = "0012_deadlines_and_lanes"

_FINAL = "'completed', 'failed', 'canceled', 'expired'"

# One message id per event, shared by every endpoint it goes to and every attempt (`webhook-id`).
_JOB_EVENT = f"""
CREATE FUNCTION webhook_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event text := 'job.' || NEW.status;
    message text := 'msg_' || replace(gen_random_uuid()::text, '-', '');
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, job_id)
    SELECT id, message, event, NEW.job_id FROM webhook_endpoints WHERE enabled AND event = ANY (events);
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_job_final AFTER UPDATE OF status ON generation_jobs FOR EACH ROW
WHEN (NEW.status IN ({_FINAL}) AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION webhook_job_event();
"""

# A cut is completed when its `cut_progress` entry says so and did not before (a rescued job's cut
# rendered again emits again: delivery is at least once). The subscriber check comes first: the
# runner writes `cut_progress` on every cut's start and end.
_CUT_EVENT = """
CREATE FUNCTION webhook_cut_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    finished record;
    message text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled AND 'cut.completed' = ANY (events)) THEN
        RETURN NULL;
    END IF;
    FOR finished IN
        SELECT cut.key FROM jsonb_each(NEW.cut_progress) AS cut
        WHERE cut.value ->> 'status' = 'completed'
          AND (OLD.cut_progress -> cut.key ->> 'status') IS DISTINCT FROM 'completed'
    LOOP
        message := 'msg_' || replace(gen_random_uuid()::text, '-', '');
        INSERT INTO webhook_deliveries (endpoint_id, message_id, event_type, job_id, cut)
        SELECT id, message, 'cut.completed', NEW.job_id, finished.key
        FROM webhook_endpoints WHERE enabled AND 'cut.completed' = ANY (events);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_cut_completed AFTER UPDATE OF cut_progress ON generation_jobs FOR EACH ROW
WHEN (NEW.cut_progress IS DISTINCT FROM OLD.cut_progress)
EXECUTE FUNCTION webhook_cut_event();
"""


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("events", ARRAY(sa.String()), nullable=False),
        sa.Column("description", sa.String(), nullable=False, server_default=""),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("previous_secret", sa.String(), nullable=True),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default="true"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("endpoint_id", sa.Integer(), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), sa.ForeignKey("generation_jobs.job_id", ondelete="CASCADE"), nullable=False),
        sa.Column("cut", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("status", sa.String(), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("lease_token", sa.String(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["due_at"],
                    postgresql_where=sa.text("status IN ('pending', 'sending')"))
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "id"])
    op.create_index("ix_webhook_deliveries_job", "webhook_deliveries", ["job_id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("delivery_id", sa.BigInteger(), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "id"])
    op.execute(_JOB_EVENT)
    op.execute(_CUT_EVENT)


def downgrade() -> None:
    op.execute("DROP TRIGGER webhook_cut_completed ON generation_jobs")
    op.execute("DROP TRIGGER webhook_job_final ON generation_jobs")
    op.execute("DROP FUNCTION webhook_cut_event()")
    op.execute("DROP FUNCTION webhook_job_event()")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
