"""API schemas of the applications domain, apart from the ORM models."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.applications.metrics import DeclaredMetrics
from services.identifiers import validate_region_code, validate_uscc
from services.vocabulary import ApplicationStatus, Decision, Level, Tier

USCC_PATTERN = "^[0-9A-HJ-NP-RTUWXY]{2}[0-9]{6}[0-9A-HJ-NP-RTUWXY]{10}$"
NO_NUL = "^[^\\x00]*$"  # PostgreSQL text cannot hold NUL; every free-text input says so in its schema
NOT_BLANK = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"  # inputs are stripped, so a required text needs a visible char
Uscc = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        examples=["91350100M000100Y43"],
        description="Unified Social Credit Code; the 18th character is a check character (GB 32100-2015)",
        json_schema_extra={"pattern": USCC_PATTERN},
    ),
    AfterValidator(validate_uscc),
]
RegionCode = Annotated[
    str,
    Field(examples=["500103"], json_schema_extra={"pattern": "^[0-9]{6}$"}),
    AfterValidator(validate_region_code),
]
StageName = Level
StatusName = ApplicationStatus
Text = Annotated[str, Field(min_length=1, max_length=2000)]


def _text_schema(schema: dict[str, Any]) -> None:
    """Document what the app's body check (no NUL) and whitespace stripping enforce on free text."""
    for prop in schema.get("properties", {}).values():
        for option in [prop, *prop.get("anyOf", []), prop.get("items", {})]:
            if option.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(option):
                option["pattern"] = NOT_BLANK if option.get("minLength", 0) >= 1 else NO_NUL


class _In(BaseModel):
    # Bodies with NUL characters or unpaired surrogates are refused before any route (services/app.py).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra=_text_schema)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class EnterpriseCreate(_In):
    uscc: Uscc
    name: Annotated[str, Field(min_length=1, max_length=200)]
    region_code: RegionCode
    industry: Annotated[str, Field(min_length=1, max_length=100)]
    founded_on: date


class TierHeld(_Out):
    tier: str
    program: str
    certificate_no: str
    valid_until: datetime


class EnterpriseRead(_Out):
    uscc: str
    name: str
    region_code: str
    industry: str
    founded_on: date
    created_at: datetime
    current_tiers: list[TierHeld] = []


class DocumentRead(_Out):
    id: uuid.UUID
    kind: str
    filename: str
    content_type: str
    size: int
    sha256: str
    application_id: uuid.UUID | None
    uploaded_at: datetime


class ApplicationCreate(_In):
    uscc: Uscc
    program: Annotated[str, Field(min_length=1, max_length=64)]
    tier: Tier
    batch: Annotated[str | None, Field(max_length=32, description="default: the batch open today")] = None
    metrics: DeclaredMetrics
    evidence: Annotated[list[uuid.UUID], Field(max_length=50, description="ids of uploaded documents")] = []


class ListFilters(BaseModel):
    status: StatusName | None = None
    tier: Tier | None = None
    stage: StageName | None = None
    program: str | None = None
    uscc: str | None = None


class HistoryEntry(_Out):
    at: datetime
    actor: str
    role: str
    action: str
    from_status: str | None
    to_status: str
    stage: str | None
    reason: str | None
    internal_note: str | None = None


class ObjectionRead(_Out):
    id: uuid.UUID
    application_id: uuid.UUID
    status: str
    reason: str
    filed_at: datetime
    resolved_at: datetime | None = None
    resolution_reason: str | None = None


class ReviewTaskInfo(_Out):
    stage: str
    due_at: datetime
    overdue: bool
    escalated_to: str | None


class ApplicationRead(_Out):
    id: uuid.UUID
    uscc: str
    program: str
    tier: str
    batch: str
    ruleset: str
    region_code: str
    status: StatusName
    stage: StageName | None
    screening: dict[str, Any] | None
    supplement_due_at: datetime | None
    re_review_of: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    task: ReviewTaskInfo | None = None
    documents: list[DocumentRead] = []
    objections: list[ObjectionRead] = []
    history: list[HistoryEntry] = []


class ApplicationSummary(_Out):
    id: uuid.UUID
    uscc: str
    program: str
    tier: str
    batch: str
    status: StatusName
    stage: StageName | None
    created_at: datetime
    updated_at: datetime


class DecisionCreate(_In):
    decision: Decision
    reason: Text
    stage: StageName | None = Field(default=None, description="the stage decided; refused unless current")
    internal_note: Annotated[str | None, Field(max_length=4000, description="hidden from the applicant")] = (
        None
    )


class SupplementCreate(_In):
    note: Annotated[str, Field(min_length=1, max_length=4000)]
    evidence: Annotated[list[uuid.UUID], Field(max_length=50)] = []


class WithdrawCreate(_In):
    reason: Annotated[str | None, Field(max_length=2000)] = None


class ObjectionCreate(_In):
    reason: Annotated[str, Field(min_length=1, max_length=4000)]


class ResolutionCreate(_In):
    upheld: bool
    reason: Text


class RevocationCreate(_In):
    reason: Text


class ReviewStateRead(BaseModel):
    """The state an action leaves the application in."""

    application_id: uuid.UUID
    status: StatusName
    stage: StageName | None = None
    due_at: datetime | None = None
    overdue: bool = False
    supplement_due_at: datetime | None = None
    notice_ends_at: datetime | None = None
    open_objections: list[uuid.UUID] = []
    recognition_id: uuid.UUID | None = None
    certificate_no: str | None = None


class ObjectionFiled(BaseModel):
    objection_id: uuid.UUID
    state: ReviewStateRead


class ReviewTaskRead(BaseModel):
    application_id: uuid.UUID
    uscc: str
    tier: str
    program: str
    stage: StageName
    region_code: str
    created_at: datetime
    due_at: datetime
    overdue: bool
    escalated_to: str | None


class RecognitionRead(_Out):
    id: uuid.UUID
    application_id: uuid.UUID
    uscc: str
    program: str
    tier: str
    certificate_no: str
    valid_from: datetime
    valid_until: datetime
    status: str
    revoked_reason: str | None
    revoked_at: datetime | None


class ProgramTierRead(BaseModel):
    key: str
    name: str
    review_levels: list[str]
    requires_tier: str | None
    required_documents: list[str]
    credit_line_limit: str | None


class BatchRead(BaseModel):
    key: str
    opens_on: date
    closes_on: date


class ProgramRead(BaseModel):
    key: str
    name: str
    authority: str
    region_code: str
    rulesets: list[dict[str, str]]
    notice_period: str
    stage_sla: str
    supplement_deadline: str
    validity: str
    tiers: list[ProgramTierRead]
    listing_rewards: dict[str, str]
    open_batches: list[BatchRead]
