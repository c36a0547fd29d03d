"""money that comes back, part two: bridge-loan terms and part repayments, reward budgets, fund administration (issue 18)

Revision ID: f18000000002
Revises: f18000000001
Create Date: 2026-12-01 18:10:00+00:00
"""

from collections.abc import Sequence

revision: str = "f18000000002"
down_revision: str | None = "f18000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
