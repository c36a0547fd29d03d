"""Rules of the credit domain: benefits on recognition, credit lines, drawdowns with maker-checker approval,
disbursements through the bank and their ledger entries. Functions take the session first and never commit:
requests commit once when the route returns; activities run each attempt in one transaction.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from services.auth import CurrentUser, Role
from services.credit import ledger, policy, repository
from services.credit.models import (
    ZERO,
    BridgeLoan,
    CreditLine,
    Disbursement,
    Drawdown,
    DrawdownApproval,
)
from services.credit.schemas import (
    ApprovalCreate,
    ApprovalRead,
    BenefitRead,
    BridgeLoanCreate,
    BridgeLoanRead,
    CreditLineRead,
    DisbursementFilters,
    DisbursementPage,
    DisbursementRead,
    DrawdownCreate,
    DrawdownRead,
    FundRead,
    LedgerEntryRead,
    LedgerLineRead,
    ListingCreate,
    ListingRewardRead,
    Page,
    StatusTotal,
    format_money,
)
from services.errors import (
    Conflict,
    FieldError,
    Forbidden,
    GiantflowError,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from services.pagination import decode_cursor, encode_cursor
from workflows.inputs import (
    ApprovalRequest,
    BenefitGrant,
    BenefitsFreeze,
    DisbursementInput,
    DrawdownCheck,
    DrawdownState,
    PaymentFailure,
    PaymentOrder,
    PaymentReceipt,
)

READERS = (Role.enterprise, Role.finance, Role.admin)


def _scope(user: CurrentUser) -> str | None:
    """The USCC a reader is limited to (None: everything); other roles may not read credit data."""
    user.require(*READERS)
    return user.uscc if user.role is Role.enterprise else None


def _visible(user: CurrentUser, uscc: str) -> bool:
    return user.role in (Role.finance, Role.admin) or (user.role is Role.enterprise and user.uscc == uscc)


def _now() -> datetime:
    return datetime.now(UTC)


# --- benefits: the schedule, grants and the freeze (called by the benefits workflow's activities) ----------


async def grant_benefit(session: AsyncSession, *, grant: BenefitGrant) -> None:
    """Record one benefit of a recognition (and open its credit line): once, however often it is called."""
    recognition_id = uuid.UUID(grant.recognition_id)
    if grant.kind == "credit_line":
        if grant.amount is None or grant.amount <= 0:
            raise Unprocessable("A credit line needs a positive limit.")
        await repository.insert_credit_line(
            session,
            recognition_id=recognition_id,
            uscc=grant.uscc,
            program=grant.program,
            tier=grant.tier,
            limit=grant.amount,
        )
    await repository.insert_benefit(
        session,
        recognition_id=recognition_id,
        uscc=grant.uscc,
        program=grant.program,
        tier=grant.tier,
        kind=grant.kind,
        amount=grant.amount,
    )


async def freeze_benefits(session: AsyncSession, *, data: BenefitsFreeze) -> list[uuid.UUID]:
    """Stop a recognition's benefits: its credit line takes no new drawdowns and the drawdowns still awaiting
    approval are rejected with the reason (their reservations released). Returns the rejected drawdowns."""
    recognition_id = uuid.UUID(data.recognition_id)
    await repository.freeze_benefits(session, recognition_id=recognition_id, reason=data.reason, at=data.at)
    line = await repository.freeze_credit_line(
        session, recognition_id=recognition_id, reason=data.reason, at=data.at
    )
    if line is None:
        return []
    rejected = await repository.reject_pending_drawdowns(
        session, credit_line_id=line.id, reason=f"credit line frozen: {data.reason}", at=data.at
    )
    held = sum((amount for _, amount in rejected), ZERO)
    if held:
        await repository.release(session, line_id=line.id, amount=held)
    return [drawdown_id for drawdown_id, _ in rejected]


# --- reads -------------------------------------------------------------------------------------------------


async def list_benefits(
    session: AsyncSession,
    *,
    user: CurrentUser,
    uscc: str | None = None,
    recognition_id: uuid.UUID | None = None,
    kind: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[BenefitRead]:
    scope = _scope(user)
    if scope is not None and uscc not in (None, scope):
        return Page(items=[])
    rows = await repository.list_benefits(
        session,
        uscc=scope or uscc,
        recognition_id=recognition_id,
        kind=kind,
        status=status,
        cursor=decode_cursor(cursor),
        limit=limit + 1,
    )
    items = [
        BenefitRead.model_validate({**_columns(benefit), "credit_line_id": line_id})
        for benefit, line_id in rows[:limit]
    ]
    last = rows[limit - 1][0] if len(rows) > limit else None
    return Page(items=items, next_cursor=encode_cursor(last.granted_at, last.id) if last else None)


def _columns(row: object) -> dict[str, object]:
    table = row.__table__  # type: ignore[attr-defined]
    return {column.key: getattr(row, column.key) for column in table.columns}


async def list_credit_lines(
    session: AsyncSession,
    *,
    user: CurrentUser,
    uscc: str | None = None,
    status: str | None = None,
    program: str | None = None,
    tier: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[CreditLineRead]:
    scope = _scope(user)
    if scope is not None and uscc not in (None, scope):
        return Page(items=[])
    rows = await repository.list_credit_lines(
        session,
        uscc=scope or uscc,
        status=status,
        program=program,
        tier=tier,
        cursor=decode_cursor(cursor),
        limit=limit + 1,
    )
    last = rows[limit - 1] if len(rows) > limit else None
    return Page(
        items=[CreditLineRead.model_validate(line) for line in rows[:limit]],
        next_cursor=encode_cursor(last.opened_at, last.id) if last else None,
    )


async def _visible_line(session: AsyncSession, *, user: CurrentUser, line_id: uuid.UUID) -> CreditLine:
    line = await repository.get_credit_line(session, line_id)
    if line is None or not _visible(user, line.uscc):
        raise NotFound(f"There is no credit line {line_id}.")
    return line


async def get_credit_line(session: AsyncSession, *, user: CurrentUser, line_id: uuid.UUID) -> CreditLineRead:
    user.require(*READERS)  # a wrong role is told so before any lookup
    return CreditLineRead.model_validate(await _visible_line(session, user=user, line_id=line_id))


async def _drawdown_read(session: AsyncSession, drawdown: Drawdown) -> DrawdownRead:
    approvals = await repository.approvals(session, drawdown.id)
    disbursement = await repository.get_disbursement(session, drawdown.id)
    entries = []
    if disbursement is not None and disbursement.ledger_entry_id is not None:
        entries = await ledger.entries(session, [disbursement.ledger_entry_id])
    return DrawdownRead.model_validate(
        {
            **_columns(drawdown),
            "approvals": [ApprovalRead.model_validate(a) for a in approvals],
            "disbursement": DisbursementRead.model_validate(disbursement) if disbursement else None,
            "ledger_entries": [
                LedgerEntryRead(
                    id=e.id,
                    memo=e.memo,
                    reverses=e.reverses,
                    lines=[
                        LedgerLineRead(account=li.account, debit=li.debit, credit=li.credit) for li in e.lines
                    ],
                )
                for e in entries
            ],
        }
    )


async def get_drawdown(session: AsyncSession, *, user: CurrentUser, drawdown_id: uuid.UUID) -> DrawdownRead:
    user.require(*READERS)
    drawdown = await repository.get_drawdown(session, drawdown_id)
    if drawdown is None or not _visible(user, drawdown.uscc):
        raise NotFound(f"There is no drawdown {drawdown_id}.")
    return await _drawdown_read(session, drawdown)


def _scoped(user: CurrentUser, filters: DisbursementFilters) -> DisbursementFilters | None:
    scope = _scope(user)
    if scope is None:
        return filters
    if filters.uscc not in (None, scope):
        return None
    return filters.model_copy(update={"uscc": scope})


async def list_disbursements(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: DisbursementFilters,
    cursor: str | None = None,
    limit: int = 50,
) -> DisbursementPage:
    scoped = _scoped(user, filters)
    if scoped is None:
        return DisbursementPage(items=[], totals={})
    rows = await repository.list_disbursements(
        session, filters=scoped, cursor=decode_cursor(cursor), limit=limit + 1
    )
    totals = await repository.disbursement_totals(session, filters=scoped)
    last = rows[limit - 1] if len(rows) > limit else None
    return DisbursementPage(
        items=[DisbursementRead.model_validate(row) for row in rows[:limit]],
        next_cursor=encode_cursor(last.created_at, last.id) if last else None,
        totals={status: StatusTotal(count=count, amount=amount) for status, count, amount in totals},
    )


CSV_COLUMNS = (
    "id",
    "drawdown_id",
    "uscc",
    "program",
    "tier",
    "amount",
    "status",
    "bank_reference",
    "failure_reason",
    "ledger_entry_id",
    "created_at",
    "completed_at",
)


def _csv_line(values: list[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(
        [
            ""
            if v is None
            else format_money(v)
            if isinstance(v, Decimal)
            else v.isoformat()
            if isinstance(v, datetime)
            else str(v)
            for v in values
        ]
    )
    return buffer.getvalue()


def disbursements_csv(
    session: AsyncSession, *, user: CurrentUser, filters: DisbursementFilters
) -> AsyncIterator[str]:
    """Every matching disbursement as CSV lines, oldest first, read from the database as they are sent.
    The caller's role is checked now, before the first line."""
    return _csv_rows(session, _scoped(user, filters))


async def _csv_rows(session: AsyncSession, filters: DisbursementFilters | None) -> AsyncIterator[str]:
    yield _csv_line(list(CSV_COLUMNS))
    if filters is None:
        return
    async for row in repository.stream_disbursements(session, filters=filters):
        yield _csv_line([getattr(row, column) for column in CSV_COLUMNS])


# --- drawdowns: request and decide (HTTP) ------------------------------------------------------------------


async def request_drawdown(
    session: AsyncSession,
    *,
    user: CurrentUser,
    line_id: uuid.UUID,
    data: DrawdownCreate,
    programs: policy.Programs,
    temporal: Client,
    task_queue: str,
) -> DrawdownRead:
    """Reserve the amount on the line at once (never past the limit) and start the drawdown's workflow,
    which waits for the approvals until the program's deadline and then pays.

    The workflow is started before the request commits: if the commit then fails, the workflow finds no
    drawdown at its deadline and ends; nothing can approve a drawdown that was never committed."""
    user.require(Role.enterprise)
    line = await _visible_line(session, user=user, line_id=line_id)
    program = policy.program(programs, line.program)
    if not await repository.reserve(session, line_id=line.id, amount=data.amount):
        now_line = await repository.get_credit_line(session, line.id)
        assert now_line is not None
        if now_line.status != "active":
            reason = now_line.freeze_reason or "no new drawdowns"
            raise Conflict(f"The credit line is {now_line.status}: {reason}.")
        raise Conflict(
            f"The amount {format_money(data.amount)} is more than the available "
            f"{format_money(now_line.available)}."
        )
    now = _now()
    drawdown = Drawdown(
        id=uuid.uuid4(),
        credit_line_id=line.id,
        uscc=line.uscc,
        program=line.program,
        tier=line.tier,
        amount=data.amount,
        status="pending_approval",
        requested_by=user.sub,
        required_approvals=policy.approvals_required(program, data.amount),
        approval_deadline=policy.approval_deadline(program, now),
        created_at=now,
    )
    repository.add(session, drawdown)
    await session.flush()
    try:
        await temporal.start_workflow(
            "DisbursementWorkflow",
            DisbursementInput(
                drawdown_id=str(drawdown.id),
                requested_by=user.sub,
                approval_deadline=drawdown.approval_deadline,
            ),
            id=drawdown.workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except RPCError as exc:
        raise ServiceUnavailable("The workflow service is unavailable; nothing was reserved.") from exc
    return await _drawdown_read(session, drawdown)


_APPLICATION_ERRORS: dict[str, type[GiantflowError]] = {
    "Forbidden": Forbidden,
    "Conflict": Conflict,
    "NotFound": NotFound,
    "Unprocessable": Unprocessable,
}


def _application_error(exc: BaseException) -> ApplicationError | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return None


async def decide_drawdown(
    session: AsyncSession,
    *,
    user: CurrentUser,
    drawdown_id: uuid.UUID,
    data: ApprovalCreate,
    temporal: Client,
) -> DrawdownRead:
    """One finance officer's decision, sent to the drawdown's workflow as an Update: its activity writes the
    decision in its own transaction (maker-checker enforced under a row lock) and the Update answers the new
    state. Above the program's threshold two distinct approvers are needed; a rejection releases the hold."""
    user.require(Role.finance)
    drawdown = await repository.get_drawdown(session, drawdown_id)
    if drawdown is None:
        raise NotFound(f"There is no drawdown {drawdown_id}.")
    if drawdown.requested_by == user.sub:
        raise Forbidden("The requester of a drawdown never decides on it.")
    if drawdown.status != "pending_approval":
        raise Conflict(f"The drawdown is {drawdown.status}; it is no longer waiting for approval.")
    if any(a.approver == user.sub for a in await repository.approvals(session, drawdown.id)):
        raise Conflict("You have already decided on this drawdown; another finance officer must approve it.")
    request = ApprovalRequest(
        drawdown_id=str(drawdown.id), approver=user.sub, decision=data.decision, reason=data.reason
    )
    try:
        await temporal.get_workflow_handle(drawdown.workflow_id).execute_update(
            "decide", request, id=f"decision-{user.sub}", result_type=DrawdownState
        )
    except WorkflowUpdateFailedError as exc:
        cause = _application_error(exc)
        error = _APPLICATION_ERRORS.get(cause.type or "", Conflict) if cause else Conflict
        raise error(cause.message if cause else "The decision could not be recorded.") from exc
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise Conflict("The drawdown is no longer waiting for approval.") from exc
        raise ServiceUnavailable("The workflow service is unavailable; nothing was decided.") from exc
    refreshed = await repository.get_drawdown(session, drawdown.id)
    assert refreshed is not None
    return await _drawdown_read(session, refreshed)


# --- drawdowns and disbursements: activity-side writes, each idempotent ------------------------------------


async def _state(session: AsyncSession, drawdown: Drawdown) -> DrawdownState:
    approvals = await repository.approvals(session, drawdown.id)
    return DrawdownState(
        drawdown_id=str(drawdown.id),
        status=drawdown.status,
        approvals=sum(1 for a in approvals if a.decision == "approve"),
        required_approvals=drawdown.required_approvals,
        reason=drawdown.reason,
    )


async def _locked(session: AsyncSession, drawdown_id: str) -> tuple[CreditLine, Drawdown]:
    """The drawdown and its line, locked line first (the order every writer uses)."""
    key = uuid.UUID(drawdown_id)
    found = await repository.get_drawdown(session, key)
    if found is None:
        raise NotFound(f"There is no drawdown {drawdown_id}.")
    line = await repository.get_credit_line(session, found.credit_line_id, lock=True)
    drawdown = await repository.get_drawdown(session, key, lock=True)
    assert line is not None
    assert drawdown is not None
    return line, drawdown


async def record_decision(session: AsyncSession, *, request: ApprovalRequest) -> DrawdownState:
    line, drawdown = await _locked(session, request.drawdown_id)
    approvals = await repository.approvals(session, drawdown.id)
    if any(a.approver == request.approver for a in approvals):
        return await _state(session, drawdown)  # this decision was recorded by an earlier attempt
    if request.approver == drawdown.requested_by:
        raise Forbidden("The requester of a drawdown never decides on it.")
    if drawdown.status != "pending_approval":
        raise Conflict(f"The drawdown is {drawdown.status}; it is no longer waiting for approval.")
    now = _now()
    repository.add(
        session,
        DrawdownApproval(
            drawdown_id=drawdown.id,
            approver=request.approver,
            decision=request.decision,
            reason=request.reason,
            created_at=now,
        ),
    )
    if request.decision == "reject":
        drawdown.status, drawdown.decided_at = "rejected", now
        drawdown.reason = f"rejected by finance: {request.reason or 'no reason given'}"
        await repository.release(session, line_id=line.id, amount=drawdown.amount)
    elif sum(1 for a in approvals if a.decision == "approve") + 1 >= drawdown.required_approvals:
        drawdown.status, drawdown.decided_at = "approved", now
        repository.add(
            session,
            Disbursement(
                id=uuid.uuid4(),
                drawdown_id=drawdown.id,
                uscc=drawdown.uscc,
                program=drawdown.program,
                tier=drawdown.tier,
                amount=drawdown.amount,
                status="pending",
                bank_key=f"drawdown-{drawdown.id}",
                created_at=now,
            ),
        )
    await session.flush()
    return await _state(session, drawdown)


async def check_drawdown(session: AsyncSession, *, check: DrawdownCheck) -> DrawdownState:
    """The drawdown's state; with ``expire``, one still awaiting approval expires and its hold is released."""
    try:
        line, drawdown = await _locked(session, check.drawdown_id)
    except NotFound:
        # Not committed (yet): before the deadline keep waiting; after it, the request that started the
        # workflow never committed and nothing was reserved.
        status = "expired" if check.expire else "pending_approval"
        return DrawdownState(drawdown_id=check.drawdown_id, status=status, reason="not recorded")
    if check.expire and drawdown.status == "pending_approval":
        drawdown.status, drawdown.decided_at = "expired", check.at
        drawdown.reason = "the approval deadline passed"
        await repository.release(session, line_id=line.id, amount=drawdown.amount)
        await session.flush()
    return await _state(session, drawdown)


async def payment_order(session: AsyncSession, *, drawdown_id: str) -> PaymentOrder:
    disbursement = await repository.get_disbursement(session, uuid.UUID(drawdown_id))
    if disbursement is None:
        raise NotFound(f"Drawdown {drawdown_id} has no disbursement.")
    return PaymentOrder(
        drawdown_id=drawdown_id,
        key=disbursement.bank_key,
        amount=disbursement.amount,
        beneficiary=disbursement.uscc,
        reference=f"giantflow drawdown {drawdown_id}",
    )


async def confirm_disbursement(session: AsyncSession, *, receipt: PaymentReceipt) -> DrawdownState:
    """The bank paid: post the ledger entry, settle the hold, mark both rows - once."""
    line, drawdown = await _locked(session, receipt.drawdown_id)
    disbursement = await repository.get_disbursement(session, drawdown.id, lock=True)
    if disbursement is None:
        raise NotFound(f"Drawdown {receipt.drawdown_id} has no disbursement.")
    if disbursement.status == "paid":
        return await _state(session, drawdown)
    if disbursement.status != "pending" or drawdown.status != "approved":
        raise Conflict(f"The disbursement is {disbursement.status} and the drawdown {drawdown.status}.")
    entry = await ledger.post_entry(
        session,
        key=f"disbursement:{drawdown.id}",
        memo=f"drawdown {drawdown.id} paid to {drawdown.uscc} (bank {receipt.bank_reference})",
        lines=[
            ledger.Line.dr(ledger.credit_receivable(drawdown.uscc), drawdown.amount),
            ledger.Line.cr(ledger.BANK_SETTLEMENT, drawdown.amount),
        ],
    )
    now = _now()
    disbursement.status, disbursement.bank_reference = "paid", receipt.bank_reference
    disbursement.ledger_entry_id, disbursement.completed_at = entry.id, now
    drawdown.status = "disbursed"
    await repository.settle(session, line_id=line.id, amount=drawdown.amount)
    await session.flush()
    return await _state(session, drawdown)


async def fail_disbursement(session: AsyncSession, *, failure: PaymentFailure) -> DrawdownState:
    """The bank definitely refused: record the reason and release the hold - once."""
    line, drawdown = await _locked(session, failure.drawdown_id)
    disbursement = await repository.get_disbursement(session, drawdown.id, lock=True)
    if disbursement is None:
        raise NotFound(f"Drawdown {failure.drawdown_id} has no disbursement.")
    if disbursement.status == "failed":
        return await _state(session, drawdown)
    if disbursement.status != "pending":
        raise Conflict(f"The disbursement is already {disbursement.status}.")
    now = _now()
    disbursement.status, disbursement.failure_reason, disbursement.completed_at = (
        "failed",
        failure.reason,
        now,
    )
    drawdown.status, drawdown.reason = "failed", f"the bank refused the payment: {failure.reason}"
    await repository.release(session, line_id=line.id, amount=drawdown.amount)
    await session.flush()
    return await _state(session, drawdown)


# --- bridge-loan pools and listing rewards -------------------------------------------------------------


async def list_funds(
    session: AsyncSession, *, user: CurrentUser, programs: policy.Programs
) -> Page[FundRead]:
    """Every program's bridge pool: capacity (policy), committed (the database), available."""
    user.require(Role.finance, Role.admin)
    pools = {key: program.bridge_pool for key, program in sorted(programs.items()) if program.bridge_pool}
    committed = await repository.committed_by_pool(session, list(pools))
    items = []
    for key, pool in pools.items():
        used = committed.get(key, ZERO)
        items.append(
            FundRead(
                program=key,
                capacity=pool.capacity,
                committed=used,
                available=pool.capacity - used,
                per_use_cap=pool.per_use_cap,
                term_working_days=pool.term_working_days,
            )
        )
    return Page(items=items)


async def request_bridge_loan(
    session: AsyncSession, *, user: CurrentUser, data: BridgeLoanCreate, programs: policy.Programs
) -> BridgeLoanRead:
    """Commit a bridge loan from the pool of a program the enterprise's recognition qualifies for, at once:
    one conditional UPDATE, so concurrent requests never commit the pool beyond its capacity."""
    user.require(Role.enterprise)
    assert user.uscc is not None
    eligible = sorted(
        {b.program for b in await repository.active_benefits(session, uscc=user.uscc, kind="bridge_loan")}
    )
    if data.program is not None:
        if data.program not in eligible:
            raise Conflict(
                f"No active recognition of yours qualifies for program {data.program!r}'s bridge fund."
            )
        key = data.program
    elif len(eligible) == 1:
        key = eligible[0]
    elif not eligible:
        raise Conflict("No active recognition of yours qualifies for a bridge loan.")
    else:
        raise Unprocessable(
            f"Several programs qualify ({', '.join(eligible)}); name one in `program`.",
            errors=[FieldError(field="program", message="required when several qualify")],
        )
    pool = policy.program(programs, key).bridge_pool
    if pool is None:
        raise Conflict(f"Program {key!r} no longer has a bridge fund.")
    if data.amount > pool.per_use_cap:
        raise Unprocessable(
            f"A bridge loan is at most {format_money(pool.per_use_cap)}.",
            errors=[FieldError(field="amount", message="over the per-use cap")],
        )
    if data.term_days > pool.term_working_days:
        raise Unprocessable(
            f"A bridge loan runs at most {pool.term_working_days} working days.",
            errors=[FieldError(field="term_days", message="over the fund's term")],
        )
    await repository.ensure_pool(session, program=key, capacity=pool.capacity)
    if not await repository.commit_to_pool(session, program=key, amount=data.amount):
        available = await repository.pool_available(session, key)
        raise Conflict(
            f"The amount {format_money(data.amount)} is more than the fund's available "
            f"{format_money(available)}."
        )
    loan = BridgeLoan(
        id=uuid.uuid4(),
        program=key,
        uscc=user.uscc,
        amount=data.amount,
        term_days=data.term_days,
        purpose=data.purpose,
        status="committed",
        requested_by=user.sub,
        created_at=_now(),
    )
    repository.add(session, loan)
    await session.flush()
    entry = await ledger.post_entry(
        session,
        key=f"bridge-loan:{loan.id}",
        memo=f"bridge loan {loan.id} to {loan.uscc}",
        lines=[
            ledger.Line.dr(ledger.bridge_receivable(loan.uscc), loan.amount),
            ledger.Line.cr(ledger.bridge_pool(key), loan.amount),
        ],
    )
    loan.ledger_entry_id = entry.id
    await session.flush()
    return BridgeLoanRead.model_validate(loan)


async def report_listing(
    session: AsyncSession, *, user: CurrentUser, uscc: str, data: ListingCreate, programs: policy.Programs
) -> ListingRewardRead:
    """Record a listing and grant the board's one-time reward: once per enterprise and board, even when the
    listing is reported concurrently (the unique index decides; the others get a 409)."""
    user.require(Role.enterprise, Role.admin)
    if user.role is Role.enterprise and user.uscc != uscc:
        raise NotFound(f"There is no enterprise {uscc}.")
    if data.listed_on > _now().date():
        raise Unprocessable(
            "A listing is reported once it has happened.",
            errors=[FieldError(field="listed_on", message="in the future")],
        )
    armed = await repository.active_benefits(session, uscc=uscc, kind="listing_reward")
    if not armed:
        raise Conflict("No active recognition of this enterprise carries a listing reward.")
    rewards = [
        (b.program, programs[b.program].listing_rewards.get(data.board))
        for b in armed
        if b.program in programs
    ]
    offered = [(program, amount) for program, amount in rewards if amount is not None]
    if not offered:
        raise Unprocessable(
            f"No listing reward is offered for board {data.board!r}.",
            errors=[FieldError(field="board", message="no reward for this board")],
        )
    program_key, amount = offered[0]
    reward = await repository.insert_listing_reward(
        session,
        uscc=uscc,
        board=data.board,
        program=program_key,
        amount=amount,
        listed_on=data.listed_on,
        security_code=data.security_code,
        reported_by=user.sub,
        created_at=_now(),
    )
    if reward is None:
        raise Conflict(f"The enterprise was already rewarded for listing on {data.board!r}.")
    entry = await ledger.post_entry(
        session,
        key=f"listing-reward:{uscc}:{data.board}",
        memo=f"listing reward {data.board} for {uscc}",
        lines=[
            ledger.Line.dr(ledger.program_fund(program_key), reward.amount),
            ledger.Line.cr(ledger.rewards_payable(program_key), reward.amount),
        ],
    )
    reward.ledger_entry_id = entry.id
    await session.flush()
    return ListingRewardRead.model_validate(reward)
