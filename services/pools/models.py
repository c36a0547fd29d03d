"""ORM models of cultivation pools: the members (one row per program and USCC), the import jobs that write
them, the rows each job refused and the enterprises barred from the pools' benefits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, deferred, mapped_column

from services.db import Base

IMPORT_STATUSES = ("queued", "running", "finished", "failed")


class MemberValues(BaseModel):
    """What a pool file's row gives a member (the ``PoolMember`` columns an import writes, by program): as
    the row checks pass it (``services.pools.rules.Member``) and as the API answers it
    (``services.pools.schemas.PoolMemberRead``)."""

    uscc: str
    name: str
    region_code: str
    industry: str
    tier_aimed: str
    notes: str | None


class PoolMember(Base):
    """An enterprise in a program's cultivation pool. Pool members need not be registered enterprises; the
    enterprise view finds its memberships by USCC. ``version`` and ``updated_at`` move only when an import
    changes a value (an identical row is left as it is)."""

    __tablename__ = "pool_members"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    program: Mapped[str] = mapped_column(String(64))
    uscc: Mapped[str] = mapped_column(String(18), index=True)
    name: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(6))
    industry: Mapped[str] = mapped_column(String(100))
    tier_aimed: Mapped[str] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(String(1000))
    import_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("pool_imports.id", ondelete="SET NULL"))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        UniqueConstraint("program", "uscc"),
        CheckConstraint("region_code ~ '^[0-9]{6}$'", name="region_code_digits"),
        Index("ix_pool_members_program_created_at_id", "program", "created_at", "id"),
    )


class PoolBar(Base):
    """An enterprise barred from the benefits of every cultivation pool it is in, or comes to be in: a
    recognition of it was revoked for fraud at ``since`` (``recognition_id``, the one the revocation named).
    Each program's bar lasts that program's ``durations.fraud_bar`` from ``since``, as the bar on applying
    does. A row of its own, never an import's: a pool file imported again leaves it as it is. A later
    revocation for fraud moves it to its own moment."""

    __tablename__ = "pool_bars"

    uscc: Mapped[str] = mapped_column(String(18), primary_key=True)
    since: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(1000))
    recognition_id: Mapped[uuid.UUID] = mapped_column(index=True)


class PoolImport(Base):
    """One pool file being imported: a durable job. ``rows`` holds the file's rows (as read when it was
    accepted) until the job finishes; ``rows_done`` is where it stands, moved in the same transaction as the
    members and refusals of each chunk, so a job resumed by another process (after the lease ran out) goes on
    from there and never writes a chunk twice."""

    __tablename__ = "pool_imports"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    program: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    file_format: Mapped[str] = mapped_column(String(8))
    encoding: Mapped[str | None] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    rows: Mapped[list[Any] | None] = deferred(mapped_column(JSONB))
    rows_total: Mapped[int] = mapped_column(Integer)
    rows_done: Mapped[int] = mapped_column(Integer, server_default="0")
    accepted: Mapped[int] = mapped_column(Integer, server_default="0")
    refused: Mapped[int] = mapped_column(Integer, server_default="0")
    created: Mapped[int] = mapped_column(Integer, server_default="0")
    updated: Mapped[int] = mapped_column(Integer, server_default="0")
    requested_by: Mapped[str] = mapped_column(String(200))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    failure: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(f"status IN {IMPORT_STATUSES!r}", name="status_known"),
        CheckConstraint("file_format IN ('csv', 'xlsx')", name="file_format_known"),
        CheckConstraint("rows_done <= rows_total AND accepted + refused = rows_done", name="counts"),
        Index(
            "ix_pool_imports_unfinished",
            "lease_until",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )


class PoolImportError(Base):
    """A refused row of an import: its line, the field at fault and why (one row per problem)."""

    __tablename__ = "pool_import_errors"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    import_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pool_imports.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    value: Mapped[str] = mapped_column(String(200), server_default="")

    __table_args__ = (Index("ix_pool_import_errors_import_id_line", "import_id", "line"),)
