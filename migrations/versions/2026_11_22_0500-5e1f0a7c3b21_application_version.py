"""applications.version: bumped by triggers whenever the application or a row of its read view changes

Revision ID: 5e1f0a7c3b21
Revises: 0b40c95d08fb
Create Date: 2026-11-22 05:00:00+00:00

``GET /applications/{id}`` answers from a cache of rendered views keyed by this version
(services/applications/views.py). Triggers rather than application code bump it, so no writer - an API
route, a workflow activity, a migration, an operator's SQL - can change what the view shows without
changing the version:
- ``applications``: BEFORE UPDATE sets ``version = OLD.version + 1``;
- ``review_tasks``, ``transitions``, ``objections``, ``documents``: AFTER INSERT, UPDATE or DELETE touch the
  application row of the old and the new ``application_id`` (which the first trigger then bumps).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e1f0a7c3b21"
down_revision: str | None = "0b40c95d08fb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHILD_TABLES = ("review_tasks", "transitions", "objections", "documents")


def upgrade() -> None:
    op.add_column("applications", sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False))
    op.execute(
        """
        CREATE FUNCTION applications_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.version := OLD.version + 1;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER applications_bump_version BEFORE UPDATE ON applications "
        "FOR EACH ROW EXECUTE FUNCTION applications_bump_version()"
    )
    op.execute(
        """
        CREATE FUNCTION application_view_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' AND OLD.application_id IS NOT NULL THEN
                UPDATE applications SET version = version WHERE id = OLD.application_id;
            END IF;
            IF TG_OP <> 'DELETE' AND NEW.application_id IS NOT NULL
               AND (TG_OP = 'INSERT' OR NEW.application_id IS DISTINCT FROM OLD.application_id) THEN
                UPDATE applications SET version = version WHERE id = NEW.application_id;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    for table in CHILD_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_application_view_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION application_view_changed()"
        )


def downgrade() -> None:
    for table in CHILD_TABLES:
        op.execute(f"DROP TRIGGER {table}_application_view_changed ON {table}")
    op.execute("DROP TRIGGER applications_bump_version ON applications")
    op.execute("DROP FUNCTION application_view_changed()")
    op.execute("DROP FUNCTION applications_bump_version()")
    op.drop_column("applications", "version")
