"""review as the policy runs it: drafts, re-review windows, expert panels, fraud bars (issue 17)

Revision ID: f17000000001
Revises: f16000000001
Create Date: 2026-12-01 17:00:00+00:00

Fraud bars: ``recognitions.revoked_for`` says what a revocation was for (``fraud`` or ``other``); a
revocation for fraud bars the enterprise from applying to any tier for the program's ``durations.fraud_bar``
(services/applications/service.py ``check_not_barred``). Revocations made before have none.

Drafts: an application may be saved with status ``draft`` (``POST /applications`` with ``"submit": false``),
edited and checked, then submitted; a draft has no review workflow, so the reconciler's index
(``ix_applications_unstarted``) leaves drafts out.

Re-review windows: ``recognitions.re_review_opened_at`` is when the re-review window of the recognition's
current validity opened (the program's ``durations.re_review_window`` before ``valid_until``); the review
workflow sets it, and clears it when an approved re-review extends the recognition.

Expert panels (services/applications/panels.py): ``experts`` (the pool) and ``expert_conflicts`` (enterprises an
expert declared a conflict with); ``expert_panels``, one per draw, with its seed and the pool snapshot it was
drawn from; ``panel_assignments``, each drawn expert's seat, score or vote.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f17000000001"
down_revision: str | None = "f16000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The application statuses before drafts, and the reconciler's index condition before and after.
STATUSES = (
    "screening",
    "in_review",
    "returned",
    "public_notice",
    "recognized",
    "ineligible",
    "rejected",
    "withdrawn",
)
UNSTARTED = sa.text("NOT workflow_started")
UNSTARTED_SUBMITTED = sa.text("NOT workflow_started AND status <> 'draft'")


def _application_statuses(statuses: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_applications_status_known"), "applications", type_="check")
    op.create_check_constraint(
        op.f("ck_applications_status_known"),
        "applications",
        "status IN ({})".format(", ".join(f"'{s}'" for s in statuses)),
    )


def upgrade() -> None:
    # -- fraud bars --
    op.add_column("recognitions", sa.Column("revoked_for", sa.String(length=20), nullable=True))
    op.create_check_constraint(
        op.f("ck_recognitions_revoked_for_known"), "recognitions", "revoked_for IN ('fraud', 'other')"
    )
    # -- re-review windows --
    op.add_column("recognitions", sa.Column("re_review_opened_at", sa.DateTime(timezone=True), nullable=True))
    # -- drafts --
    _application_statuses(("draft", *STATUSES))
    op.drop_index("ix_applications_unstarted", table_name="applications", postgresql_where=UNSTARTED)
    op.create_index(
        "ix_applications_unstarted", "applications", ["created_at"], postgresql_where=UNSTARTED_SUBMITTED
    )
    # -- expert panels --
    _create_panel_tables()


def _create_panel_tables() -> None:
    op.create_table(
        "experts",
        sa.Column("expert_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("fields", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("expert_id", name=op.f("pk_experts")),
    )
    op.create_table(
        "expert_conflicts",
        sa.Column("expert_id", sa.String(length=64), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("declared_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["expert_id"], ["experts.expert_id"], name=op.f("fk_expert_conflicts_expert_id_experts")
        ),
        sa.PrimaryKeyConstraint("expert_id", "uscc", name=op.f("pk_expert_conflicts")),
    )
    op.create_table(
        "expert_panels",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("seed", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=20), nullable=False),
        sa.Column("pass_score", sa.Integer(), nullable=True),
        sa.Column("applicant_region", sa.String(length=6), nullable=False),
        sa.Column("pool", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("chosen", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('sitting', 'decided', 'no_quorum', 'too_few_experts')",
            name=op.f("ck_expert_panels_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["application_id"], ["applications.id"], name=op.f("fk_expert_panels_application_id_applications")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expert_panels")),
        sa.UniqueConstraint("seed", name=op.f("uq_expert_panels_seed")),
    )
    op.create_index(op.f("ix_expert_panels_application_id"), "expert_panels", ["application_id"])
    op.create_table(
        "panel_assignments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("panel_id", sa.Uuid(), nullable=False),
        sa.Column("expert_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("vote", sa.String(length=10), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "score IS NULL OR score BETWEEN 0 AND 100", name=op.f("ck_panel_assignments_score_range")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'answered', 'absent')", name=op.f("ck_panel_assignments_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["expert_id"], ["experts.expert_id"], name=op.f("fk_panel_assignments_expert_id_experts")
        ),
        sa.ForeignKeyConstraint(
            ["panel_id"], ["expert_panels.id"], name=op.f("fk_panel_assignments_panel_id_expert_panels")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_panel_assignments")),
        sa.UniqueConstraint("panel_id", "expert_id", name=op.f("uq_panel_assignments_panel_id_expert_id")),
    )
    op.create_index(op.f("ix_panel_assignments_expert_id"), "panel_assignments", ["expert_id"])
    op.create_index(op.f("ix_panel_assignments_panel_id"), "panel_assignments", ["panel_id"])


def downgrade() -> None:
    # -- expert panels --
    op.drop_table("panel_assignments")
    op.drop_table("expert_panels")
    op.drop_table("expert_conflicts")
    op.drop_table("experts")
    # -- drafts --
    op.execute(
        "DELETE FROM application_documents WHERE application_id IN "
        "(SELECT id FROM applications WHERE status = 'draft')"
    )
    op.execute("DELETE FROM applications WHERE status = 'draft'")
    op.drop_index(
        "ix_applications_unstarted", table_name="applications", postgresql_where=UNSTARTED_SUBMITTED
    )
    op.create_index("ix_applications_unstarted", "applications", ["created_at"], postgresql_where=UNSTARTED)
    _application_statuses(STATUSES)
    # -- re-review windows --
    op.drop_column("recognitions", "re_review_opened_at")
    # -- fraud bars --
    op.drop_constraint(op.f("ck_recognitions_revoked_for_known"), "recognitions", type_="check")
    op.drop_column("recognitions", "revoked_for")
