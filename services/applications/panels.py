"""Expert panels: the blind, double-random expert review of a stage where the program says so
(``[tiers.<tier>.panels.<level>]``, services/programs.py ``PanelPolicy``).

- **The pool**: experts registered by an admin (``experts``), each with the region it works in, and the
  enterprises (USCCs) it declared a conflict with (``expert_conflicts``).
- **The draw** (``draw``, pure): the eligible experts are those of another province than the applicant's
  (the first two digits of the region codes differ; GB/T 2260) and without a declared conflict with it;
  ``random.Random(seed).sample`` over them, sorted by ``expert_id``, picks the panel. The review workflow
  makes the seed (``workflow.uuid4()``); ``record_draw`` keeps it with the pool as it was (every expert, its
  region, whether it declared a conflict), so
  ``draw(panel.seed, panel.size, panel.pool, panel.applicant_region)`` gives ``panel.chosen`` again for an
  audit. Fewer eligible experts than the panel's size: no panel (``too_few_experts``, with the reason) -
  the stage is then decided by its reviewers as without a panel.
- **Scores**: each drawn expert sees the file blind (``blind_file``: figures, screening result, industry;
  never the name, USCC, region or any id leading to them) and scores (0-100) or votes once, within the
  stage's SLA: the API checks the seat (``seat_for_score``), the workflow's Update ``score_panel`` takes it
  (its validator refuses a second answer, 409) and ``record_score`` writes it.
- **The decision** (``verdict``, pure): when all have answered, or at the SLA, those who did not are recorded
  absent and the rule is applied to the answers: ``average_score`` passes with an average >= ``pass_score``
  (exactly the pass score passes); ``majority`` passes with more approve than reject votes (a tie rejects).
  Fewer answers than a quorum (a majority of the panel: ``size // 2 + 1``) decide nothing: the stage
  escalates to the program's backup group as an overdue stage does. The decision moves the review on exactly
  as a reviewer's would (workflows/review.py).
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from services import temporal as temporal_boundary
from services.applications.models import Application, Enterprise
from services.applications.panel_models import Expert, ExpertConflict, Panel, PanelAssignment
from services.applications.panel_schemas import (
    AssignmentSummary,
    BlindFile,
    ConflictCreate,
    ConflictRead,
    ExpertCreate,
    ExpertRead,
    PanelRead,
    ScoreBody,
    ScoreCreate,
    ScoreRead,
    SeatRead,
    VoteBody,
)
from services.auth import CurrentUser, Role
from services.contracts import (
    Actor,
    PanelClose,
    PanelDraw,
    PanelDrawn,
    PanelScore,
    PanelScored,
    PanelVerdict,
    ScoreRequest,
    review_workflow_id,
)
from services.errors import Conflict, FieldError, NotFound, Unprocessable
from services.idempotency import once
from services.pagination import Page, decode_cursor, paginate, split_page

Vote = Literal["approve", "reject"]


# --- the draw and the rule (pure) -------------------------------------------------------------------------


def exclusion(expert: Mapping[str, Any], applicant_region: str) -> str | None:
    """Why a pool entry (``expert_id``, ``region_code``, ``conflict``) may not sit on the applicant's
    panel; None: it may."""
    if expert["region_code"][:2] == applicant_region[:2]:
        return "own province"
    if expert["conflict"]:
        return "declared conflict"
    return None


def draw(seed: str, size: int, pool: Sequence[Mapping[str, Any]], applicant_region: str) -> list[str] | None:
    """The panel drawn with `seed` from `pool` (a snapshot: ``expert_id``, ``region_code``, ``conflict``), in
    draw order; None when fewer than `size` experts are eligible. Deterministic: the same arguments give the
    same panel on any machine (``random.Random`` seeded with a string hashes it with SHA-512)."""
    eligible = sorted(e["expert_id"] for e in pool if exclusion(e, applicant_region) is None)
    if len(eligible) < size:
        return None
    return random.Random(seed).sample(eligible, size)


def quorum(size: int) -> int:
    """How many answers a panel needs to decide: a majority of its seats."""
    return size // 2 + 1


@dataclass(frozen=True, slots=True)
class Answers:
    size: int
    scores: list[int]
    votes: list[Vote]

    @property
    def count(self) -> int:
        return len(self.scores) + len(self.votes)


def verdict(rule: str, pass_score: int | None, answers: Answers) -> PanelVerdict:
    """The rule applied to the answers given (absentees do not count, beyond the quorum)."""
    absent = answers.size - answers.count
    of = f"{answers.count} of {answers.size} experts answered" + (f", {absent} absent" if absent else "")
    if answers.count < quorum(answers.size):
        return PanelVerdict(
            decision=None,
            reason=f"no quorum: {of}; {quorum(answers.size)} needed - the stage escalates",
        )
    if rule == "average_score":
        assert pass_score is not None
        average = (Decimal(sum(answers.scores)) / len(answers.scores)).quantize(
            Decimal("0.01"), ROUND_HALF_UP
        )
        passed = Decimal(sum(answers.scores)) >= pass_score * len(answers.scores)  # exact, not the rounded
        relation = ">=" if passed else "<"
        return PanelVerdict(
            decision="approve" if passed else "reject",
            reason=f"expert panel: average score {average} {relation} {pass_score} ({of})",
        )
    approve, reject = answers.votes.count("approve"), answers.votes.count("reject")
    outcome: Vote = "approve" if approve > reject else "reject"
    tie = " (a tie rejects)" if approve == reject else ""
    return PanelVerdict(
        decision=outcome,
        reason=f"expert panel: {approve} approve, {reject} reject votes{tie} ({of})",
    )


# --- the workflow's steps (activities, one transaction each) ---------------------------------------------


async def record_draw(session: AsyncSession, *, data: PanelDraw) -> PanelDrawn:
    """Draw and record the stage's panel and open its seats; a retried attempt finds the draw by its seed."""
    existing = await session.scalar(select(Panel).where(Panel.seed == data.seed))
    if existing is not None:
        return await _drawn(session, existing)
    application = await session.get(Application, data.application_id)
    if application is None:
        raise NotFound("The application no longer exists.")
    conflicted = set(
        await session.scalars(select(ExpertConflict.expert_id).where(ExpertConflict.uscc == application.uscc))
    )
    experts = (await session.scalars(select(Expert).order_by(Expert.expert_id))).all()
    pool = [
        {"expert_id": e.expert_id, "region_code": e.region_code, "conflict": e.expert_id in conflicted}
        for e in experts
    ]
    chosen = draw(data.seed, data.policy.size, pool, application.region_code)
    panel = Panel(
        application_id=application.id,
        stage=data.stage,
        seed=data.seed,
        size=data.policy.size,
        rule=data.policy.rule,
        pass_score=data.policy.pass_score,
        applicant_region=application.region_code,
        pool=pool,
        chosen=chosen or [],
        status="sitting" if chosen else "too_few_experts",
        due_at=data.due_at,
        created_at=data.at,
    )
    if chosen is None:
        eligible = sum(exclusion(e, application.region_code) is None for e in pool)
        panel.reason = (
            f"only {eligible} of {len(pool)} experts in the pool are eligible (another province, no declared "
            f"conflict) for a panel of {data.policy.size}: the {data.stage} reviewers decide this stage"
        )
        panel.decided_at = data.at
    session.add(panel)
    await session.flush()
    session.add_all(PanelAssignment(panel_id=panel.id, expert_id=e, status="open") for e in chosen or [])
    await session.flush()
    return await _drawn(session, panel)


async def _drawn(session: AsyncSession, panel: Panel) -> PanelDrawn:
    if panel.status == "too_few_experts":
        return PanelDrawn(panel_id=None, reason=panel.reason)
    seats = await session.scalars(select(PanelAssignment).where(PanelAssignment.panel_id == panel.id))
    return PanelDrawn(panel_id=panel.id, assignments={str(s.id): s.expert_id for s in seats})


async def record_score(session: AsyncSession, *, data: PanelScore) -> PanelScored:
    seat = await session.get(PanelAssignment, data.assignment_id, with_for_update=True)
    if seat is None or seat.panel_id != data.panel_id:
        raise NotFound("The panel assignment no longer exists.")
    if seat.status == "open":
        seat.status, seat.score, seat.vote, seat.answered_at = "answered", data.score, data.vote, data.at
    seats = (
        await session.scalars(select(PanelAssignment).where(PanelAssignment.panel_id == data.panel_id))
    ).all()
    return PanelScored(
        assignment_id=seat.id, answered=sum(s.status == "answered" for s in seats), size=len(seats)
    )


async def close_panel(session: AsyncSession, *, data: PanelClose) -> PanelVerdict:
    """Record the absentees and the rule's decision (once: a retried attempt reads it back)."""
    panel = await session.get(Panel, data.panel_id, with_for_update=True)
    if panel is None:
        raise NotFound("The panel no longer exists.")
    if panel.status != "sitting":
        decision: Vote | None = panel.decision  # type: ignore[assignment]
        return PanelVerdict(decision=decision, reason=panel.reason or "")
    seats = (await session.scalars(select(PanelAssignment).where(PanelAssignment.panel_id == panel.id))).all()
    for seat in seats:
        if seat.status == "open":
            seat.status = "absent"
    answered = [s for s in seats if s.status == "answered"]
    answers = Answers(
        size=panel.size,
        scores=[s.score for s in answered if s.score is not None],
        votes=[s.vote for s in answered if s.vote is not None],  # type: ignore[misc]
    )
    result = verdict(panel.rule, panel.pass_score, answers)
    panel.status = "decided" if result.decision is not None else "no_quorum"
    panel.decision, panel.reason, panel.decided_at = result.decision, result.reason, data.at
    return result


# --- the pool (admin) ---------------------------------------------------------------------------------------


async def register_expert(session: AsyncSession, *, user: CurrentUser, data: ExpertCreate) -> ExpertRead:
    user.require(Role.admin)
    if await session.get(Expert, data.expert_id) is not None:
        raise Conflict(f"The expert {data.expert_id} is already registered.")
    expert = Expert(
        expert_id=data.expert_id, name=data.name, region_code=data.region_code, fields=data.fields
    )
    session.add(expert)
    await session.flush()
    await session.refresh(expert)
    return ExpertRead.model_validate(expert)


async def declare_conflict(
    session: AsyncSession, *, user: CurrentUser, expert_id: str, data: ConflictCreate
) -> ConflictRead:
    """An admin, or the expert itself, declares a conflict with an enterprise: the expert is never drawn for
    its applications from now on (a panel already drawn keeps its seats)."""
    user.require(Role.admin, Role.expert)
    if user.role is Role.expert and user.expert_id != expert_id:
        raise NotFound("No such expert.")
    if await session.get(Expert, expert_id) is None:
        raise NotFound("No such expert.")
    conflict = ExpertConflict(expert_id=expert_id, uscc=data.uscc, reason=data.reason, declared_by=user.sub)
    try:
        async with session.begin_nested():
            session.add(conflict)
            await session.flush()
    except IntegrityError:
        raise Conflict("This conflict is already declared.") from None
    await session.refresh(conflict)
    return ConflictRead.model_validate(conflict)


async def list_experts(
    session: AsyncSession,
    *,
    user: CurrentUser,
    cursor: str | None,
    limit: int,
    region_code: str | None = None,
) -> Page[ExpertRead]:
    """The pool by expert id, with each expert's declared conflicts (the cursor: the last id of a page)."""
    user.require(Role.admin)
    stmt = select(Expert).order_by(Expert.expert_id).limit(limit + 1)
    if cursor is not None:
        stmt = stmt.where(Expert.expert_id > _decode(cursor))
    if region_code is not None:
        stmt = stmt.where(Expert.region_code == region_code)
    rows = (await session.scalars(stmt)).all()
    page, next_cursor = rows[:limit], _encode(rows[limit - 1].expert_id) if len(rows) > limit else None
    conflicts: dict[str, list[str]] = {e.expert_id: [] for e in page}
    for expert_id, uscc in await session.execute(
        select(ExpertConflict.expert_id, ExpertConflict.uscc)
        .where(ExpertConflict.expert_id.in_(list(conflicts)))
        .order_by(ExpertConflict.uscc)
    ):
        conflicts[expert_id].append(uscc)
    items = [
        ExpertRead.model_validate(e).model_copy(update={"conflicts": conflicts[e.expert_id]}) for e in page
    ]
    return Page(items=items, next_cursor=next_cursor)


def _encode(expert_id: str) -> str:
    return base64.urlsafe_b64encode(f"expert|{expert_id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        kind, _, expert_id = (
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        )
    except (ValueError, UnicodeDecodeError):
        kind, expert_id = "", ""
    if kind != "expert" or not expert_id:
        raise Unprocessable(
            "The cursor is not one this service issued.",
            errors=[FieldError(field="cursor", message="invalid cursor")],
        )
    return expert_id


async def list_panels(
    session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID
) -> Page[PanelRead]:
    """Every draw for an application, oldest first, with its seats (admin: the audit of the draws) - one per
    entry into a panel stage, so always one page."""
    user.require(Role.admin)
    drawn = (
        await session.scalars(
            select(Panel).where(Panel.application_id == application_id).order_by(Panel.created_at, Panel.id)
        )
    ).all()
    seats = (
        await session.scalars(
            select(PanelAssignment)
            .where(PanelAssignment.panel_id.in_([p.id for p in drawn]))
            .order_by(PanelAssignment.expert_id)
        )
    ).all()
    items = [
        PanelRead.model_validate(panel).model_copy(
            update={"seats": [SeatRead.model_validate(s) for s in seats if s.panel_id == panel.id]}
        )
        for panel in drawn
    ]
    return Page(items=items, next_cursor=None)


# --- the experts' blind files ------------------------------------------------------------------------------


_SEAT = (PanelAssignment, Panel, Application)


def _seats(user: CurrentUser) -> Any:
    user.require(Role.expert)
    return (
        select(*_SEAT)
        .join(Panel, Panel.id == PanelAssignment.panel_id)
        .join(Application, Application.id == Panel.application_id)
        .where(PanelAssignment.expert_id == user.expert_id)
    )


def _summary(seat: PanelAssignment, panel: Panel, application: Application) -> dict[str, Any]:
    return {
        "id": seat.id,
        "status": seat.status,
        "stage": panel.stage,
        "program": application.program,
        "tier": application.tier,
        "rule": panel.rule,
        "pass_score": panel.pass_score,
        "due_at": panel.due_at,
        "score": seat.score,
        "vote": seat.vote,
    }


async def list_assignments(
    session: AsyncSession, *, user: CurrentUser, cursor: str | None, limit: int
) -> Page[AssignmentSummary]:
    """The caller's open seats on sitting panels, oldest first (those due soonest)."""
    stmt = _seats(user).where(
        PanelAssignment.status == "open", Panel.status == "sitting", Application.status == "in_review"
    )
    stmt = paginate(
        stmt,
        key=(Panel.created_at, PanelAssignment.id),
        cursor=decode_cursor(cursor),
        limit=limit,
        newest_first=False,
    )
    rows = (await session.execute(stmt)).all()
    page, next_cursor = split_page(rows, limit, lambda r: (r[1].created_at, r[0].id))
    return Page(items=[AssignmentSummary(**_summary(*r)) for r in page], next_cursor=next_cursor)


async def _seat(
    session: AsyncSession, user: CurrentUser, assignment_id: uuid.UUID
) -> tuple[PanelAssignment, Panel, Application]:
    row = (await session.execute(_seats(user).where(PanelAssignment.id == assignment_id))).first()
    if row is None:
        raise NotFound("No such panel assignment.")  # another expert's seat, too
    return row[0], row[1], row[2]


async def blind_file(session: AsyncSession, *, user: CurrentUser, assignment_id: uuid.UUID) -> BlindFile:
    seat, panel, application = await _seat(session, user, assignment_id)
    industry = await session.scalar(select(Enterprise.industry).where(Enterprise.uscc == application.uscc))
    return BlindFile(
        **_summary(seat, panel, application),
        industry=industry or "",
        metrics=application.metrics,
        screening=application.screening,
    )


async def seat_for_score(
    session: AsyncSession, *, user: CurrentUser, assignment_id: uuid.UUID, data: ScoreCreate
) -> uuid.UUID:
    """The application whose panel the caller's seat is on, once the answer fits the panel's rule and the seat
    is open (a second answer is a 409; the workflow's validator says so too)."""
    seat, panel, application = await _seat(session, user, assignment_id)
    if panel.rule == "average_score" and not isinstance(data, ScoreBody):
        raise Unprocessable(
            "This panel scores (0-100).", errors=[FieldError(field="score", message="required by the rule")]
        )
    if panel.rule == "majority" and not isinstance(data, VoteBody):
        raise Unprocessable(
            "This panel votes.", errors=[FieldError(field="vote", message="required by the rule")]
        )
    if seat.status != "open" or panel.status != "sitting" or application.status != "in_review":
        raise Conflict(f"This seat is {seat.status} on a panel that is {panel.status.replace('_', ' ')}.")
    return application.id


async def score(
    session: AsyncSession,
    temporal: Client,
    *,
    user: CurrentUser,
    key: str | None,
    assignment_id: uuid.UUID,
    data: ScoreCreate,
) -> Any:
    """The caller's answer on its seat, once (Idempotency-Key: a retry gets the first answer back): the seat
    checked here (404 not the caller's, 422 the wrong kind of answer, 409 already answered), then taken by the
    review workflow's Update ``score_panel``, whose validator refuses a second answer as well."""

    async def authorize() -> uuid.UUID:
        return await seat_for_score(session, user=user, assignment_id=assignment_id, data=data)

    async def act() -> ScoreRead:
        application_id = await authorize()
        score, vote = (data.score, None) if isinstance(data, ScoreBody) else (None, data.vote)
        request = ScoreRequest(
            actor=Actor(sub=user.sub, role=user.role.value, expert_id=user.expert_id),
            assignment_id=assignment_id,
            score=score,
            vote=vote,
        )
        scored = await temporal_boundary.execute_update(
            temporal,
            review_workflow_id(application_id),
            "score_panel",
            request,
            update_id=f"score_panel-{user.identity}-{key}" if key else None,
            result_type=PanelScored,
            refused="The panel no longer takes answers on this seat.",
            finished="The application's review has finished; its panel no longer takes answers.",
        )
        return ScoreRead(
            assignment_id=assignment_id,
            status="answered",
            score=score,
            vote=vote,
            answered=scored.answered,
            size=scored.size,
        )

    async def check_role() -> None:
        user.require(Role.expert)

    return await once(
        session,
        user,
        key,
        endpoint=f"POST /panel-assignments/{assignment_id}/score",
        payload=data,
        authorize=check_role,
        act=act,
    )
