"""Rules of the credit domain: benefits on recognition, credit lines, drawdowns and the disbursements list.
The approval and payment of every payout (drawdowns, bridge loans, listing rewards) is in ``payouts``;
bridge-loan funds and listing rewards are in ``funds``. Functions take the session first and never commit:
requests commit once when the route returns; activities run each attempt in one transaction.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import CurrentUser, Role
from services.contracts import BenefitGrant, BenefitsFreeze, PayoutKind
from services.credit import payouts, policy, repository
from services.credit.models import (
    ZERO,
    Benefit,
    BridgeLoan,
    CreditLine,
    Drawdown,
    ListingReward,
    column_values,
    whose,
)
from services.credit.schemas import (
    BenefitRead,
    CreditLineRead,
    DisbursementPage,
    DisbursementRead,
    DrawdownCreate,
    ListFilters,
    PayoutRead,
    StatusTotal,
    format_money,
)
from services.errors import Conflict, NotFound, Unprocessable
from services.pagination import Cursor, Page, decode_cursor, split_page

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


R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")


def scoped(user: CurrentUser, filters: ListFilters) -> ListFilters | None:
    """``filters`` as far as the reader may see: an enterprise's narrowed to its own USCC (None when they name
    another enterprise's: nothing to list), finance's and admin's as they are."""
    scope = reader_scope(user)
    if scope is None:
        return filters
    if filters.uscc not in (None, scope):
        return None
    return filters.model_copy(update={"uscc": scope})


class ListQuery(Protocol[R_co]):
    """A repository query of one page of a list, newest first (services/pagination.py)."""

    def __call__(
        self, session: AsyncSession, *, filters: ListFilters, cursor: Cursor | None, limit: int
    ) -> Awaitable[Sequence[R_co]]: ...


@dataclass(frozen=True)
class Listing(Generic[R, T]):
    """A list readers page through: its query, where a row stands in its order, the read models of a page's
    rows. ``page`` is the list as the reader may see it (``scoped``)."""

    query: ListQuery[R]
    position: Callable[[R], Cursor]
    reads: Callable[[AsyncSession, Sequence[R]], Awaitable[list[T]]]

    async def page(
        self,
        session: AsyncSession,
        *,
        user: CurrentUser,
        filters: ListFilters,
        cursor: str | None,
        limit: int,
    ) -> Page[T]:
        narrowed = scoped(user, filters)
        if narrowed is None:
            return Page(items=[])
        rows = await self.query(session, filters=narrowed, cursor=decode_cursor(cursor), limit=limit)
        page, next_cursor = split_page(rows, limit, self.position)
        return Page(items=await self.reads(session, page), next_cursor=next_cursor)


# --- benefits: the schedule, grants and the freeze (called by the benefits workflow's activities) ----------


async def grant_benefit(session: AsyncSession, *, grant: BenefitGrant) -> None:
    """Record one benefit of a recognition (and open its credit line): once, however often it is called."""
    if grant.kind == "credit_line":
        if grant.amount is None or grant.amount <= 0:
            raise Unprocessable("A credit line needs a positive limit.")
        await repository.insert_credit_line(session, grant=grant, limit=grant.amount)
    await repository.insert_benefit(session, grant=grant)


async def freeze_benefits(
    session: AsyncSession, *, data: BenefitsFreeze
) -> list[tuple[PayoutKind, uuid.UUID]]:
    """Stop a recognition's benefits: its credit line takes no new drawdowns, and the payouts it qualified
    that still await approval - drawdowns, bridge loans, listing rewards - are rejected with the reason
    (what they held released). Returns the rejected payouts, whose workflows should look again."""
    recognition_id = data.recognition_id
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


async def _benefit_reads(
    session: AsyncSession, rows: Sequence[tuple[Benefit, uuid.UUID | None]]
) -> list[BenefitRead]:
    return [
        BenefitRead.model_validate({**column_values(benefit), "credit_line_id": line_id})
        for benefit, line_id in rows
    ]


async def _credit_line_reads(session: AsyncSession, lines: Sequence[CreditLine]) -> list[CreditLineRead]:
    return [CreditLineRead.model_validate(line) for line in lines]


# The lists' service functions: list_x(session, *, user, filters, cursor, limit) -> Page[XRead].
list_benefits = Listing(
    repository.list_benefits, lambda row: (row[0].granted_at, row[0].id), _benefit_reads
).page
list_credit_lines = Listing(
    repository.list_credit_lines, lambda line: (line.opened_at, line.id), _credit_line_reads
).page


async def _visible_line(session: AsyncSession, *, user: CurrentUser, line_id: uuid.UUID) -> CreditLine:
    scope = reader_scope(user)  # a wrong role is told so before any lookup
    line = await repository.get_credit_line(session, line_id)
    if line is None or scope not in (None, line.uscc):
        raise NotFound(f"There is no credit line {line_id}.")
    return line


async def get_credit_line(session: AsyncSession, *, user: CurrentUser, line_id: uuid.UUID) -> CreditLineRead:
    return CreditLineRead.model_validate(await _visible_line(session, user=user, line_id=line_id))


async def get_payout(
    session: AsyncSession, *, user: CurrentUser, kind: PayoutKind, payout_id: uuid.UUID
) -> PayoutRead:
    """The drawdown, bridge loan or listing reward as its kind's read model (``payouts.reads``), with its
    approvals, disbursement and ledger entries. Another enterprise's does not exist for an enterprise."""
    scope = reader_scope(user)  # a wrong role is told so before any lookup
    row = await repository.get_payout(session, kind, payout_id)
    if row is None or scope not in (None, row.uscc):
        raise NotFound(f"There is no {payouts.KINDS[kind].noun} {payout_id}.")
    return await payouts.read(session, kind, row)


async def list_disbursements(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: ListFilters,
    cursor: str | None = None,
    limit: int = 50,
) -> DisbursementPage:
    narrowed = scoped(user, filters)
    if narrowed is None:
        return DisbursementPage(items=[], totals={})
    rows = await repository.list_disbursements(
        session, filters=narrowed, cursor=decode_cursor(cursor), limit=limit
    )
    totals = await repository.disbursement_totals(session, filters=narrowed)
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
    session: AsyncSession, *, user: CurrentUser, filters: ListFilters
) -> AsyncIterator[str]:
    """Every matching disbursement as CSV lines, oldest first, read from the database as they are sent.
    The caller's role is checked now, before the first line."""
    return _csv_rows(session, scoped(user, filters))


async def _csv_rows(session: AsyncSession, filters: ListFilters | None) -> AsyncIterator[str]:
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
) -> PayoutRead:
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
        raise payouts.beyond(data.amount, "the available", now_line.available)
    drawdown = Drawdown(
        id=uuid.uuid4(),
        credit_line_id=line.id,
        **whose(line),
        amount=data.amount,
        **payouts.requested(program, data.amount, by=user.sub, at=payouts.now()),
    )
    return await payouts.add(session, "drawdown", drawdown)
