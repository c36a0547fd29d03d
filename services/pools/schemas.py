"""API schemas of cultivation pools."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.pools.models import MemberValues

ImportStatus = Literal["queued", "running", "finished", "failed"]
ERRORS_SHOWN = 1000


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RowRefusal(_Out):
    """A refused row: its line (the header is line 1), the field at fault and why."""

    line: int
    field: str
    reason: str


class PoolImportRead(_Out):
    """An import job: where it stands, and when it has finished, the rows it refused."""

    id: uuid.UUID
    program: str
    filename: str
    format: Literal["csv", "xlsx"]
    encoding: str | None = Field(description="CSV only: utf-8, utf-8-sig (with BOM) or gb18030 (GBK)")
    status: ImportStatus
    rows_total: int
    rows_done: int
    accepted: int = Field(description="rows stored or already equal to the stored member")
    refused: int
    created: int = Field(description="members new to the pool")
    updated: int = Field(description="members whose values changed")
    unchanged: int = Field(description="accepted rows equal to the stored member: nothing written")
    failure: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    errors: list[RowRefusal] | None = Field(
        default=None, description=f"when finished: the first {ERRORS_SHOWN} problems (all in errors.csv)"
    )
    errors_total: int | None = Field(default=None, description="when finished: every problem found")


class PoolMemberRead(MemberValues, _Out):
    version: int
    created_at: datetime = Field(description="since when it is in the pool")
    updated_at: datetime


class PoolMembership(BaseModel):
    """An enterprise's place in a program's cultivation pool (on ``GET /enterprises/{uscc}``)."""

    program: str
    tier_aimed: str
    since: datetime
    barred_until: datetime | None = Field(
        default=None,
        description="after a revocation for fraud: until when the membership gives nothing (no bridge loan "
        "from the program's fund), the program's durations.fraud_bar from the revocation",
    )
    barred_reason: str | None = Field(default=None, description="the revocation that barred it")

    def barred_at(self, now: datetime) -> bool:
        return self.barred_until is not None and now < self.barred_until
