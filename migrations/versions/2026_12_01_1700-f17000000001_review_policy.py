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
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

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


def downgrade() -> None:
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
