"""The render cache: a completed cut's stored image, found again by everything that decides its pixels.

One row per distinct set of render inputs (`key_hash` is the SHA-256 of them, see
`serve_app/jobqueue/render_cache.py`); the inputs are kept beside it in plain columns so an operator can see
why two renders did or did not share an entry. `object_key` is the stored JPEG of the cut that made
the entry; hits point at it, so it must outlive the row. Additions only.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_render_cache"
down_revision = "0005_catalog_truth"


def upgrade() -> None:
    op.create_table(
        "render_cache",
        sa.Column("key_hash", sa.String(), primary_key=True),
        sa.Column("family_id", sa.String(), nullable=False),
        sa.Column("color_id", sa.String(), nullable=False),
        sa.Column("cut", sa.String(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("swatch_sha256", sa.String(), nullable=False),
        sa.Column("template_sha256", sa.String(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("image_size", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("detector", sa.String(), nullable=False),
        sa.Column("watermark", sa.String(), nullable=False),
        sa.Column("object_key", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # Invalidation deletes by color (swatch or words changed) and by family (words changed).
    op.create_index("ix_render_cache_color", "render_cache", ["color_id"])
    op.create_index("ix_render_cache_family", "render_cache", ["family_id"])


def downgrade() -> None:
    op.drop_table("render_cache")
