"""limits shared across API replicas (issue 16)

Revision ID: f16000000001
Revises: e0a1b0c0a001
Create Date: 2026-12-01 16:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "f16000000001"
down_revision: str | None = "e0a1b0c0a001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
