"""programs as managed data, cultivation pools, imported recognitions (issue 19)

Revision ID: f19000000001
Revises: f18000000003
Create Date: 2026-12-01 19:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f19000000001"
down_revision: str | None = "f18000000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _pools_upgrade()


def downgrade() -> None:
    _pools_downgrade()


# --- cultivation pools (services/pools) ------------------------------------------------------------------


def _pools_upgrade() -> None:
    op.create_table(
        "pool_imports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("file_format", sa.String(length=8), nullable=False),
        sa.Column("encoding", sa.String(length=16), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("rows", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("accepted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("refused", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failure", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'finished', 'failed')", name=op.f("ck_pool_imports_status_known")
        ),
        sa.CheckConstraint("file_format IN ('csv', 'xlsx')", name=op.f("ck_pool_imports_file_format_known")),
        sa.CheckConstraint(
            "rows_done <= rows_total AND accepted + refused = rows_done", name=op.f("ck_pool_imports_counts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_imports")),
    )
    op.create_index(
        "ix_pool_imports_unfinished",
        "pool_imports",
        ["lease_until"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_table(
        "pool_members",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("industry", sa.String(length=100), nullable=False),
        sa.Column("tier_aimed", sa.String(length=32), nullable=False),
        sa.Column("notes", sa.String(length=1000), nullable=True),
        sa.Column("import_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("region_code ~ '^[0-9]{6}$'", name=op.f("ck_pool_members_region_code_digits")),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["pool_imports.id"],
            name=op.f("fk_pool_members_import_id_pool_imports"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_members")),
        sa.UniqueConstraint("program", "uscc", name=op.f("uq_pool_members_program_uscc")),
    )
    op.create_index(op.f("ix_pool_members_uscc"), "pool_members", ["uscc"], unique=False)
    op.create_index(
        "ix_pool_members_program_created_at_id", "pool_members", ["program", "created_at", "id"], unique=False
    )
    op.create_table(
        "pool_import_errors",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("import_id", sa.Uuid(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("value", sa.String(length=200), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["pool_imports.id"],
            name=op.f("fk_pool_import_errors_import_id_pool_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_import_errors")),
    )
    op.create_index(
        "ix_pool_import_errors_import_id_line", "pool_import_errors", ["import_id", "line"], unique=False
    )


def _pools_downgrade() -> None:
    op.drop_table("pool_import_errors")
    op.drop_table("pool_members")
    op.drop_table("pool_imports")
