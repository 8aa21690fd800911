"""The database is the catalog's truth: the English words a prompt needs, and swatches by storage key.

`fabric_families.fabric` and `colors.english` are what the runner puts in a prompt (the
display names are Spanish shop labels). Existing rows are backfilled with the shipped catalog's words
as of this revision where the ids match, and otherwise with the display name, which is what the runner
rendered for rows the shipped file did not know: nothing renders differently across the upgrade, and
an admin can correct those words afterwards.

`colors.swatch_key` is the storage key of a swatch an admin set (`colors.swatch_version` counts its
replacements, so its URL changes even where the key does not); a URL cannot be stored (presigned
URLs expire). Mapping the URLs older versions kept in `colors.swatch_url` back to keys needs the
storage configuration, so the service does that when it starts (`adopt_swatch_urls`).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_catalog_truth"
down_revision = "0004_lease_token"

# A frozen copy: a migration must not change meaning when catalog/fabrics.json is edited later.
SHIPPED_FABRIC_WORDS = {
    "lana-fria": "fine worsted cool wool",
    "lino": "Irish linen",
    "tweed": "Donegal tweed",
}
SHIPPED_COLOR_WORDS = {
    "lana-fria-azul-marino": "navy blue",
    "lana-fria-gris-carbon": "charcoal grey",
    "lana-fria-gris-perla": "pearl grey",
    "lana-fria-negro": "black",
    "lino-arena": "sand beige",
    "lino-oliva": "olive green",
    "lino-celeste": "sky blue",
    "lino-blanco-roto": "off-white",
    "tweed-marron": "tobacco brown",
    "tweed-verde-bosque": "forest green",
    "tweed-gris-brezo": "heather grey",
    "tweed-burdeos": "burgundy",
}


def _backfill(table: str, id_column: str, words_column: str, name_column: str, shipped: dict[str, str]) -> None:
    rows = sa.table(table, sa.column(id_column, sa.String), sa.column(words_column, sa.String))
    for row_id, words in shipped.items():
        op.execute(rows.update().where(rows.c[id_column] == row_id).values({words_column: words}))
    op.execute(f"UPDATE {table} SET {words_column} = {name_column} WHERE {words_column} IS NULL")
    op.alter_column(table, words_column, nullable=False)


def upgrade() -> None:
    op.add_column("fabric_families", sa.Column("fabric", sa.String(), nullable=True))
    op.add_column("colors", sa.Column("english", sa.String(), nullable=True))
    op.add_column("colors", sa.Column("swatch_key", sa.String(), nullable=True))
    op.add_column("colors", sa.Column("swatch_version", sa.Integer(), nullable=False, server_default="0"))
    _backfill("fabric_families", "family_id", "fabric", "display_name", SHIPPED_FABRIC_WORDS)
    _backfill("colors", "color_id", "english", "name", SHIPPED_COLOR_WORDS)


def downgrade() -> None:
    op.drop_column("colors", "swatch_version")
    op.drop_column("colors", "swatch_key")
    op.drop_column("colors", "english")
    op.drop_column("fabric_families", "fabric")
