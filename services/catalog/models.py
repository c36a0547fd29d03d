"""ORM model of program versions: one row per version of a program's policy document, never changed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Integer, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base

SOURCES = ("file", "api")


class ProgramVersion(Base):
    """A program's policy as one version said it (``document``: the program file's content as JSON, validated
    by ``services.programs.Program``). The database refuses any UPDATE or DELETE (a trigger): a version that
    judged an application reads the same forever, and editing means a new version. ``id`` grows with every
    version of every program: the registry's change counter (``count(*)`` beside ``max(id)``, since a sequence
    commits out of order)."""

    __tablename__ = "program_versions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    program: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    source: Mapped[str] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        UniqueConstraint("program", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("source IN ('file', 'api')", name="source_known"),
    )
