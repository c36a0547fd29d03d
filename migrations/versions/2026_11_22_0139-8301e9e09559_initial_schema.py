"""initial schema

Revision ID: 8301e9e09559
Revises:
Create Date: 2026-11-22 01:39:53.774911+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "8301e9e09559"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_FUNCTION = """
CREATE FUNCTION giantflow_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "certificate_sequences",
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("program", "year", "tier", name=op.f("pk_certificate_sequences")),
    )
    op.create_table(
        "enterprises",
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("industry", sa.String(length=100), nullable=False),
        sa.Column("founded_on", sa.Date(), nullable=False),
        sa.Column("registered_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("region_code ~ '^[0-9]{6}$'", name=op.f("ck_enterprises_region_code_digits")),
        sa.PrimaryKeyConstraint("uscc", name=op.f("pk_enterprises")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("caller", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "applications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("batch", sa.String(length=32), nullable=False),
        sa.Column("ruleset", sa.String(length=32), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=True),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("screening", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("submitted_by", sa.String(length=200), nullable=False),
        sa.Column("re_review_of", sa.Uuid(), nullable=True),
        sa.Column("supplement_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("workflow_started", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('screening', 'in_review', 'returned', 'public_notice', 'recognized', 'ineligible', 'rejected', 'withdrawn')",
            name=op.f("ck_applications_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["uscc"], ["enterprises.uscc"], name=op.f("fk_applications_uscc_enterprises")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applications")),
    )
    op.create_index(op.f("ix_applications_status"), "applications", ["status"], unique=False)
    op.create_index(op.f("ix_applications_uscc"), "applications", ["uscc"], unique=False)
    op.create_index(
        "uq_applications_open_per_batch",
        "applications",
        ["uscc", "program", "tier", "batch"],
        unique=True,
        postgresql_where=sa.text("status IN ('screening', 'in_review', 'returned', 'public_notice')"),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("uploaded_by", sa.String(length=200), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"], ["applications.id"], name=op.f("fk_documents_application_id_applications")
        ),
        sa.ForeignKeyConstraint(["uscc"], ["enterprises.uscc"], name=op.f("fk_documents_uscc_enterprises")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
    )
    op.create_index(op.f("ix_documents_uscc"), "documents", ["uscc"], unique=False)
    op.create_index(op.f("ix_documents_application_id"), "documents", ["application_id"], unique=False)
    op.create_table(
        "objections",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("filed_by", sa.String(length=200), nullable=False),
        sa.Column("filed_role", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolution_reason", sa.Text(), nullable=True),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["application_id"], ["applications.id"], name=op.f("fk_objections_application_id_applications")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_objections")),
    )
    op.create_index(op.f("ix_objections_application_id"), "objections", ["application_id"], unique=False)
    op.create_table(
        "recognitions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("certificate_no", sa.String(length=80), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"], ["applications.id"], name=op.f("fk_recognitions_application_id_applications")
        ),
        sa.ForeignKeyConstraint(
            ["uscc"], ["enterprises.uscc"], name=op.f("fk_recognitions_uscc_enterprises")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognitions")),
        sa.UniqueConstraint("application_id", name=op.f("uq_recognitions_application_id")),
        sa.UniqueConstraint("certificate_no", name=op.f("uq_recognitions_certificate_no")),
    )
    op.create_index(op.f("ix_recognitions_uscc"), "recognitions", ["uscc"], unique=False)
    op.create_table(
        "review_tasks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("overdue", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("escalated_to", sa.String(length=100), nullable=True),
        sa.Column("decision", sa.String(length=20), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["application_id"], ["applications.id"], name=op.f("fk_review_tasks_application_id_applications")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_tasks")),
    )
    op.create_index(op.f("ix_review_tasks_application_id"), "review_tasks", ["application_id"], unique=False)
    op.create_index("ix_review_tasks_queue", "review_tasks", ["stage", "status", "created_at"], unique=False)
    op.create_index(
        "uq_review_tasks_one_open",
        "review_tasks",
        ["application_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "transitions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("event_key", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("internal_note", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"], ["applications.id"], name=op.f("fk_transitions_application_id_applications")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transitions")),
        sa.UniqueConstraint("event_key", name=op.f("uq_transitions_event_key")),
    )
    op.create_index(op.f("ix_transitions_application_id"), "transitions", ["application_id"], unique=False)
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(
        "CREATE TRIGGER transitions_append_only BEFORE UPDATE OR DELETE ON transitions "
        "FOR EACH ROW EXECUTE FUNCTION giantflow_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS transitions_append_only ON transitions")
    op.execute("DROP FUNCTION IF EXISTS giantflow_append_only()")
    op.drop_index(op.f("ix_transitions_application_id"), table_name="transitions")
    op.drop_table("transitions")
    op.drop_index(
        "uq_review_tasks_one_open", table_name="review_tasks", postgresql_where=sa.text("status = 'open'")
    )
    op.drop_index("ix_review_tasks_queue", table_name="review_tasks")
    op.drop_index(op.f("ix_review_tasks_application_id"), table_name="review_tasks")
    op.drop_table("review_tasks")
    op.drop_index(op.f("ix_recognitions_uscc"), table_name="recognitions")
    op.drop_table("recognitions")
    op.drop_index(op.f("ix_objections_application_id"), table_name="objections")
    op.drop_table("objections")
    op.drop_index(op.f("ix_documents_uscc"), table_name="documents")
    op.drop_index(op.f("ix_documents_application_id"), table_name="documents")
    op.drop_table("documents")
    op.drop_index(
        "uq_applications_open_per_batch",
        table_name="applications",
        postgresql_where=sa.text("status IN ('screening', 'in_review', 'returned', 'public_notice')"),
    )
    op.drop_index(op.f("ix_applications_uscc"), table_name="applications")
    op.drop_index(op.f("ix_applications_status"), table_name="applications")
    op.drop_table("applications")
    op.drop_table("idempotency_keys")
    op.drop_table("enterprises")
    op.drop_table("certificate_sequences")
