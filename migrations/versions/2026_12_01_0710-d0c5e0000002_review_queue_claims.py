"""review queue: claims, groups, filters and their indexes (issue 13)

Revision ID: d0c5e0000002
Revises: d0c5e0000001
Create Date: 2026-12-01 07:00:00+00:00

- ``review_tasks`` carries what the queue filters, sorts and counts by without a join: the application's
  ``uscc``, ``program`` and ``tier`` and the enterprise's name, copied in by a BEFORE INSERT trigger (and
  filled in here for the rows there are), so no task can disagree with its application.
- A reviewer's claim: ``claimed_by`` until ``claim_expires_at`` (a lapsed claim counts as none).
- The queue's indexes, all partial on open tasks (the few rows of a table that keeps every task ever opened):
  by stage and due date; by stage, region and due date; escalated tasks by group and due date; claims by
  holder; the search by USCC prefix and by lower-cased name prefix (the database's collation is C, so a
  plain btree serves a LIKE prefix); and past-due tasks not flagged overdue yet. They replace
  ``ix_review_tasks_queue`` (stage, status, created_at).
- ``review_queue_counts``: open tasks counted by stage, region, escalation group, program, tier and overdue
  flag, kept by an AFTER trigger on ``review_tasks`` in the same transaction (a queue's counts per filter
  value are then a sum over a few hundred rows, not a count of its tasks); filled here from the open tasks.
  Each row also counts the ``changes`` of the open tasks it covers (a claim too): their sum over a queue
  grows with every change to it, which is what the API's cache of queue pages checks.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d0c5e0000002"
down_revision: str | None = "d0c5e0000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("status = 'open'")
COPIED = {"uscc": 18, "enterprise_name": 200, "program": 64, "tier": 32}

COPY_FUNCTION = """
CREATE FUNCTION review_task_copy_application() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT a.uscc, e.name, a.program, a.tier
    INTO NEW.uscc, NEW.enterprise_name, NEW.program, NEW.tier
    FROM applications a JOIN enterprises e ON e.uscc = a.uscc
    WHERE a.id = NEW.application_id;
    RETURN NEW;
END
$$
"""


COUNT_KEY = ("stage", "region_code", "escalated_to", "program", "tier", "overdue")
KEY = "(stage, region_code, escalated_to, program, tier, overdue)"


def _key_of(row: str) -> str:
    return (
        f"({row}.stage, {row}.region_code, coalesce({row}.escalated_to, ''), {row}.program, {row}.tier, "
        f"{row}.overdue)"
    )


COUNT_FUNCTION = f"""
CREATE FUNCTION review_queue_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stays boolean := TG_OP = 'UPDATE' AND NEW.status = 'open' AND {_key_of("NEW")} = {_key_of("OLD")};
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status = 'open' THEN
        -- leaves its row (a claim or a release stays in it: the count stands, the row has changed)
        UPDATE review_queue_counts SET tasks = tasks - CASE WHEN stays THEN 0 ELSE 1 END, changes = changes + 1
        WHERE {KEY} = {_key_of("OLD")};
        IF stays THEN
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status = 'open' THEN
        INSERT INTO review_queue_counts AS c ({KEY[1:-1]}, tasks, changes)
        VALUES ({_key_of("NEW")[1:-1]}, 1, 1)
        ON CONFLICT {KEY} DO UPDATE SET tasks = c.tasks + 1, changes = c.changes + 1;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    for column, length in COPIED.items():
        op.add_column("review_tasks", sa.Column(column, sa.String(length=length), nullable=True))
    op.add_column("review_tasks", sa.Column("claimed_by", sa.String(length=200), nullable=True))
    op.add_column("review_tasks", sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE review_tasks t "
        "SET uscc = a.uscc, enterprise_name = e.name, program = a.program, tier = a.tier "
        "FROM applications a JOIN enterprises e ON e.uscc = a.uscc WHERE a.id = t.application_id"
    )
    for column in COPIED:
        op.alter_column("review_tasks", column, nullable=False)
    op.execute(COPY_FUNCTION)
    op.execute(
        "CREATE TRIGGER review_tasks_copy_application BEFORE INSERT OR UPDATE OF application_id "
        "ON review_tasks FOR EACH ROW EXECUTE FUNCTION review_task_copy_application()"
    )

    op.drop_index("ix_review_tasks_queue", table_name="review_tasks")
    op.create_index(
        "ix_review_tasks_open_stage_due", "review_tasks", ["stage", "due_at", "id"], postgresql_where=OPEN
    )
    op.create_index(
        "ix_review_tasks_open_region_due",
        "review_tasks",
        ["stage", "region_code", "due_at", "id"],
        postgresql_where=OPEN,
    )
    op.create_index(
        "ix_review_tasks_open_escalated_due",
        "review_tasks",
        ["escalated_to", "due_at", "id"],
        postgresql_where=sa.text("status = 'open' AND escalated_to IS NOT NULL"),
    )
    op.create_index(
        "ix_review_tasks_open_claims",
        "review_tasks",
        ["claimed_by", "claim_expires_at"],
        postgresql_where=sa.text("status = 'open' AND claimed_by IS NOT NULL"),
    )
    op.create_index("ix_review_tasks_open_uscc", "review_tasks", ["uscc"], postgresql_where=OPEN)
    op.create_index(
        "ix_review_tasks_open_name",
        "review_tasks",
        [sa.text("lower(enterprise_name)")],
        postgresql_where=OPEN,
    )
    op.create_index(
        "ix_review_tasks_open_unflagged_due",
        "review_tasks",
        ["stage", "due_at"],
        postgresql_where=sa.text("status = 'open' AND NOT overdue"),
    )

    op.create_table(
        "review_queue_counts",
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("escalated_to", sa.String(length=100), nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("overdue", sa.Boolean(), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("changes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*COUNT_KEY, name=op.f("pk_review_queue_counts")),
    )
    op.execute(
        f"INSERT INTO review_queue_counts ({KEY[1:-1]}, tasks, changes) "
        "SELECT stage, region_code, coalesce(escalated_to, ''), program, tier, overdue, count(*), count(*) "
        "FROM review_tasks WHERE status = 'open' GROUP BY 1, 2, 3, 4, 5, 6"
    )
    op.create_index("ix_review_queue_counts_escalated_to", "review_queue_counts", ["escalated_to"])
    op.execute(COUNT_FUNCTION)
    op.execute(
        "CREATE TRIGGER review_tasks_count AFTER INSERT OR UPDATE OR DELETE ON review_tasks "
        "FOR EACH ROW EXECUTE FUNCTION review_queue_count()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER review_tasks_count ON review_tasks")
    op.execute("DROP FUNCTION review_queue_count()")
    op.drop_index("ix_review_queue_counts_escalated_to", table_name="review_queue_counts")
    op.drop_table("review_queue_counts")
    for name in (
        "ix_review_tasks_open_unflagged_due",
        "ix_review_tasks_open_name",
        "ix_review_tasks_open_uscc",
        "ix_review_tasks_open_claims",
        "ix_review_tasks_open_escalated_due",
        "ix_review_tasks_open_region_due",
        "ix_review_tasks_open_stage_due",
    ):
        op.drop_index(name, table_name="review_tasks")
    op.create_index("ix_review_tasks_queue", "review_tasks", ["stage", "status", "created_at"], unique=False)
    op.execute("DROP TRIGGER review_tasks_copy_application ON review_tasks")
    op.execute("DROP FUNCTION review_task_copy_application()")
    op.drop_column("review_tasks", "claim_expires_at")
    op.drop_column("review_tasks", "claimed_by")
    for column in reversed(COPIED):
        op.drop_column("review_tasks", column)
