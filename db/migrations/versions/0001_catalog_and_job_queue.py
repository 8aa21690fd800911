"""catalog and job queue"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None


def upgrade() -> None:
    op.create_table('fabric_families',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('family_id', sa.String(), nullable=False),
    sa.Column('display_name', sa.String(), nullable=False),
    sa.Column('collection', sa.String(), nullable=True),
    sa.Column('status', sa.String(), server_default='active', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('family_id')
    )
    op.create_table('generation_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('family_id', sa.String(), nullable=False),
    sa.Column('color_id', sa.String(), nullable=False),
    sa.Column('cuts', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('swatch_url', sa.String(), nullable=True),
    sa.Column('result_urls', sa.JSON(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('swatch_key', sa.String(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('max_attempts', sa.Integer(), server_default='3', nullable=False),
    sa.Column('lease_owner', sa.String(), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('idempotency_key', sa.String(), nullable=True),
    sa.Column('cut_progress', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), server_default='false', nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key'),
    sa.UniqueConstraint('job_id')
    )
    # The runner's claim and the sweeper scan only live rows; partial indexes keep both cheap
    # however much history accumulates.
    op.create_index('ix_generation_jobs_pending', 'generation_jobs', ['next_attempt_at', 'created_at'],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index('ix_generation_jobs_leases', 'generation_jobs', ['lease_expires_at'],
                    postgresql_where=sa.text("status = 'processing'"))
    op.create_table('colors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fabric_family_id', sa.Integer(), nullable=False),
    sa.Column('color_id', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('hex_value', sa.String(), nullable=False),
    sa.Column('swatch_code', sa.String(), nullable=True),
    sa.Column('swatch_url', sa.String(), nullable=True),
    sa.Column('status', sa.String(), server_default='active', nullable=False),
    sa.ForeignKeyConstraint(['fabric_family_id'], ['fabric_families.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('color_id')
    )


def downgrade() -> None:
    op.drop_table('colors')
    op.drop_table('generation_jobs')
    op.drop_table('fabric_families')
