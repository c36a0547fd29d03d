"""Rules of the credit domain: benefits on recognition, credit lines, drawdowns and the disbursements list.
The approval and payment of every payout (drawdowns, bridge loans, listing rewards) is in ``payouts``;
bridge-loan funds and listing rewards are in ``funds``. Functions take the session first and never commit:
requests commit once when the route returns; activities run each attempt in one transaction.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar, cast
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import CurrentUser, Role
from services.contracts import BenefitGrant, BenefitsFreeze, PayoutKind
from services.credit import announce, payouts, policy, repository
from services.credit.models import (
    AWAITING,
    ZERO,
    Benefit,
    BridgeLoan,
    CreditLine,
    Disbursement,
    Drawdown,
    ListingReward,
    column_values,
)
from services.credit.schemas import (
    AWAITING_APPROVAL,
    ApprovalRead,
    BenefitRead,
    CreditLineRead,
    DisbursementPage,
    DisbursementRead,
    DrawdownCreate,
    ListFilters,
    PayoutInboxItem,
    PayoutRead,
    StatusTotal,
    format_money,
)
from services.errors import Conflict, NotFound, Unprocessable
from services.pagination import (
    Cursor,
    Page,
    SegmentCursor,
    decode_cursor,
    decode_segment_cursor,
    encode_segment_cursor,
    split_page,
)
from services.pools.service import barred_by
from services.vocabulary import PAYOUT_KINDS, whose

READERS = (Role.enterprise, Role.finance, Role.admin)
SHANGHAI = ZoneInfo("Asia/Shanghai")  # the weeks of the disbursement figures
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
    (what they held released). When its revocation for fraud barred the enterprise's cultivation pools
    (``pools.service.bar_enterprise``), the bridge loans a pool membership qualified that still await
    approval are rejected too. Returns the rejected payouts, whose workflows should look again."""
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
        held = sum((drawdown.amount for drawdown in drawdowns), ZERO)
        if held:
            await repository.release(session, line_id=line.id, amount=held)
        for drawdown in drawdowns:
            await announce.rejected(session, "drawdown", drawdown)
            rejected.append(("drawdown", drawdown.id))
    for kind, model in FROZEN_WITH_THE_BENEFIT:
        for row in await repository.reject_pending(
            session, model, recognition_id=recognition_id, reason=f"benefit frozen: {data.reason}", at=data.at
        ):
            await payouts.KINDS[kind].release(session, row)
            await announce.rejected(session, kind, row)
            rejected.append((kind, row.id))
    barred = await barred_by(session, recognition_id)  # revoked for fraud: its enterprise's pools are barred
    if barred is not None:
        for loan in await repository.reject_pending_pool_loans(
            session, uscc=barred, reason=f"cultivation pool barred: {data.reason}", at=data.at
        ):
            await payouts.KINDS["bridge_loan"].release(session, loan)
            await announce.rejected(session, "bridge_loan", loan)
            rejected.append(("bridge_loan", loan.id))
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
    """The lines' read models, with what is overdue on each (one query however many)."""
    overdue = await repository.overdue_amounts(session, [line.id for line in lines], at=payouts.now())
    return [
        CreditLineRead.model_validate(line).model_copy(update={"overdue": overdue.get(line.id, ZERO)})
        for line in lines
    ]


# The lists' service functions: list_x(session, *, user, filters, cursor, limit) -> Page[XRead].
list_benefits = Listing(
    repository.list_benefits, lambda row: (row[0].granted_at, row[0].id), _benefit_reads
).page
list_credit_lines = Listing(
    repository.list_credit_lines, lambda line: (line.opened_at, line.id), _credit_line_reads
).page


list_drawdowns = Listing(
    repository.list_drawdowns,
    lambda drawdown: (drawdown.created_at, drawdown.id),
    lambda session, drawdowns: payouts.reads(session, "drawdown", drawdowns),
).page


async def _visible_line(session: AsyncSession, *, user: CurrentUser, line_id: uuid.UUID) -> CreditLine:
    scope = reader_scope(user)  # a wrong role is told so before any lookup
    line = await repository.get_credit_line(session, line_id)
    if line is None or scope not in (None, line.uscc):
        raise NotFound(f"There is no credit line {line_id}.")
    return line


async def get_credit_line(session: AsyncSession, *, user: CurrentUser, line_id: uuid.UUID) -> CreditLineRead:
    [read] = await _credit_line_reads(session, [await _visible_line(session, user=user, line_id=line_id)])
    return read


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
    """A page of the disbursements the reader may see, newest first, with the count and amount per status
    of every one that matches (not only the page's)."""
    page = await _disbursements.page(session, user=user, filters=filters, cursor=cursor, limit=limit)
    narrowed = scoped(user, filters)
    totals = [] if narrowed is None else await repository.disbursement_totals(session, filters=narrowed)
    return DisbursementPage(
        items=page.items,
        next_cursor=page.next_cursor,
        totals={status: StatusTotal(count=count, amount=amount) for status, count, amount in totals},
    )


async def _disbursement_reads(session: AsyncSession, rows: Sequence[Disbursement]) -> list[DisbursementRead]:
    repaid = await repository.drawdowns_repaid(session, [row.drawdown_id for row in rows if row.drawdown_id])
    return [_disbursement_read(row, repaid.get(row.payout_id)) for row in rows]


_disbursements = Listing(
    repository.list_disbursements, lambda row: (row.created_at, row.id), _disbursement_reads
)


def _disbursement_read(row: Disbursement, repaid: Decimal | None) -> DisbursementRead:
    """A disbursement's read model; a drawdown's, once paid, with what was repaid of it and is outstanding."""
    read = DisbursementRead.model_validate(row)
    if repaid is None or row.status != "paid":
        return read
    return read.model_copy(update={"repaid": repaid, "outstanding": row.amount - repaid})


@dataclass(frozen=True)
class WeekTotal:
    """Disbursements paid out in one week (Monday to Sunday, China Standard Time): how many, how much."""

    week: date
    count: int
    amount: Decimal


async def paid_per_week(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: ListFilters,
    weeks: int = 12,
    at: datetime | None = None,
) -> list[WeekTotal]:
    """The matching disbursements paid out (status ``paid``) per week of their payment order (created_at),
    the last ``weeks`` weeks up to this one (Asia/Shanghai), every week listed (zero when none). Read as the
    list is: the caller's scope (``scoped``) and the list's filters; a status filter other than ``paid``
    leaves nothing."""
    local = (at or datetime.now(UTC)).astimezone(SHANGHAI)
    this_monday = local.date() - timedelta(days=local.weekday())
    mondays = [this_monday - timedelta(weeks=back) for back in range(weeks - 1, -1, -1)]
    narrowed = scoped(user, filters)
    found: dict[date, tuple[int, Decimal]] = {}
    if narrowed is not None and narrowed.status in (None, "paid"):
        since = datetime.combine(mondays[0], time.min, tzinfo=SHANGHAI)
        rows = await repository.paid_per_week(session, filters=narrowed, since=since)
        found = {week: (count, amount) for week, count, amount in rows}
    return [WeekTotal(monday, *found.get(monday, (0, ZERO))) for monday in mondays]


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
    "repaid",
    "outstanding",
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


def disbursement_rows(
    session: AsyncSession, *, user: CurrentUser, filters: ListFilters
) -> AsyncGenerator[DisbursementRead, None]:
    """The rows of the CSV (every matching disbursement, oldest first, read as they are used) as read
    models, for exports in other formats. The caller's role is checked now, before the first row."""
    return _disbursement_rows(session, scoped(user, filters))


async def _disbursement_rows(
    session: AsyncSession, filters: ListFilters | None
) -> AsyncGenerator[DisbursementRead, None]:
    if filters is None:
        return
    async for row, repaid in repository.stream_disbursements_repaid(session, filters=filters):
        yield _disbursement_read(row, repaid)


async def _csv_rows(session: AsyncSession, filters: ListFilters | None) -> AsyncIterator[str]:
    yield _csv_line(list(CSV_COLUMNS))
    if filters is None:
        return
    async for row, repaid in repository.stream_disbursements_repaid(session, filters=filters):
        read = _disbursement_read(row, repaid)
        yield _csv_line([getattr(read, column) for column in CSV_COLUMNS])


# --- the finance inbox -------------------------------------------------------------------------------------


async def list_payouts(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: ListFilters,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[PayoutInboxItem]:
    """The finance inbox: drawdowns, bridge loans and listing rewards together - those awaiting approval
    first, then every other - each group oldest first (a checker works the oldest first), ties broken by id,
    so pages walk one stable order by keyset (services/pagination.py, in segments). Enterprises see their
    own, finance and admin all; ``can_approve`` is the caller's (``payouts.may_decide``).

    In three steps, which ``inbox.py`` also takes, sharing the first between concurrent readers of the same
    page: ``inbox_rows``, ``can_approve``, ``inbox_page``."""
    narrowed = scoped(user, filters)
    after = decode_segment_cursor(cursor)
    if narrowed is None:
        return Page(items=[])
    found = await inbox_rows(session, filters=narrowed, after=after, limit=limit)
    return inbox_page(found, can_approve(user, found, payouts.now()))


@dataclass(frozen=True)
class InboxRows:
    """A page of the inbox as every reader allowed to see it sees it, ``can_approve`` aside: its rows
    (``repository.payout_inbox``, with the decisions so far), who decided on each, and the next page's
    cursor."""

    rows: Sequence[Any]
    next_cursor: str | None
    # What ``can_approve`` asks of each row (as plain values: it runs for every reader): its status, its
    # requester, its approval deadline and who decided on it.
    deciding: Sequence[tuple[str, str, datetime, frozenset[str]]]


async def inbox_version(session: AsyncSession) -> int:
    """The payouts' version as committed now: it grows with every committed change to a payout or to a
    decision on one (migration d0c5e0000006), so a page read after it is right until it moves."""
    return await repository.inbox_version(session)


async def inbox_rows(
    session: AsyncSession, *, filters: ListFilters, after: SegmentCursor | None, limit: int
) -> InboxRows:
    """The page of the inbox after ``after`` for ``filters`` as the reader may see them (``scoped``)."""
    kinds: Sequence[PayoutKind] = PAYOUT_KINDS if filters.kind is None else [cast(PayoutKind, filters.kind)]
    status = AWAITING if filters.status == AWAITING_APPROVAL else filters.status
    rows = await repository.payout_inbox(
        session,
        kinds=kinds,
        filters=filters.model_copy(update={"kind": None, "status": status}),
        after=after,
        limit=limit,
    )
    page, next_cursor = split_page(rows, limit, lambda row: (row.created_at, row.id))
    return InboxRows(
        rows=page,
        next_cursor=encode_segment_cursor(page[-1].segment, next_cursor) if page else None,
        deciding=[
            (row.status, row.requested_by, row.approval_deadline, frozenset(row.approvers or ()))
            for row in page
        ],
    )


def can_approve(user: CurrentUser, found: InboxRows, at: datetime) -> list[bool]:
    """Whether ``user`` may decide at ``at`` on each payout of the page (``payouts.may_decide``)."""
    return [
        payouts.may_decide(
            user, status=status, requested_by=requester, approval_deadline=deadline, approvers=deciders, at=at
        )
        for status, requester, deadline, deciders in found.deciding
    ]


# The fields of an inbox item that are the inbox row's column of the same name, as it stands.
_INBOX_AS_IS = ("kind", "id", "uscc", "program", "tier", "amount", "requested_by", "approval_deadline")


def inbox_page(found: InboxRows, can_approve: Sequence[bool]) -> Page[PayoutInboxItem]:
    """The page's read models, with the reader's ``can_approve`` for each payout."""
    items = []
    for row, may in zip(found.rows, can_approve, strict=True):
        awaiting = row.status == AWAITING
        decisions = [
            ApprovalRead(approver=approver, decision=decision, reason=reason, created_at=at)
            for approver, decision, reason, at in zip(
                row.approvers or (), row.decisions or (), row.reasons or (), row.decided_at or (), strict=True
            )
        ]
        approved = sum(1 for decision in decisions if decision.decision == "approve")
        items.append(
            PayoutInboxItem(
                **{name: getattr(row, name) for name in _INBOX_AS_IS},
                status=AWAITING_APPROVAL if awaiting else row.status,
                requested_at=row.created_at,
                approvals=decisions,
                approvals_needed=row.required_approvals,
                approvals_missing=max(0, row.required_approvals - approved) if awaiting else 0,
                can_approve=may,
            )
        )
    return Page(items=items, next_cursor=found.next_cursor)


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
    overdue = await repository.overdue_amounts(session, [line.id], at=payouts.now())
    if overdue:
        raise Conflict(
            f"The credit line has {format_money(overdue[line.id])} overdue on its drawdowns; it takes no new "
            "drawdowns until that is repaid."
        )
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
        **payouts.requested(program, data.amount, by=user.sub, at=payouts.now()),
        term=policy.drawdown_term(program),
    )
    return await payouts.add(session, "drawdown", drawdown)
