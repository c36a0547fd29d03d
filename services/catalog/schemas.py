"""API schemas of program versions and batches."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchCreate(_In):
    key: str = Field(description="the batch's key, e.g. the year")
    opens_on: date
    closes_on: date


class BatchOpen(_In):
    closes_on: date | None = Field(
        default=None, description="when the batch closes now (both dates included); required to reopen one"
    )


class ProgramVersionRead(BaseModel):
    program: str
    version: int
    current: bool = Field(description="the version new applications are judged by")
    source: Literal["file", "api"] = Field(description="seeded from the program file, or created by an admin")
    note: str | None
    created_by: str
    created_at: datetime
    open_batches: list[str] = Field(description="the batches open today by this version")
    document: dict[str, Any] = Field(description="the program as this version says it (the file's format)")
