"""certificates and public lists: indexes for public verification and notices (issue 13)

Revision ID: d0c5e0000004
Revises: d0c5e0000003
Create Date: 2026-12-01 07:00:00+00:00

``applications.notice_ends_at``: when an application's public notice ends, written by the review transition
that opens the notice (the review workflow's own timer), and a partial index of (notice_ends_at, id) over the
applications on notice, which GET /public/notices walks in order. Public verification looks a recognition up
by ``certificate_no``, which its unique constraint indexes already.

Applications already on notice when this runs keep a null end (the notice period is program data the
migration does not read) and are left out of the public list until they leave the notice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d0c5e0000004"
down_revision: str | None = "d0c5e0000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("applications", sa.Column("notice_ends_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_applications_on_notice",
        "applications",
        ["notice_ends_at", "id"],
        postgresql_where=sa.text("status = 'public_notice'"),
    )


def downgrade() -> None:
    op.drop_index("ix_applications_on_notice", table_name="applications")
    op.drop_column("applications", "notice_ends_at")
