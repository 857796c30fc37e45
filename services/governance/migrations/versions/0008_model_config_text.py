"""A model's configuration as long as its task needs: a multiclass model names each class's
race configuration, comma-joined, which passes 200 characters from about eight classes on (up
to 100 classes, about 3,000 characters). Kept whole, governance can choose it back (a rollback
switches each class's race) and a task of many classes can run its runner-up as an entrant.

Revision ID: g0008
Revises: g0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "g0008"
down_revision = "g0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gov_models") as batch:
        batch.alter_column("config", type_=sa.Text(), existing_nullable=False)


def downgrade() -> None:
    # The old column holds 200 characters: longer names are cut (a rebuild from the events,
    # after upgrading again, restores them). The code before g0008 projects a ModelTrained's
    # config as it is: on PostgreSQL a longer one written since fails that projection (and a
    # rebuild) until the code is upgraded again; SQLite does not enforce the length.
    op.execute("UPDATE gov_models SET config = substr(config, 1, 200)")
    with op.batch_alter_table("gov_models") as batch:
        batch.alter_column("config", type_=sa.String(200), existing_nullable=False)
