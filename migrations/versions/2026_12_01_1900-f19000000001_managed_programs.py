"""programs as managed data, cultivation pools, imported recognitions (issue 19)

Revision ID: f19000000001
Revises: f18000000003
Create Date: 2026-12-01 19:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "f19000000001"
down_revision: str | None = "f18000000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
