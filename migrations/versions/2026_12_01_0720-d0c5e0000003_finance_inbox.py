"""finance inbox: indexes for GET /payouts and GET /drawdowns (issue 13)

Revision ID: d0c5e0000003
Revises: d0c5e0000002
Create Date: 2026-12-01 07:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "d0c5e0000003"
down_revision: str | None = "d0c5e0000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
