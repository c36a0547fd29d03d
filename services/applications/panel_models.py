"""ORM models of expert panels (services/applications/panels.py): the expert pool, declared conflicts, each
drawn panel with what its draw considered, and each expert's assignment on a panel."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base


class Expert(Base):
    """A registered expert of the pool, with the region it works in (never drawn for its own province)."""

    __tablename__ = "experts"

    expert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(6))
    fields: Mapped[list[str]] = mapped_column(JSONB, default=list)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ExpertConflict(Base):
    """An enterprise (by USCC) an expert declared a conflict with: never on its panels."""

    __tablename__ = "expert_conflicts"

    expert_id: Mapped[str] = mapped_column(ForeignKey("experts.expert_id"), primary_key=True)
    uscc: Mapped[str] = mapped_column(String(18), primary_key=True)
    reason: Mapped[str | None] = mapped_column(Text)
    declared_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Panel(Base):
    """One draw for one stage of one application: the seed and the pool snapshot it was drawn from
    (``pool``: every expert with its region and whether it declared a conflict), so that
    ``panels.draw(seed, size, pool, region)`` gives ``chosen`` again; then the rule's decision."""

    __tablename__ = "expert_panels"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    application_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("applications.id"), index=True)
    stage: Mapped[str] = mapped_column(String(20))
    seed: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(20))
    pass_score: Mapped[int | None] = mapped_column(Integer)
    applicant_region: Mapped[str] = mapped_column(String(6))
    pool: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    chosen: Mapped[list[str]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20))
    decision: Mapped[str | None] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime]
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(
            "status IN ('sitting', 'decided', 'no_quorum', 'too_few_experts')", name="status_known"
        ),
    )


class PanelAssignment(Base):
    """One expert's seat on a panel: open until it scores or votes (once); absent if its time ran out."""

    __tablename__ = "panel_assignments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    panel_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("expert_panels.id"), index=True)
    expert_id: Mapped[str] = mapped_column(ForeignKey("experts.expert_id"), index=True)
    status: Mapped[str] = mapped_column(String(10))
    score: Mapped[int | None] = mapped_column(Integer)
    vote: Mapped[str | None] = mapped_column(String(10))
    answered_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("panel_id", "expert_id"),
        CheckConstraint("status IN ('open', 'answered', 'absent')", name="status_known"),
        CheckConstraint("score IS NULL OR score BETWEEN 0 AND 100", name="score_range"),
    )
