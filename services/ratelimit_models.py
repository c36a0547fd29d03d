"""The rate limits' state, shared by every API process (services/ratelimit.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base


class RateLimit(Base):
    """One row per caller or client address that is being limited: its theoretical arrival time (GCRA), the
    moment its allowance is whole again. A row whose ``tat`` has passed says nothing a missing row would not,
    so such rows are deleted. UNLOGGED: not written to the WAL (cheap at a thousand hits a second) and emptied
    by PostgreSQL after a crash (and absent on streaming standbys), so a crash forgets the limits - every
    caller starts afresh. Nothing else is lost: it holds no business data."""

    __tablename__ = "rate_limits"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    tat: Mapped[datetime]
