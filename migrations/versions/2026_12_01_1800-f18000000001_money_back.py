"""money that comes back: drawdown repayments and revolving lines, bank reconciliation (issue 18)

Revision ID: f18000000001
Revises: f17000000001
Create Date: 2026-12-01 18:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "f18000000001"
down_revision: str | None = "f17000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
