"""API schemas of expert panels: the pool, declared conflicts and the experts' blind files."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from services.applications.schemas import RegionCode, Uscc, _In, _Out
from services.vocabulary import Level

ExpertId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class ExpertCreate(_In):
    expert_id: ExpertId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    region_code: RegionCode
    fields: Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], Field(max_length=20)] = []


class ExpertRead(_Out):
    expert_id: str
    name: str
    region_code: str
    fields: list[str]
    conflicts: list[str] = []  # the USCCs it declared a conflict with
    created_at: datetime


class ConflictCreate(_In):
    uscc: Uscc
    reason: Annotated[str, Field(min_length=1, max_length=2000)] | None = None


class ConflictRead(_Out):
    expert_id: str
    uscc: str
    reason: str | None
    created_at: datetime


class AssignmentSummary(_Out):
    """An expert's seat on a panel, without anything that names the enterprise."""

    id: uuid.UUID
    status: Literal["open", "answered", "absent"]
    stage: Level
    program: str
    tier: str
    rule: Literal["average_score", "majority"]
    pass_score: int | None
    due_at: datetime
    score: int | None
    vote: Literal["approve", "reject"] | None


class BlindFile(AssignmentSummary):
    """The file as the panel sees it (blind): the declared figures, the screening result and the industry -
    never the enterprise's name, USCC, region, application id or documents."""

    industry: str
    metrics: dict[str, Any]
    screening: dict[str, Any] | None


class ScoreBody(_In):
    """A score (0-100), on an ``average_score`` panel."""

    score: Annotated[int, Field(ge=0, le=100)]


class VoteBody(_In):
    """A vote, on a ``majority`` panel."""

    vote: Literal["approve", "reject"]


ScoreCreate = ScoreBody | VoteBody


class ScoreRead(_Out):
    """The answer taken; `answered` of `size` seats of the panel have answered so far."""

    assignment_id: uuid.UUID
    status: Literal["answered"]
    score: int | None
    vote: Literal["approve", "reject"] | None
    answered: int
    size: int


class SeatRead(_Out):
    expert_id: str
    status: Literal["open", "answered", "absent"]
    score: int | None
    vote: Literal["approve", "reject"] | None
    answered_at: datetime | None


class PanelRead(_Out):
    """A draw for audit (admin): the seed and the pool as it was, so that
    ``panels.draw(seed, size, pool, applicant_region)`` gives ``chosen`` again; the seats and the decision."""

    id: uuid.UUID
    application_id: uuid.UUID
    stage: Level
    seed: str
    size: int
    rule: Literal["average_score", "majority"]
    pass_score: int | None
    applicant_region: str
    pool: list[dict[str, Any]]
    chosen: list[str]
    status: Literal["sitting", "decided", "no_quorum", "too_few_experts"]
    decision: Literal["approve", "reject"] | None
    reason: str | None
    due_at: datetime
    created_at: datetime
    decided_at: datetime | None
    seats: list[SeatRead] = []
