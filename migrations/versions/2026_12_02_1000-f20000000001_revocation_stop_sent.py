"""when a revocation's signals were taken by Temporal (recognitions.stop_sent_at)

A revoked title's benefits workflow must be told to stop, or its credit line stays open. A review workflow
that revokes tells it durably; an admin's revocation of an imported title tells it after the request's commit,
and an API that dies in between (or a Temporal that does not answer) left it untold for good. The column
says it was told; the worker's reconciler tells what is left untold. Titles revoked before this revision are
taken as told (they were, or were looked after by hand).

Revision ID: f20000000001
Revises: f19030000001
Create Date: 2026-12-02 10:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f20000000001"
down_revision: str | None = "f19030000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("recognitions", sa.Column("stop_sent_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE recognitions SET stop_sent_at = revoked_at WHERE status = 'revoked'")
    op.create_index(
        "ix_recognitions_revoked_untold",
        "recognitions",
        ["revoked_at"],
        unique=False,
        postgresql_where=sa.text("status = 'revoked' AND stop_sent_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_recognitions_revoked_untold",
        table_name="recognitions",
        postgresql_where=sa.text("status = 'revoked' AND stop_sent_at IS NULL"),
    )
    op.drop_column("recognitions", "stop_sent_at")
