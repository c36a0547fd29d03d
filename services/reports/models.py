"""ORM model of the reports: a program's cultivation plan as an admin set it (replacing the file's)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base


class CultivationPlan(Base):
    """One line of a program's three-year cultivation plan set through ``PUT /programs/{key}/plan``: while a
    program has any, they replace the ``[[plan]]`` of its policy file (services/programs.py)."""

    __tablename__ = "cultivation_plans"

    program: Mapped[str] = mapped_column(String(64), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    target: Mapped[int] = mapped_column(Integer)
    set_by: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("target >= 0", name="target_not_negative"),
        CheckConstraint("year BETWEEN 2000 AND 2100", name="year_plausible"),
    )
