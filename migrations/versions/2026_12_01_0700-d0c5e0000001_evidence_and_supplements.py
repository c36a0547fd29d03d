"""evidence: documents cited by applications, supplements with corrected figures (issue 13)

Revision ID: d0c5e0000001
Revises: 7a3d2c1b9e04
Create Date: 2026-12-01 07:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "d0c5e0000001"
down_revision: str | None = "7a3d2c1b9e04"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
