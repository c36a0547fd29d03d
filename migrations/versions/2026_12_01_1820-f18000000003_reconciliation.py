"""bank reconciliation: daily statements compared with the ledger, and their mismatches (issue 18)

Revision ID: f18000000003
Revises: f18000000002
Create Date: 2026-12-01 18:20:00+00:00
"""

from collections.abc import Sequence

revision: str = "f18000000003"
down_revision: str | None = "f18000000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
