"""programs as managed data (versions, batches, targets) and imported recognitions (issue 19)

Program versions (services/catalog): one row per version of a program's policy document, append-only by
trigger (a version that judged an application reads the same forever; editing means a new version), and the
version that judged each application, recorded on it at submission.

Imported recognitions (services/applications/imported.py): a recognition without an application, with its
source - the ministry's list reference, its batch, who entered it.

Revision ID: f19000000002
Revises: f19000000001
Create Date: 2026-12-01 19:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f19000000002"
down_revision: str | None = "f19000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _versions_upgrade()
    _imports_upgrade()


def downgrade() -> None:
    _imports_downgrade()
    _versions_downgrade()


# --- program versions (services/catalog) --------------------------------------------------------------


def _versions_upgrade() -> None:
    op.create_table(
        "program_versions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_program_versions_version_positive")),
        sa.CheckConstraint("source IN ('file', 'api')", name=op.f("ck_program_versions_source_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_versions")),
        sa.UniqueConstraint("program", "version", name=op.f("uq_program_versions_program_version")),
    )
    # giantflow_append_only() is the initial schema's (transitions): any UPDATE or DELETE is refused.
    op.execute(
        "CREATE TRIGGER program_versions_append_only BEFORE UPDATE OR DELETE ON program_versions "
        "FOR EACH ROW EXECUTE FUNCTION giantflow_append_only()"
    )
    op.add_column("applications", sa.Column("program_version", sa.Integer(), nullable=True))


def _versions_downgrade() -> None:
    op.drop_column("applications", "program_version")
    op.execute("DROP TRIGGER IF EXISTS program_versions_append_only ON program_versions")
    op.drop_table("program_versions")


# --- imported recognitions (services/applications/imported.py) ------------------------------------------


def _imports_upgrade() -> None:
    op.alter_column("recognitions", "application_id", existing_type=sa.Uuid(), nullable=True)
    op.add_column(
        "recognitions", sa.Column("source", sa.String(length=8), server_default="review", nullable=False)
    )
    op.add_column("recognitions", sa.Column("list_reference", sa.String(length=100), nullable=True))
    op.add_column("recognitions", sa.Column("batch", sa.String(length=32), nullable=True))
    op.add_column("recognitions", sa.Column("imported_by", sa.String(length=200), nullable=True))
    op.create_check_constraint(
        op.f("ck_recognitions_source_known"),
        "recognitions",
        "(source = 'review' AND application_id IS NOT NULL) "
        "OR (source = 'import' AND application_id IS NULL AND list_reference IS NOT NULL)",
    )


def _imports_downgrade() -> None:
    op.execute("DELETE FROM recognitions WHERE source = 'import'")
    op.drop_constraint(op.f("ck_recognitions_source_known"), "recognitions", type_="check")
    op.drop_column("recognitions", "imported_by")
    op.drop_column("recognitions", "batch")
    op.drop_column("recognitions", "list_reference")
    op.drop_column("recognitions", "source")
    op.alter_column("recognitions", "application_id", existing_type=sa.Uuid(), nullable=False)
