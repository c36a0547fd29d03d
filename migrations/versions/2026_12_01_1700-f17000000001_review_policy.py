"""review as the policy runs it: drafts, re-review windows, expert panels, fraud bars (issue 17)

Revision ID: f17000000001
Revises: f16000000001
Create Date: 2026-12-01 17:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "f17000000001"
down_revision: str | None = "f16000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
