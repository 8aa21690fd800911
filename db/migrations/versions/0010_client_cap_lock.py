"""A client's cap of unfinished jobs holds under concurrent POSTs.

POST /generate inserts a job only while its client has fewer than its cap of unfinished jobs, in one
statement. Counted in that statement's snapshot, two POSTs of one client that run at the same instant
both see one job fewer than they will have, and the client ends one over its cap (seen in CI: 151 of
150). `sastre_below_client_cap` takes a per-client transaction lock first and counts in a snapshot
taken after it (a VOLATILE function's query gets its own), so the second POST waits for the first to
commit and counts its job. POSTs of different clients do not wait for each other.
"""

from alembic import op

revision = "0010_client_cap_lock"
down_revision = "0009_ageing_and_fair_share"


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION sastre_below_client_cap(client text, cap integer) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('sastre_client_cap'), hashtext(client));
            RETURN (SELECT count(*) FROM (SELECT 1 FROM generation_jobs
                                          WHERE generation_jobs.client = sastre_below_client_cap.client
                                            AND status IN ('pending', 'processing') LIMIT cap) AS mine) < cap;
        END $$""")


def downgrade() -> None:
    op.execute("DROP FUNCTION sastre_below_client_cap(text, integer)")
