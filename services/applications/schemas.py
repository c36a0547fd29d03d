"""API schemas of the applications domain, apart from the ORM models."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from services.applications.metrics import DeclaredMetrics
from services.identifiers import validate_email, validate_region_code, validate_uscc
from services.pagination import Page
from services.pools.schemas import PoolMembership
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
ContactEmail = Annotated[
    str,
    Field(
        min_length=3,
        max_length=254,
        examples=["finance@example.cn"],
        json_schema_extra={"format": "email"},
        description="where the service e-mails the enterprise (bilingual notices of its applications, "
        "recognitions and payouts); the domain is kept in lower case",
    ),
    AfterValidator(validate_email),
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


def latest_today() -> date:
    """Today where it is latest on Earth (UTC+14): a date after it is in the future for everyone, wherever
    the client's clock is."""
    return (datetime.now(UTC) + timedelta(hours=14)).date()


def _not_in_future(value: date) -> date:
    if value > latest_today():
        raise ValueError(f"{value} is in the future")
    return value


def _figures_in_the_past(metrics: DeclaredMetrics) -> DeclaredMetrics:
    """Declared figures are of financial years that have ended, and awards already won."""
    this_year = latest_today().year
    if metrics.last.year >= this_year:
        raise ValueError(f"financial year {metrics.last.year} has not ended; declare the last 3 ended years")
    for award in metrics.awards:
        if award.year > this_year:
            raise ValueError(f"an award of {award.year} is in the future")
    return metrics


# The declared figures (services/applications/metrics.py) as a request carries them.
Figures = Annotated[DeclaredMetrics, AfterValidator(_figures_in_the_past)]


class EnterpriseCreate(_In):
    uscc: Uscc
    name: Annotated[str, Field(min_length=1, max_length=200)]
    region_code: RegionCode
    industry: Annotated[str, Field(min_length=1, max_length=100)]
    founded_on: Annotated[date, AfterValidator(_not_in_future), Field(description="not in the future")]
    contact_email: ContactEmail | None = None


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
    contact_email: str | None = None
    created_at: datetime
    current_tiers: list[TierHeld] = []
    pools: list[PoolMembership] = Field(default=[], description="the cultivation pools it is in")


class DocumentRead(_Out):
    """An evidence document's metadata; its bytes are at ``GET /documents/{id}/content``."""

    id: uuid.UUID
    uscc: str
    kind: str
    filename: str
    content_type: str
    size: int = Field(description="bytes")
    sha256: str = Field(description="hex digest of the content; the download's ETag")
    uploaded_at: datetime


KIND_PATTERN = "^[a-z0-9_]{1,64}$"


class DocumentFilters(BaseModel):
    application_id: uuid.UUID | None = None
    kind: str | None = None
    uscc: str | None = None


class ApplicationCreate(_In):
    uscc: Uscc
    program: Annotated[str, Field(min_length=1, max_length=64)]
    tier: Tier
    batch: Annotated[str | None, Field(max_length=32, description="default: the batch open today")] = None
    metrics: Figures
    evidence: Annotated[list[uuid.UUID], Field(max_length=50, description="ids of uploaded documents")] = []
    submit: bool = Field(
        default=True,
        description="false: save a `draft` - no review starts; edit it with PATCH, preview its screening "
        "with POST /applications/{id}/check, file it with POST /applications/{id}/submit",
    )


class ReReviewCreate(_In):
    """The re-review (复核) of a recognition: the enterprise's current figures and evidence."""

    metrics: Figures
    evidence: Annotated[list[uuid.UUID], Field(max_length=50, description="ids of uploaded documents")] = []


class ReReviewFiledRead(_Out):
    application_id: uuid.UUID = Field(description="the re-review's application, under review")
    recognition_id: uuid.UUID
    valid_until: datetime = Field(
        description="the recognition's end as it stands: it holds past it while the re-review is undecided"
    )


class DraftUpdate(_In):
    """What an enterprise may change in its draft; each field given replaces the draft's."""

    tier: Tier | None = None
    batch: Annotated[str | None, Field(max_length=32)] = None
    metrics: Figures | None = None
    evidence: Annotated[
        list[uuid.UUID] | None, Field(max_length=50, description="the draft's evidence, all of it")
    ] = None

    @model_validator(mode="after")
    def _something(self) -> DraftUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one of tier, batch, metrics, evidence")
        return self


class DraftProblem(_Out):
    """Something that would refuse the draft's submission today, by the field it concerns."""

    field: str
    message: str


class DraftCheck(_Out):
    """A preview: the draft screened as its submission would screen it (the ruleset of its batch, awards in
    the 3 years before the batch opens, the tiers held today), with a reason per rule, and what would
    refuse its submission today. Nothing is stored."""

    application_id: uuid.UUID
    screening: dict[str, Any] = Field(
        description="as an application's `screening`: ruleset, passed, score, a reason per rule"
    )
    problems: list[DraftProblem]
    submittable: bool = Field(description="no problems: a submission now would be taken")


class ListFilters(BaseModel):
    status: StatusName | None = None
    tier: Tier | None = None
    stage: StageName | None = None
    program: str | None = None
    uscc: str | None = None


class HistoryChange(_Out):
    """One field an event changed: a corrected figure (``years.2025.revenue``, ``niche_years``), a document
    added to the ``evidence``, or the ``screening`` result."""

    field: str
    old: Any = None
    new: Any = None


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
    changes: Annotated[list[HistoryChange], BeforeValidator(lambda v: v or [])] = []


class ObjectionRead(_Out):
    id: uuid.UUID
    application_id: uuid.UUID
    status: str
    reason: str
    filed_at: datetime
    resolved_at: datetime | None = None
    resolution_reason: str | None = None


class ReviewTaskInfo(_Out):
    id: uuid.UUID = Field(description="the review task's id (POST /review-tasks/{id}/claim, /release)")
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
    program_version: int | None = Field(
        default=None, description="the version of the program that judged it (GET /programs/{key}/versions)"
    )
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
    supplement_due_at: AwareDatetime | None = Field(
        default=None,
        description="with `return` only: when the supplement is due, in the future and at most the "
        "program's `supplement_deadline` from now (the default)",
    )

    @model_validator(mode="after")
    def _due_only_when_returned(self) -> DecisionCreate:
        if self.supplement_due_at is not None and self.decision != "return":
            raise ValueError("supplement_due_at goes with the decision `return` only")
        return self


class SupplementCreate(_In):
    note: Annotated[str, Field(min_length=1, max_length=4000)]
    evidence: Annotated[
        list[uuid.UUID], Field(max_length=50, description="ids of the applicant's uploaded documents to add")
    ] = []
    metrics: Annotated[
        Figures | None,
        Field(
            description="corrected figures: the whole declaration, as filed with the application; the "
            "application is screened again and its history shows each changed field"
        ),
    ] = None


class WithdrawCreate(_In):
    reason: Annotated[str | None, Field(max_length=2000)] = None


class ObjectionCreate(_In):
    reason: Annotated[str, Field(min_length=1, max_length=4000)]


class ResolutionCreate(_In):
    upheld: bool
    reason: Text


class RevocationCreate(_In):
    reason: Text
    revoked_for: Literal["fraud", "other"] = Field(
        default="other",
        description="fraud: the enterprise is also barred from applying to any tier for the program's "
        "durations.fraud_bar (3 years) from the revocation",
    )


class RevokedTitleRead(BaseModel):
    """A recognition of the same enterprise a revocation for fraud revoked too."""

    recognition_id: uuid.UUID
    certificate_no: str
    program: str
    tier: str
    application_id: uuid.UUID | None = Field(description="none for an imported recognition")


class ReviewStateRead(BaseModel):
    """The state an action leaves the application in."""

    application_id: uuid.UUID | None = Field(description="none for an imported recognition's revocation")
    status: StatusName
    stage: StageName | None = None
    due_at: datetime | None = None
    overdue: bool = False
    supplement_due_at: datetime | None = None
    notice_ends_at: datetime | None = None
    open_objections: list[uuid.UUID] = []
    recognition_id: uuid.UUID | None = None
    certificate_no: str | None = None
    also_revoked: list[RevokedTitleRead] = Field(
        default=[],
        description="a revocation for fraud: the enterprise's other recognitions (any program, tier or "
        "source) it revoked too; empty otherwise",
    )


class ObjectionFiled(BaseModel):
    objection_id: uuid.UUID
    state: ReviewStateRead


class ReviewTaskRead(BaseModel):
    """A task in a reviewer's queue: one application waiting at one stage."""

    id: uuid.UUID = Field(description="the task's id, for claim and release")
    application_id: uuid.UUID
    uscc: str
    enterprise_name: str
    tier: str
    program: str
    stage: StageName
    region_code: str
    created_at: datetime
    due_at: datetime
    overdue: bool
    escalated_to: str | None = Field(description="the group the task was escalated to at its SLA breach")
    claimed_by: str | None = Field(description="the reviewer holding the task; null when nobody does")
    claim_expires_at: datetime | None = Field(description="when that claim lapses")


Assignee = Literal["me", "none"]


class QueueFilters(BaseModel):
    program: str | None = None
    tier: Tier | None = None
    stage: StageName | None = None
    overdue: bool | None = None
    assignee: Assignee | None = None
    q: str | None = None


class QueueCounts(BaseModel):
    """How many tasks the caller's whole queue holds (whatever the filters), per value of each filter."""

    total: int
    stage: dict[str, int]
    tier: dict[str, int]
    program: dict[str, int]
    overdue: dict[str, int] = Field(description="`true` and `false`")
    assignee: dict[str, int] = Field(
        description="`me` (held by the caller), `none` (by nobody), `others` (by another reviewer)"
    )


class ReviewQueuePage(Page[ReviewTaskRead]):
    counts: QueueCounts


class RecognitionRead(_Out):
    id: uuid.UUID
    application_id: uuid.UUID | None = Field(description="none for a recognition imported from a list")
    source: Literal["review", "import"] = Field(
        default="review", description="granted on an application, or imported from a ministry's list"
    )
    list_reference: str | None = Field(default=None, description="an imported one's list, 工信部2024年第六批")
    batch: str | None = Field(default=None, description="an imported one's batch")
    uscc: str
    program: str
    tier: str
    certificate_no: str
    valid_from: datetime
    valid_until: datetime
    status: str
    revoked_reason: str | None
    revoked_at: datetime | None
    revoked_for: str | None = Field(description="fraud or other; none while not revoked")
    re_review_opened_at: datetime | None = Field(
        default=None,
        description="when the re-review window of the current validity opened: from then until it is "
        "filed, POST /recognitions/{id}/re-review takes the enterprise's current figures",
    )


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
    version: int | None = Field(
        default=None, description="the version in force (GET /programs/{key}/versions); none before versions"
    )
    name: str
    authority: str
    region_code: str
    rulesets: list[dict[str, str]]
    notice_period: str
    stage_sla: str
    supplement_deadline: str
    validity: str
    claim_ttl: str
    tiers: list[ProgramTierRead]
    listing_rewards: dict[str, str]
    open_batches: list[BatchRead]


# --- what anyone may read, without a token --------------------------------------------------------------


PublicStatus = Literal["valid", "expired", "revoked"]


class PublicRecognitionRead(BaseModel):
    """A certificate as the public verifies it (its QR code points here): whose it is, the tier, the validity
    and whether it holds now - nothing else."""

    enterprise_name: str
    tier: Tier
    valid_from: datetime
    valid_until: datetime
    status: PublicStatus = Field(
        description="valid: in force now; expired: its validity has ended; revoked: the authority withdrew it"
    )


class HowToObject(BaseModel):
    path: str = Field(
        description='POST here, with any bearer token, {"reason": ...}: a real-name objection with evidence'
    )
    authority: str = Field(description="who verifies objections: the program's authority")
    text: str
    text_zh: str


class PublicNoticeRead(BaseModel):
    """An application on public notice (公示), as the public reads it."""

    enterprise_name: str
    uscc: str
    tier: Tier
    notice_ends_at: datetime
    how_to_object: HowToObject


# --- imported recognitions (services/applications/imported.py) ------------------------------------------


class RecognitionImportCreate(_In):
    """One enterprise named in a ministry's published list. The enterprise is registered from the row when it
    is not yet (then ``name``, ``region_code``, ``industry`` and ``founded_on`` are needed)."""

    program: Annotated[str, Field(min_length=1, max_length=64)]
    tier: Tier
    uscc: Uscc
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    region_code: RegionCode | None = None
    industry: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    founded_on: date | None = None
    batch: Annotated[str, Field(min_length=1, max_length=32, description="the list's batch, e.g. 2024-6")]
    list_reference: Annotated[
        str, Field(min_length=1, max_length=100, description="the published list, e.g. 工信部2024年第六批")
    ]
    recognized_on: date
    valid_until: date | None = Field(
        default=None, description="its last day; by default the program's validity from recognized_on"
    )


class ImportRowError(BaseModel):
    line: int = Field(description="the file's line (the header is 1); 1 for a JSON body")
    field: str
    reason: str


class RecognitionImportRead(BaseModel):
    created: int = Field(description="recognitions new with this import")
    unchanged: int = Field(description="rows already held (importing a list again changes nothing)")
    refused: int
    recognitions: list[RecognitionRead]
    errors: list[ImportRowError]
