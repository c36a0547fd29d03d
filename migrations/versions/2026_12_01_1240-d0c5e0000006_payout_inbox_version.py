"""payouts: a version the finance inbox checks before reading its page again

Revision ID: d0c5e0000006
Revises: d0c5e0000005
Create Date: 2026-12-01 12:40:00+00:00

``payout_inbox_version`` holds one row whose ``version`` grows with every committed change to a payout or to
a decision on one (``drawdowns``, ``bridge_loans``, ``listing_rewards``, ``payout_approvals``). The bump is a
constraint trigger deferred to the end of the transaction: the version row is then the last lock any payout
transaction takes, so two transactions that touch the same payouts in different orders still cannot deadlock
on it, and it is held only while the transaction commits. The API's inbox reads the version before its page,
and reads the page again only when the version moved (services/credit/inbox.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d0c5e0000006"
down_revision: str | None = "d0c5e0000005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("drawdowns", "bridge_loans", "listing_rewards", "payout_approvals")

BUMP = """
CREATE FUNCTION payout_inbox_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payout_inbox_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "payout_inbox_version",
        sa.Column("id", sa.SmallInteger(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_payout_inbox_version_one_row")),
    )
    op.execute("INSERT INTO payout_inbox_version (id, version) VALUES (1, 0)")
    op.execute(BUMP)
    for table in TABLES:
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {table}_inbox_version AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION payout_inbox_bump()"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_inbox_version ON {table}")
    op.execute("DROP FUNCTION payout_inbox_bump()")
    op.drop_table("payout_inbox_version")
