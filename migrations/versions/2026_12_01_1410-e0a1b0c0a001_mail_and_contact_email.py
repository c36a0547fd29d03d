"""notifications by e-mail: the enterprise's contact address and the e-mail messages the relay sends

Revision ID: e0a1b0c0a001
Revises: e0a1b0c00001
Create Date: 2026-12-01 14:10:00+00:00

``enterprises.contact_email`` is optional (existing enterprises have none). ``mail_messages`` holds one row
per event and recipient, rendered at fan-out and sent by the relay (services/notifications/mail.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e0a1b0c0a001"
down_revision: str | None = "e0a1b0c00001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("enterprises", sa.Column("contact_email", sa.String(length=254), nullable=True))

    op.create_table(
        "mail_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("recipient_kind", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=400), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'dead')", name=op.f("ck_mail_messages_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["outbox_events.id"], name=op.f("fk_mail_messages_event_id_outbox_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_messages")),
    )
    op.create_index(
        "uq_mail_messages_event_recipient", "mail_messages", ["event_id", "recipient"], unique=True
    )
    op.create_index(
        "ix_mail_messages_due",
        "mail_messages",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_mail_messages_created", "mail_messages", ["created_at", "id"])


def downgrade() -> None:
    op.drop_table("mail_messages")
    op.drop_column("enterprises", "contact_email")
