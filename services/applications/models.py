"""ORM models of the applications domain: enterprises, applications, review tasks, audit, recognitions."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.contracts import review_workflow_id
from services.db import Base

OPEN_STATUSES = ("screening", "in_review", "returned", "public_notice")


class Enterprise(Base):
    __tablename__ = "enterprises"

    uscc: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(6))
    industry: Mapped[str] = mapped_column(String(100))
    founded_on: Mapped[date] = mapped_column(Date)
    # Where the service e-mails the enterprise (services/notifications/mail.py reads it by USCC); optional.
    contact_email: Mapped[str | None] = mapped_column(String(254))
    registered_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (CheckConstraint("region_code ~ '^[0-9]{6}$'", name="region_code_digits"),)


class Application(Base):
    __tablename__ = "applications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    uscc: Mapped[str] = mapped_column(ForeignKey("enterprises.uscc"), index=True)
    program: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    batch: Mapped[str] = mapped_column(String(32))
    ruleset: Mapped[str] = mapped_column(String(32))
    # The version of its program that judged it (services/catalog), recorded at submission: its screening,
    # review and benefits keep reading that version whatever is created after. None: filed before versions.
    program_version: Mapped[int | None] = mapped_column(Integer)
    region_code: Mapped[str] = mapped_column(String(6))
    status: Mapped[str] = mapped_column(String(20), index=True)
    stage: Mapped[str | None] = mapped_column(String(20))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB)
    screening: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    submitted_by: Mapped[str] = mapped_column(String(200))
    re_review_of: Mapped[uuid.UUID | None]  # the recognition this re-review renews
    supplement_due_at: Mapped[datetime | None]
    # When the public notice ends (written by the transition that opens it): the public notices' order.
    notice_ends_at: Mapped[datetime | None]
    workflow_started: Mapped[bool] = mapped_column(server_default=text("false"))
    # When it was filed: a draft's is set again when it is submitted (lists, the reconciler and screening
    # count from the filing, not from the first save of a draft).
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Bumped by database triggers on every change to the application or to a row its read view shows
    # (tasks, transitions, documents, objections): the key of the rendered-view cache (views.py).
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))

    __table_args__ = (
        # The reconciler's query: committed applications whose review workflow is not known to run (a draft
        # has none to run until it is submitted).
        Index(
            "ix_applications_unstarted",
            "created_at",
            postgresql_where=text("NOT workflow_started AND status <> 'draft'"),
        ),
        Index("ix_applications_created_at_id", "created_at", "id"),  # every list's order
        # The cohort report (services/reports): a program's applications, a batch's, a tier's.
        Index("ix_applications_program_batch_tier", "program", "batch", "tier"),
        # GET /public/notices: the few applications on notice, by notice end.
        Index(
            "ix_applications_on_notice",
            "notice_ends_at",
            "id",
            postgresql_where=text("status = 'public_notice'"),
        ),
        Index(
            "uq_applications_open_per_batch",
            "uscc",
            "program",
            "tier",
            "batch",
            unique=True,
            postgresql_where=text("status IN ('screening', 'in_review', 'returned', 'public_notice')"),
        ),
        CheckConstraint(
            "status IN ('draft', 'screening', 'in_review', 'returned', 'public_notice', 'recognized', "
            "'ineligible', 'rejected', 'withdrawn')",
            name="status_known",
        ),
    )

    @property
    def workflow_id(self) -> str:
        return review_workflow_id(self.id)


class Document(Base):
    """An evidence file an enterprise uploaded (its bytes are stored by content, ``sha256``); the
    applications that cite it are in ``application_documents``."""

    __tablename__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    uscc: Mapped[str] = mapped_column(ForeignKey("enterprises.uscc"))
    kind: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_by: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_documents_uscc_uploaded_at_id", "uscc", "uploaded_at", "id"),  # an enterprise's list
        Index("ix_documents_uploaded_at_id", "uploaded_at", "id"),  # every list's order
    )


class ApplicationDocument(Base):
    """Evidence: a document an application cites - filed with the application, or added by a supplement.
    A document may be cited by several applications of its enterprise (a re-review, another tier); the
    reviewers who may read any of them may read it."""

    __tablename__ = "application_documents"

    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id"), primary_key=True, index=True)
    source: Mapped[str] = mapped_column(String(20))  # application, supplement
    cited_by: Mapped[str] = mapped_column(String(200))
    cited_at: Mapped[datetime]

    __table_args__ = (CheckConstraint("source IN ('application', 'supplement')", name="source_known"),)


OPEN_TASK = text("status = 'open'")


class ReviewTask(Base):
    """The reviewer queue read model: written in the same transaction as the stage change. The application's
    USCC, program and tier and its enterprise's name are copied in by a database trigger when the row is
    written (the queue filters, sorts and counts by them without a join); a reviewer's claim
    (``claimed_by`` until ``claim_expires_at``; lapsed, it counts as none) ends when the task closes."""

    __tablename__ = "review_tasks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), index=True)
    stage: Mapped[str] = mapped_column(String(20))
    region_code: Mapped[str] = mapped_column(String(6))
    status: Mapped[str] = mapped_column(String(20))  # open, decided, returned, closed
    due_at: Mapped[datetime]
    overdue: Mapped[bool] = mapped_column(server_default=text("false"))
    escalated_to: Mapped[str | None] = mapped_column(String(100))
    decision: Mapped[str | None] = mapped_column(String(20))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    # Copied from the application and its enterprise by the trigger review_tasks_copy_application.
    uscc: Mapped[str] = mapped_column(String(18), server_default=FetchedValue())
    enterprise_name: Mapped[str] = mapped_column(String(200), server_default=FetchedValue())
    program: Mapped[str] = mapped_column(String(64), server_default=FetchedValue())
    tier: Mapped[str] = mapped_column(String(32), server_default=FetchedValue())
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_expires_at: Mapped[datetime | None]

    __table_args__ = (
        Index("uq_review_tasks_one_open", "application_id", unique=True, postgresql_where=OPEN_TASK),
        # GET /review-tasks, open tasks only, by due date: a stage's queue (the whole country, a province) ...
        Index("ix_review_tasks_open_stage_due", "stage", "due_at", "id", postgresql_where=OPEN_TASK),
        # ... a stage's queue in a region (a district exactly, a city or province as a range) ...
        Index(
            "ix_review_tasks_open_region_due",
            "stage",
            "region_code",
            "due_at",
            "id",
            postgresql_where=OPEN_TASK,
        ),
        # ... the tasks escalated to a group, the tasks a reviewer holds, and the search by USCC or name.
        Index(
            "ix_review_tasks_open_escalated_due",
            "escalated_to",
            "due_at",
            "id",
            postgresql_where=text("status = 'open' AND escalated_to IS NOT NULL"),
        ),
        Index(
            "ix_review_tasks_open_claims",
            "claimed_by",
            "claim_expires_at",
            postgresql_where=text("status = 'open' AND claimed_by IS NOT NULL"),
        ),
        Index("ix_review_tasks_open_uscc", "uscc", postgresql_where=OPEN_TASK),
        Index("ix_review_tasks_open_name", func.lower(text("enterprise_name")), postgresql_where=OPEN_TASK),
        # The counts' one look at tasks past their due date that no escalation has flagged yet (a moment's).
        Index(
            "ix_review_tasks_open_unflagged_due",
            "stage",
            "due_at",
            postgresql_where=text("status = 'open' AND NOT overdue"),
        ),
    )


class ReviewQueueCount(Base):
    """How many open review tasks share a stage, region, escalation group ('' for none), program, tier and
    overdue flag: kept by the trigger review_tasks_count in the transaction that changes a task, so a
    queue's counts are a sum over a few hundred rows rather than a count of thousands of tasks
    (``repo.queue_counts``). Rows that fall to 0 stay."""

    __tablename__ = "review_queue_counts"

    stage: Mapped[str] = mapped_column(String(20), primary_key=True)
    region_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    escalated_to: Mapped[str] = mapped_column(String(100), primary_key=True)
    program: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    overdue: Mapped[bool] = mapped_column(primary_key=True)
    tasks: Mapped[int] = mapped_column(Integer)
    # Every change of an open task of this row (a claim too): a queue's version is the sum over its rows.
    changes: Mapped[int] = mapped_column(BigInteger)

    # The rows of the tasks escalated to a group (its members' queues); the key serves the rest.
    __table_args__ = (Index("ix_review_queue_counts_escalated_to", "escalated_to"),)


class Transition(Base):
    """The append-only audit trail (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), index=True)
    event_key: Mapped[str] = mapped_column(String(200), unique=True)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    stage: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    internal_note: Mapped[str | None] = mapped_column(Text)
    # What the event changed, field by field: [{"field": ..., "old": ..., "new": ...}] (a supplement's
    # corrected figures and added evidence, a re-screening's result).
    changes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    at: Mapped[datetime]


class Objection(Base):
    __tablename__ = "objections"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), index=True)
    filed_by: Mapped[str] = mapped_column(String(200))
    filed_role: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # open, upheld, dismissed
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolution_reason: Mapped[str | None] = mapped_column(Text)
    filed_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class Recognition(Base):
    __tablename__ = "recognitions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # The application it was granted on; none for one imported from a ministry's published list.
    application_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("applications.id"), unique=True)
    uscc: Mapped[str] = mapped_column(ForeignKey("enterprises.uscc"), index=True)
    program: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    certificate_no: Mapped[str] = mapped_column(String(80), unique=True)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))  # active, expired, revoked
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    revoked_by: Mapped[str | None] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None]
    # What a revocation was for: fraud (which bars the enterprise from applying to any tier for the
    # program's durations.fraud_bar) or other; none while not revoked.
    revoked_for: Mapped[str | None] = mapped_column(String(20))
    # When Temporal took the revocation's signals: its benefits told to stop (and, for an application's title
    # revoked with another, its review told the title is gone). Set at once when a review workflow revokes (it
    # tells them durably); after the request when an admin revokes an imported title; else the reconciler's
    # (services/applications/revocation.py: tell_untold). None while not revoked, or not told yet.
    stop_sent_at: Mapped[datetime | None]
    # When the re-review (复核) window of its current validity opened (the program's re_review_window
    # before valid_until): the enterprise may file its re-review since. Cleared when a re-review extends it.
    re_review_opened_at: Mapped[datetime | None]
    # Where it comes from: `review` (an application's) or `import` (a ministry's published list entered by an
    # admin: services/applications/imported.py), then with the list's reference (e.g. 工信部2024年第六批), its
    # batch and who entered it.
    source: Mapped[str] = mapped_column(String(8), server_default="review")
    list_reference: Mapped[str | None] = mapped_column(String(100))
    batch: Mapped[str | None] = mapped_column(String(32))
    imported_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_recognitions_created_at_id", "created_at", "id"),
        Index(
            "ix_recognitions_revoked_untold",
            "revoked_at",
            postgresql_where=text("status = 'revoked' AND stop_sent_at IS NULL"),
        ),
        CheckConstraint("revoked_for IN ('fraud', 'other')", name="revoked_for_known"),
        CheckConstraint(
            "(source = 'review' AND application_id IS NOT NULL) "
            "OR (source = 'import' AND application_id IS NULL AND list_reference IS NOT NULL)",
            name="source_known",
        ),
    )


class CertificateSequence(Base):
    __tablename__ = "certificate_sequences"

    program: Mapped[str] = mapped_column(String(64), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    last: Mapped[int] = mapped_column(Integer)
