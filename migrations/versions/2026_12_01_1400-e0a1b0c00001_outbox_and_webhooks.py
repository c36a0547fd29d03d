"""notifications: the transactional outbox, webhook endpoints, deliveries and attempts, read marks

Revision ID: e0a1b0c00001
Revises: d0c5e0000006
Create Date: 2026-12-01 14:00:00+00:00

``outbox_events`` takes the events domains write in the transaction of the change they tell of
(services/events.py); a statement trigger sends ``NOTIFY giantflow_outbox`` on insert, which PostgreSQL
delivers at commit, so the relay (services/notifications/relay.py) wakes as soon as an event is visible.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e0a1b0c00001"
down_revision: str | None = "d0c5e0000006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFY = """
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('giantflow_outbox', '');
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("aggregate_type", sa.String(length=32), nullable=False),
        sa.Column("aggregate_id", sa.Uuid(), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=True),
        sa.Column("reviewer_level", sa.String(length=20), nullable=True),
        sa.Column("region_code", sa.String(length=6), nullable=True),
        sa.Column("group_name", sa.String(length=100), nullable=True),
        sa.Column("finance", sa.Boolean(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        # When the row was written (not when its transaction began): events of one change stay in order.
        sa.Column(
            "occurred_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.Column("fanned_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("seq", name=op.f("uq_outbox_events_seq")),
    )
    op.create_index(
        "ix_outbox_events_pending",
        "outbox_events",
        ["seq"],
        postgresql_where=sa.text("fanned_out_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_events_uscc",
        "outbox_events",
        ["uscc", "occurred_at"],
        postgresql_where=sa.text("uscc IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_events_reviewers",
        "outbox_events",
        ["reviewer_level", "region_code", "occurred_at"],
        postgresql_where=sa.text("reviewer_level IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_events_group",
        "outbox_events",
        ["group_name", "occurred_at"],
        postgresql_where=sa.text("group_name IS NOT NULL"),
    )
    op.create_index(
        "ix_outbox_events_finance", "outbox_events", ["occurred_at"], postgresql_where=sa.text("finance")
    )
    op.create_index("ix_outbox_events_aggregate", "outbox_events", ["aggregate_id", "seq"])
    op.execute(NOTIFY)
    op.execute(
        "CREATE TRIGGER outbox_events_notify AFTER INSERT ON outbox_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("owner_role", sa.String(length=20), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=True),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("previous_secret", sa.String(length=100), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(op.f("ix_webhook_endpoints_owner"), "webhook_endpoints", ["owner"])
    op.create_index(
        "ix_webhook_endpoints_live",
        "webhook_endpoints",
        ["id"],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("aggregate_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.SmallInteger(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name=op.f("ck_webhook_deliveries_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["outbox_events.id"], name=op.f("fk_webhook_deliveries_event_id_outbox_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "uq_webhook_deliveries_event_endpoint", "webhook_deliveries", ["event_id", "endpoint_id"], unique=True
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_order",
        "webhook_deliveries",
        ["endpoint_id", "aggregate_id", "event_seq"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "created_at", "id"]
    )
    op.create_index(
        "ix_webhook_deliveries_dead",
        "webhook_deliveries",
        ["dead_at", "id"],
        postgresql_where=sa.text("status = 'dead'"),
    )

    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column(
            "attempted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("response_prefix", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(op.f("ix_webhook_attempts_delivery_id"), "webhook_attempts", ["delivery_id"])

    op.create_table(
        "notification_reads",
        sa.Column("reader", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["outbox_events.id"], name=op.f("fk_notification_reads_event_id_outbox_events")
        ),
        sa.PrimaryKeyConstraint("reader", "event_id", name=op.f("pk_notification_reads")),
    )


def downgrade() -> None:
    op.drop_table("notification_reads")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.execute("DROP TRIGGER outbox_events_notify ON outbox_events")
    op.execute("DROP FUNCTION outbox_notify()")
    op.drop_table("outbox_events")
