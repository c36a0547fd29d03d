"""evidence: documents cited by applications, supplements with corrected figures (issue 13)

Revision ID: d0c5e0000001
Revises: 7a3d2c1b9e04
Create Date: 2026-12-01 07:00:00+00:00

- ``application_documents`` links an application to each document it cites (filed with it, or added by a
  supplement), replacing ``documents.application_id`` (one application per document): a document may now be
  cited by several applications of its enterprise. The rows of the old column become links.
  ``(application_id, document_id)`` is the key; ``document_id`` is indexed for "who may read this document".
- The application view's version trigger (5e1f0a7c3b21) moves from ``documents`` to the links.
- ``documents`` get the lists' indexes: ``(uscc, uploaded_at, id)`` for an enterprise's list (it replaces
  ``ix_documents_uscc``) and ``(uploaded_at, id)`` for everyone else's.
- ``transitions.changes``: what an event changed, field by field (old and new values).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d0c5e0000001"
down_revision: str | None = "7a3d2c1b9e04"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "application_documents",
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("cited_by", sa.String(length=200), nullable=False),
        sa.Column("cited_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "source IN ('application', 'supplement')", name=op.f("ck_application_documents_source_known")
        ),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_application_documents_application_id_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_application_documents_document_id_documents")
        ),
        sa.PrimaryKeyConstraint("application_id", "document_id", name=op.f("pk_application_documents")),
    )
    op.create_index(
        op.f("ix_application_documents_document_id"), "application_documents", ["document_id"], unique=False
    )
    op.execute(
        "INSERT INTO application_documents (application_id, document_id, source, cited_by, cited_at) "
        "SELECT application_id, id, 'application', uploaded_by, uploaded_at FROM documents "
        "WHERE application_id IS NOT NULL"
    )
    op.execute("DROP TRIGGER documents_application_view_changed ON documents")
    op.execute(
        "CREATE TRIGGER application_documents_application_view_changed "
        "AFTER INSERT OR UPDATE OR DELETE ON application_documents "
        "FOR EACH ROW EXECUTE FUNCTION application_view_changed()"
    )
    op.drop_index(op.f("ix_documents_application_id"), table_name="documents")
    op.drop_constraint(op.f("fk_documents_application_id_applications"), "documents", type_="foreignkey")
    op.drop_column("documents", "application_id")
    op.drop_index(op.f("ix_documents_uscc"), table_name="documents")
    op.create_index("ix_documents_uscc_uploaded_at_id", "documents", ["uscc", "uploaded_at", "id"])
    op.create_index("ix_documents_uploaded_at_id", "documents", ["uploaded_at", "id"])
    op.add_column("transitions", sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("transitions", "changes")
    op.drop_index("ix_documents_uploaded_at_id", table_name="documents")
    op.drop_index("ix_documents_uscc_uploaded_at_id", table_name="documents")
    op.create_index(op.f("ix_documents_uscc"), "documents", ["uscc"], unique=False)
    op.add_column("documents", sa.Column("application_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_documents_application_id_applications"),
        "documents",
        "applications",
        ["application_id"],
        ["id"],
    )
    op.create_index(op.f("ix_documents_application_id"), "documents", ["application_id"], unique=False)
    # One application per document again: the first that cited it.
    op.execute(
        "UPDATE documents SET application_id = first.application_id FROM ("
        "  SELECT DISTINCT ON (document_id) document_id, application_id FROM application_documents"
        "  ORDER BY document_id, cited_at, application_id"
        ") AS first WHERE first.document_id = documents.id"
    )
    op.execute("DROP TRIGGER application_documents_application_view_changed ON application_documents")
    op.execute(
        "CREATE TRIGGER documents_application_view_changed AFTER INSERT OR UPDATE OR DELETE ON documents "
        "FOR EACH ROW EXECUTE FUNCTION application_view_changed()"
    )
    op.drop_index(op.f("ix_application_documents_document_id"), table_name="application_documents")
    op.drop_table("application_documents")
