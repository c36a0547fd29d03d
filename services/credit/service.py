"""Rules of the credit domain: benefits on recognition, credit lines, drawdowns and the disbursements list.
The approval and payment of every payout (drawdowns, bridge loans, listing rewards) is in ``payouts``;
bridge-loan funds and listing rewards are in ``funds``. Functions take the session first and never commit:
requests commit once when the route returns; activities run each attempt in one transaction.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from services.auth import CurrentUser, Role
from services.contracts import BenefitGrant, BenefitsFreeze, PayoutKind
from services.credit import payouts, policy, repository
from services.credit.models import (
    ZERO,
    BridgeLoan,
    CreditLine,
    Drawdown,
    ListingReward,
    column_values,
)
from services.credit.schemas import (
    ApprovalCreate,
    BenefitRead,
    CreditLineRead,
    DisbursementFilters,
    DisbursementPage,
    DisbursementRead,
    DrawdownCreate,
    DrawdownRead,
    StatusTotal,
    format_money,
)
from services.errors import Conflict, NotFound, Unprocessable
from services.pagination import Page, decode_cursor, split_page

READERS = (Role.enterprise, Role.finance, Role.admin)
# Payouts a recognition's benefits qualified, rejected while awaiting approval when the benefits freeze.
FROZEN_WITH_THE_BENEFIT: tuple[tuple[PayoutKind, type[BridgeLoan] | type[ListingReward]], ...] = (
    ("bridge_loan", BridgeLoan),
    ("listing_reward", ListingReward),
)


def reader_scope(user: CurrentUser) -> str | None:
    """The USCC a reader is limited to (None: everything); other roles may not read credit data."""
    user.require(*READERS)
    return user.uscc if user.role is Role.enterprise else None


def _visible(user: CurrentUser, uscc: str) -> bool:
    return user.role in (Role.finance, Role.admin) or (user.role is Role.enterprise and user.uscc == uscc)


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


async def freeze_benefits(
    session: AsyncSession, *, data: BenefitsFreeze
) -> list[tuple[PayoutKind, uuid.UUID]]:
    """Stop a recognition's benefits: its credit line takes no new drawdowns, and the payouts it qualified
    that still await approval - drawdowns, bridge loans, listing rewards - are rejected with the reason
    (what they held released). Returns the rejected payouts, whose workflows should look again."""
    recognition_id = uuid.UUID(data.recognition_id)
    await repository.freeze_benefits(session, recognition_id=recognition_id, reason=data.reason, at=data.at)
    rejected: list[tuple[PayoutKind, uuid.UUID]] = []
    line = await repository.freeze_credit_line(
        session, recognition_id=recognition_id, reason=data.reason, at=data.at
    )
    if line is not None:
        drawdowns = await repository.reject_pending_drawdowns(
            session, credit_line_id=line.id, reason=f"credit line frozen: {data.reason}", at=data.at
        )
        held = sum((amount for _, amount in drawdowns), ZERO)
        if held:
            await repository.release(session, line_id=line.id, amount=held)
        rejected += [("drawdown", drawdown_id) for drawdown_id, _ in drawdowns]
    for kind, model in FROZEN_WITH_THE_BENEFIT:
        for row in await repository.reject_pending(
            session, model, recognition_id=recognition_id, reason=f"benefit frozen: {data.reason}", at=data.at
        ):
            await payouts.KINDS[kind].release(session, row)
            rejected.append((kind, row.id))
    return rejected


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
    scope = reader_scope(user)
    if scope is not None and uscc not in (None, scope):
        return Page(items=[])
    rows = await repository.list_benefits(
        session,
        uscc=scope or uscc,
        recognition_id=recognition_id,
        kind=kind,
        status=status,
        cursor=decode_cursor(cursor),
        limit=limit,
    )
    page, next_cursor = split_page(rows, limit, lambda row: (row[0].granted_at, row[0].id))
    items = [
        BenefitRead.model_validate({**column_values(benefit), "credit_line_id": line_id})
        for benefit, line_id in page
    ]
    return Page(items=items, next_cursor=next_cursor)


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
    scope = reader_scope(user)
    if scope is not None and uscc not in (None, scope):
        return Page(items=[])
    rows = await repository.list_credit_lines(
        session,
        uscc=scope or uscc,
        status=status,
        program=program,
        tier=tier,
        cursor=decode_cursor(cursor),
        limit=limit,
    )
    page, next_cursor = split_page(rows, limit, lambda line: (line.opened_at, line.id))
    return Page(
        items=[CreditLineRead.model_validate(line) for line in page],
        next_cursor=next_cursor,
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
    [details] = await payouts.details(session, "drawdown", [drawdown])
    return DrawdownRead.model_validate({**column_values(drawdown), **details})


async def get_drawdown(session: AsyncSession, *, user: CurrentUser, drawdown_id: uuid.UUID) -> DrawdownRead:
    user.require(*READERS)
    drawdown = await repository.get_drawdown(session, drawdown_id)
    if drawdown is None or not _visible(user, drawdown.uscc):
        raise NotFound(f"There is no drawdown {drawdown_id}.")
    return await _drawdown_read(session, drawdown)


def _scoped(user: CurrentUser, filters: DisbursementFilters) -> DisbursementFilters | None:
    scope = reader_scope(user)
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
        session, filters=scoped, cursor=decode_cursor(cursor), limit=limit
    )
    totals = await repository.disbursement_totals(session, filters=scoped)
    page, next_cursor = split_page(rows, limit, lambda row: (row.created_at, row.id))
    return DisbursementPage(
        items=[DisbursementRead.model_validate(row) for row in page],
        next_cursor=next_cursor,
        totals={status: StatusTotal(count=count, amount=amount) for status, count, amount in totals},
    )


CSV_COLUMNS = (
    "id",
    "kind",
    "payout_id",
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


async def authorize_drawdown(session: AsyncSession, *, user: CurrentUser, line_id: uuid.UUID) -> CreditLine:
    """Who may draw on a line: the enterprise that holds it (anyone else's line does not exist for them)."""
    user.require(Role.enterprise)
    return await _visible_line(session, user=user, line_id=line_id)


async def request_drawdown(
    session: AsyncSession,
    *,
    user: CurrentUser,
    line_id: uuid.UUID,
    data: DrawdownCreate,
    programs: policy.Programs,
) -> DrawdownRead:
    """Reserve the amount on the line at once (never past the limit) and write the drawdown; once the
    request commits, its workflow (``payouts.start_after_commit``) waits for the approvals until the
    program's deadline and then pays."""
    line = await authorize_drawdown(session, user=user, line_id=line_id)
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
    now = payouts.now()
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
    return await _drawdown_read(session, drawdown)


async def decide_drawdown(
    session: AsyncSession,
    *,
    user: CurrentUser,
    drawdown_id: uuid.UUID,
    data: ApprovalCreate,
    temporal: Client,
    retry: bool = False,
) -> DrawdownRead:
    """One finance officer's decision (see ``payouts.decide``); the response is the drawdown's new state."""
    await payouts.decide(
        session, user=user, kind="drawdown", payout_id=drawdown_id, data=data, temporal=temporal, retry=retry
    )
    refreshed = await repository.get_drawdown(session, drawdown_id)
    assert refreshed is not None
    return await _drawdown_read(session, refreshed)
