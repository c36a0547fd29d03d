"""three-year cultivation plans and report read models (issue 19)

Revision ID: f19000000003
Revises: f19000000002
Create Date: 2026-12-01 19:20:00+00:00
"""

from collections.abc import Sequence

revision: str = "f19000000003"
down_revision: str | None = "f19000000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
