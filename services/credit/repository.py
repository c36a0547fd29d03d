"""Every query of the credit domain. Money moves here only through conditional UPDATEs, so that concurrent
requests can never take a credit line past its limit or a fund past its capacity (the CHECK constraints are
the last line of defence)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    Select,
    String,
    and_,
    case,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from services.contracts import BenefitGrant, PayoutKind
from services.credit.models import (
    AWAITING,
    PAYOUT_MODELS,
    ZERO,
    Benefit,
    BridgeLoan,
    BridgeLoanRepayment,
    CreditLine,
    Disbursement,
    Drawdown,
    DrawdownRepayment,
    FundCapacityChange,
    FundPool,
    LedgerEntry,
    ListingReward,
    Payout,
    PayoutApproval,
    PayoutInboxVersion,
    RewardBudget,
    payout_column,
)
from services.credit.schemas import ListFilters
from services.db import Base
from services.events import OutboxEvent
from services.pagination import Cursor, SegmentCursor, paginate

_S = TypeVar("_S", bound="Select[*tuple[Any, ...]]")
_M = TypeVar("_M", bound=Base)
_P = TypeVar("_P", Drawdown, BridgeLoan, ListingReward)  # the payout models that await approval


async def _fresh(session: AsyncSession, model: type[_M], *where: Any, lock: bool) -> _M | None:
    """The row of ``model`` matching ``where``, read anew from the database (``populate_existing``), and with
    ``lock`` locked for the rest of the transaction."""
    stmt = select(model).where(*where).execution_options(populate_existing=True)
    if lock:
        stmt = stmt.with_for_update()
    row: _M | None = await session.scalar(stmt)
    return row


async def _updated(session: AsyncSession, model: type[_M], *where: Any, **values: Any) -> list[_M]:
    """Set ``values`` on the rows of ``model`` matching ``where`` in one UPDATE (which locks them); returns
    them, refreshing those the session holds (``populate_existing``)."""
    rows = await session.scalars(
        update(model)
        .where(*where)
        .values(**values)
        .returning(model)
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def _reject_awaiting(
    session: AsyncSession, model: type[_P], *where: Any, reason: str, at: datetime
) -> list[_P]:
    """Reject the rows of ``model`` matching ``where`` that still await approval, locking them; returns
    them."""
    awaiting = model.status == "pending_approval"
    return await _updated(session, model, *where, awaiting, status="rejected", reason=reason, decided_at=at)


# The filters that are no column of the listed rows: the lists that take them apply them (``_ranges``).
_NOT_COLUMNS = ("overdue", "date_from", "date_to", "amount_min", "amount_max")


def _matching(stmt: _S, model: type[Base], filters: ListFilters) -> _S:
    """``stmt`` narrowed to the rows whose column of each filter's name equals the value given (None: any),
    but for ``_NOT_COLUMNS``."""
    for name, value in filters:
        if value is not None and name not in _NOT_COLUMNS:
            stmt = stmt.where(getattr(model, name) == value)
    return stmt


async def _newest_first(
    session: AsyncSession,
    model: type[_M],
    key: tuple[QueryableAttribute[datetime], QueryableAttribute[uuid.UUID]],
    *,
    filters: ListFilters,
    cursor: Cursor | None,
    limit: int,
    where: Sequence[ColumnElement[bool]] = (),
) -> list[_M]:
    """A page of the rows of ``model`` matching ``filters`` (``_matching``) and ``where``, newest first by
    ``key`` (services/pagination.py)."""
    stmt = _matching(select(model).where(*where), model, filters)
    return list(await session.scalars(paginate(stmt, key=key, cursor=cursor, limit=limit, newest_first=True)))


# --- benefits ----------------------------------------------------------------------------------------------


def _granted(grant: BenefitGrant) -> dict[str, Any]:
    """A new row's id and what a benefit and the credit line it opens take from their grant: the recognition,
    the enterprise, the program and the tier."""
    return {
        "id": uuid.uuid4(),
        "recognition_id": grant.recognition_id,
        "uscc": grant.uscc,
        "program": grant.program,
        "tier": grant.tier,
    }


async def insert_benefit(session: AsyncSession, *, grant: BenefitGrant) -> bool:
    """Record a benefit once per recognition and kind; False when it was already there."""
    inserted = await session.scalar(
        insert(Benefit)
        .values(**_granted(grant), kind=grant.kind, status="active", amount=grant.amount)
        .on_conflict_do_nothing(index_elements=["recognition_id", "kind"])
        .returning(Benefit.id)
    )
    return inserted is not None


async def insert_credit_line(session: AsyncSession, *, grant: BenefitGrant, limit: Decimal) -> uuid.UUID:
    """Open the recognition's credit line once; returns its id either way."""
    values = _granted(grant)
    await session.execute(
        insert(CreditLine)
        .values(**values, credit_limit=limit, reserved=ZERO, drawn=ZERO, status="active")
        .on_conflict_do_nothing(index_elements=["recognition_id"])
    )
    line_id = await session.scalar(
        select(CreditLine.id).where(CreditLine.recognition_id == values["recognition_id"])
    )
    assert line_id is not None
    return line_id


async def list_benefits(
    session: AsyncSession, *, filters: ListFilters, cursor: Cursor | None, limit: int
) -> list[tuple[Benefit, uuid.UUID | None]]:
    """Newest first, paged (services/pagination.py); each with the credit line it opened, if any."""
    stmt = select(Benefit, CreditLine.id).join(
        CreditLine,
        and_(Benefit.kind == "credit_line", CreditLine.recognition_id == Benefit.recognition_id),
        isouter=True,
    )
    rows = await session.execute(
        paginate(
            _matching(stmt, Benefit, filters),
            key=(Benefit.granted_at, Benefit.id),
            cursor=cursor,
            limit=limit,
            newest_first=True,
        )
    )
    return [(benefit, line_id) for benefit, line_id in rows]


async def freeze_benefits(
    session: AsyncSession, *, recognition_id: uuid.UUID, reason: str, at: datetime
) -> None:
    await session.execute(
        update(Benefit)
        .where(Benefit.recognition_id == recognition_id, Benefit.status == "active")
        .values(status="frozen", frozen_at=at, freeze_reason=reason)
    )


async def freeze_credit_line(
    session: AsyncSession, *, recognition_id: uuid.UUID, reason: str, at: datetime
) -> CreditLine | None:
    """Freeze the recognition's line (locking it); None when the recognition has no line."""
    line = await session.scalar(
        select(CreditLine)
        .where(CreditLine.recognition_id == recognition_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if line is not None and line.status == "active":
        line.status, line.frozen_at, line.freeze_reason = "frozen", at, reason
    return line


async def reject_pending_drawdowns(
    session: AsyncSession, *, credit_line_id: uuid.UUID, reason: str, at: datetime
) -> list[Drawdown]:
    """Reject every drawdown of the line still awaiting approval; the caller holds the line's lock."""
    return await _reject_awaiting(
        session, Drawdown, Drawdown.credit_line_id == credit_line_id, reason=reason, at=at
    )


# --- credit lines ------------------------------------------------------------------------------------------


async def get_credit_line(
    session: AsyncSession, line_id: uuid.UUID, *, lock: bool = False
) -> CreditLine | None:
    return await _fresh(session, CreditLine, CreditLine.id == line_id, lock=lock)


async def list_credit_lines(
    session: AsyncSession, *, filters: ListFilters, cursor: Cursor | None, limit: int
) -> list[CreditLine]:
    key = (CreditLine.opened_at, CreditLine.id)
    return await _newest_first(session, CreditLine, key, filters=filters, cursor=cursor, limit=limit)


async def reserve(session: AsyncSession, *, line_id: uuid.UUID, amount: Decimal) -> bool:
    """Hold ``amount`` on an active line if it fits, atomically: one conditional UPDATE, so concurrent
    reservations serialize on the row and each re-checks what is left after the one before (what is held and
    outstanding, ``reserved + drawn - repaid``: repayments make room again)."""
    reserved = await session.scalar(
        update(CreditLine)
        .where(
            CreditLine.id == line_id,
            CreditLine.status == "active",
            CreditLine.credit_limit - CreditLine.reserved - CreditLine.drawn + CreditLine.repaid >= amount,
        )
        .values(reserved=CreditLine.reserved + amount)
        .returning(CreditLine.id)
    )
    return reserved is not None


async def release(session: AsyncSession, *, line_id: uuid.UUID, amount: Decimal) -> None:
    await session.execute(
        update(CreditLine).where(CreditLine.id == line_id).values(reserved=CreditLine.reserved - amount)
    )


async def settle(session: AsyncSession, *, line_id: uuid.UUID, amount: Decimal) -> None:
    """A reserved amount was paid out: it moves from ``reserved`` to ``drawn``."""
    await session.execute(
        update(CreditLine)
        .where(CreditLine.id == line_id)
        .values(reserved=CreditLine.reserved - amount, drawn=CreditLine.drawn + amount)
    )


# --- drawdowns and approvals -------------------------------------------------------------------------------


async def get_drawdown(
    session: AsyncSession, drawdown_id: uuid.UUID, *, lock: bool = False
) -> Drawdown | None:
    return await _fresh(session, Drawdown, Drawdown.id == drawdown_id, lock=lock)


async def list_drawdowns(
    session: AsyncSession, *, filters: ListFilters, cursor: Cursor | None, limit: int
) -> list[Drawdown]:
    """Newest first, paged (services/pagination.py)."""
    key = (Drawdown.created_at, Drawdown.id)
    where = _ranges(Drawdown, filters)
    return await _newest_first(
        session, Drawdown, key, filters=filters, cursor=cursor, limit=limit, where=where
    )


async def payouts_without_workflow(
    session: AsyncSession, kind: PayoutKind, *, older_than: datetime, limit: int = 100
) -> list[Any]:
    """Committed payouts of a kind whose workflow is not known to run, requested before `older_than`."""
    model = PAYOUT_MODELS[kind]
    stmt = (
        select(model)
        .where(model.workflow_started.is_(False), model.created_at < older_than)
        .order_by(model.created_at)
        .limit(limit)
    )
    return list(await session.scalars(stmt))


async def payouts_approved_unpaid(
    session: AsyncSession, kind: PayoutKind, *, older_than: datetime, limit: int = 100
) -> list[Any]:
    """Payouts of a kind approved before `older_than` and not paid (nor refused) since."""
    model = PAYOUT_MODELS[kind]
    stmt = (
        select(model)
        .where(model.status == "approved", model.decided_at < older_than)
        .order_by(model.decided_at)
        .limit(limit)
    )
    return list(await session.scalars(stmt))


async def mark_started(session: AsyncSession, kind: PayoutKind, payout_id: uuid.UUID) -> None:
    model = PAYOUT_MODELS[kind]
    await session.execute(update(model).where(model.id == payout_id).values(workflow_started=True))


async def get_payout(
    session: AsyncSession, kind: PayoutKind, payout_id: uuid.UUID, *, lock: bool = False
) -> Any:
    """The drawdown, bridge loan or listing reward with this id (``Any``: the kind decides the class)."""
    model = PAYOUT_MODELS[kind]
    return await _fresh(session, model, model.id == payout_id, lock=lock)


async def told(session: AsyncSession, event_type: str, payout_id: uuid.UUID) -> bool:
    """Whether an event of ``event_type`` about the payout is in the outbox (committed, or written in this
    transaction): what makes a reminder that is sent once per payout idempotent."""
    stmt = select(
        select(OutboxEvent.id)
        .where(OutboxEvent.aggregate_id == payout_id, OutboxEvent.type == event_type)
        .exists()
    )
    return bool(await session.scalar(stmt))


async def approvals(session: AsyncSession, kind: PayoutKind, payout_id: uuid.UUID) -> list[PayoutApproval]:
    return (await approvals_of(session, kind, [payout_id])).get(payout_id, [])


async def approvals_of(
    session: AsyncSession, kind: PayoutKind, payout_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[PayoutApproval]]:
    """The decisions on each of these payouts, oldest first."""
    column = getattr(PayoutApproval, payout_column(kind))
    rows = await session.scalars(
        select(PayoutApproval)
        .where(column.in_(payout_ids))
        .order_by(PayoutApproval.created_at, PayoutApproval.id)
    )
    found: dict[uuid.UUID, list[PayoutApproval]] = {}
    for approval in rows:
        found.setdefault(getattr(approval, payout_column(kind)), []).append(approval)
    return found


def add(session: AsyncSession, row: Any) -> None:
    session.add(row)


# --- the finance inbox -------------------------------------------------------------------------------------

# The inbox's segments: the payouts awaiting approval, then every other.
AWAITING_SEGMENT, DECIDED_SEGMENT = 0, 1
INBOX_COLUMNS = (
    "id",
    "uscc",
    "program",
    "tier",
    "amount",
    "status",
    "requested_by",
    "required_approvals",
    "approval_deadline",
    "created_at",
)
# The decisions on an inbox row, each an array in the order they were made (NULL: none yet).
_DECISION_ARRAYS = (
    (PayoutApproval.approver, "approvers"),
    (PayoutApproval.decision, "decisions"),
    (PayoutApproval.reason, "reasons"),
    (PayoutApproval.created_at, "decided_at"),
)


# The payouts' version as one statement for a raw asyncpg connection (services/credit/inbox.py).
INBOX_VERSION_SQL = "SELECT version FROM payout_inbox_version WHERE id = 1"


async def inbox_version(session: AsyncSession) -> int:
    """``payout_inbox_version``'s one row (its absence is an error, never a version)."""
    version: int = (
        await session.execute(select(PayoutInboxVersion.version).where(PayoutInboxVersion.id == 1))
    ).scalar_one()
    return version


async def payout_inbox(
    session: AsyncSession,
    *,
    kinds: Sequence[PayoutKind],
    filters: ListFilters,
    after: SegmentCursor | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """A page of the payouts of ``kinds`` matching ``filters`` (``status``: a payout status, or None), after
    ``after``, in the inbox's order: those awaiting approval, then every other, each segment oldest first by
    (created_at, id). Rows of ``kind``, ``segment``, ``INBOX_COLUMNS`` and the decisions so far (arrays of
    ``approvers``, ``decisions``, ``reasons``, ``decided_at``, oldest first; NULL when none); ``limit`` + 1 of
    them, the extra one telling that another page follows (services/pagination.py).

    Each kind's table and segment is one branch, paged along its own index (the awaiting segment's is
    partial: it holds only those rows) to at most ``limit`` + 1 rows, so the page costs the same however
    many payouts were decided before; the branches are then merged in the inbox's order."""
    stmt = _inbox_query(tuple(kinds), tuple(filters), after, limit)
    return [] if stmt is None else (await session.execute(stmt)).all()


@functools.lru_cache(maxsize=64)
def _inbox_query(
    kinds: tuple[PayoutKind, ...],
    filtered_by: tuple[tuple[str, Any], ...],
    after: SegmentCursor | None,
    limit: int,
) -> Select[Any] | None:
    """``payout_inbox``'s statement (None: nothing to read), built once per page asked for, the 64 last kept:
    checkers poll the same pages, and building the union costs the API more CPU (about 2.6 ms) than having
    it run (about 1 ms). A statement holds no state of its own; each execution binds the values it holds."""
    filters = ListFilters(**dict(filtered_by))
    segments = [AWAITING_SEGMENT, DECIDED_SEGMENT]
    if filters.status is not None:
        segments = [AWAITING_SEGMENT if filters.status == AWAITING else DECIDED_SEGMENT]
    if after is not None:
        segments = [segment for segment in segments if segment >= after[0]]
    branches = []
    for kind in kinds:
        model = PAYOUT_MODELS[kind]
        awaiting = model.status == AWAITING
        for segment in segments:
            stmt = select(
                literal(kind, String).label("kind"),
                literal(segment, Integer).label("segment"),
                *(getattr(model, column) for column in INBOX_COLUMNS),
            ).where(awaiting if segment == AWAITING_SEGMENT else not_(awaiting), *_ranges(model, filters))
            cursor = after[1] if after is not None and after[0] == segment else None
            branches.append(
                paginate(
                    _matching(stmt, model, filters.model_copy(update={"kind": None})),
                    key=(model.created_at, model.id),
                    cursor=cursor,
                    limit=limit,
                    newest_first=False,
                )
            )
    if not branches:
        return None
    merged = union_all(*branches).subquery("inbox")
    order = (merged.c.segment, merged.c.created_at, merged.c.id)
    page = select(merged).order_by(*order).limit(limit + 1).subquery("page")
    # The decisions on each payout of the page, oldest first, as arrays in the same query: one round trip.
    decided = (
        select(
            *(
                func.array_agg(
                    aggregate_order_by(column, PayoutApproval.created_at, PayoutApproval.id)
                ).label(label)
                for column, label in _DECISION_ARRAYS
            )
        )
        .where(or_(*(getattr(PayoutApproval, payout_column(kind)) == page.c.id for kind in kinds)))
        .lateral("decided")
    )
    return select(page, decided).join(decided, true()).order_by(page.c.segment, page.c.created_at, page.c.id)


# --- disbursements -----------------------------------------------------------------------------------------


async def get_disbursement(
    session: AsyncSession, kind: PayoutKind, payout_id: uuid.UUID, *, lock: bool = False
) -> Disbursement | None:
    column = getattr(Disbursement, payout_column(kind))
    return await _fresh(session, Disbursement, column == payout_id, lock=lock)


async def disbursements_of(
    session: AsyncSession, kind: PayoutKind, payout_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Disbursement]:
    column = getattr(Disbursement, payout_column(kind))
    rows = await session.scalars(select(Disbursement).where(column.in_(payout_ids)))
    return {row.payout_id: row for row in rows}


def _day_start(day: Any) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _ranges(model: type[Disbursement] | type[Payout], filters: ListFilters) -> list[ColumnElement[bool]]:
    """The rows created from ``date_from`` to ``date_to`` (UTC days, both included) and of ``amount_min`` to
    ``amount_max`` (None: no bound)."""
    where = []
    if filters.date_from is not None:
        where.append(model.created_at >= _day_start(filters.date_from))
    if filters.date_to is not None:
        where.append(model.created_at < _day_start(filters.date_to) + timedelta(days=1))
    if filters.amount_min is not None:
        where.append(model.amount >= filters.amount_min)
    if filters.amount_max is not None:
        where.append(model.amount <= filters.amount_max)
    return where


def _filtered(stmt: _S, filters: ListFilters) -> _S:
    return _matching(stmt.where(*_ranges(Disbursement, filters)), Disbursement, filters)


async def list_disbursements(
    session: AsyncSession,
    *,
    filters: ListFilters,
    cursor: Cursor | None,
    limit: int,
) -> list[Disbursement]:
    """Newest first, paged (services/pagination.py)."""
    stmt = paginate(
        _filtered(select(Disbursement), filters),
        key=(Disbursement.created_at, Disbursement.id),
        cursor=cursor,
        limit=limit,
        newest_first=True,
    )
    return list(await session.scalars(stmt))


async def disbursement_totals(
    session: AsyncSession, *, filters: ListFilters
) -> Sequence[tuple[str, int, Decimal]]:
    stmt = _filtered(
        select(Disbursement.status, func.count(), func.coalesce(func.sum(Disbursement.amount), ZERO)),
        filters,
    ).group_by(Disbursement.status)
    rows = await session.execute(stmt)
    return [(status, count, amount) for status, count, amount in rows]


async def paid_per_week(
    session: AsyncSession, *, filters: ListFilters, since: datetime
) -> list[tuple[date, int, Decimal]]:
    """The disbursements matching ``filters`` paid out (status ``paid``), created since ``since``, per week:
    (Monday of the week in China Standard Time, count, amount), oldest week first, weeks without any left
    out. Read along ``ix_disbursements_status_created_at`` (status, then a range of created_at)."""
    local = func.timezone(literal_column("'Asia/Shanghai'"), Disbursement.created_at)
    week = func.date_trunc("week", local).label("week")
    stmt = (
        _filtered(
            select(week, func.count(), func.coalesce(func.sum(Disbursement.amount), ZERO)),
            filters.model_copy(update={"status": "paid"}),
        )
        .where(Disbursement.created_at >= since)
        .group_by(literal_column("week"))
        .order_by(literal_column("week"))
    )
    rows = await session.execute(stmt)
    return [(monday.date(), count, amount) for monday, count, amount in rows]


async def stream_disbursements(session: AsyncSession, *, filters: ListFilters) -> AsyncIterator[Disbursement]:
    stmt = _filtered(select(Disbursement), filters).order_by(Disbursement.created_at, Disbursement.id)
    result = await session.stream_scalars(stmt.execution_options(yield_per=500))
    async for row in result:
        yield row


# --- bridge-loan pools and listing rewards ------------------------------------------------------------


async def active_benefits(session: AsyncSession, *, uscc: str, kind: str) -> list[Benefit]:
    return list(
        await session.scalars(
            select(Benefit)
            .where(Benefit.uscc == uscc, Benefit.kind == kind, Benefit.status == "active")
            .order_by(Benefit.granted_at, Benefit.id)
        )
    )


async def pools(session: AsyncSession, programs: Sequence[str]) -> dict[str, FundPool]:
    rows = await session.scalars(
        select(FundPool).where(FundPool.program.in_(programs)).execution_options(populate_existing=True)
    )
    return {pool.program: pool for pool in rows}


async def pool_usage(session: AsyncSession, programs: Sequence[str]) -> dict[str, tuple[Decimal, Decimal]]:
    """Per fund: (reserved by loans awaiting approval or payment, lent out and not repaid yet - the loans'
    outstanding amounts, what their parts repaid so far leave)."""
    waiting = BridgeLoan.status.in_(("pending_approval", "approved"))
    rows = await session.execute(
        select(
            BridgeLoan.program,
            func.coalesce(func.sum(case((waiting, BridgeLoan.amount), else_=ZERO)), ZERO),
            func.coalesce(
                func.sum(
                    case(
                        (BridgeLoan.status == "disbursed", BridgeLoan.amount - BridgeLoan.repaid), else_=ZERO
                    )
                ),
                ZERO,
            ),
        )
        .where(BridgeLoan.program.in_(programs))
        .group_by(BridgeLoan.program)
    )
    return {program: (reserved, lent) for program, reserved, lent in rows}


async def ensure_pool(session: AsyncSession, *, program: str, capacity: Decimal) -> None:
    await session.execute(
        insert(FundPool)
        .values(program=program, capacity=capacity, committed=ZERO)
        .on_conflict_do_nothing(index_elements=["program"])
    )


async def commit_to_pool(session: AsyncSession, *, program: str, amount: Decimal) -> bool:
    """Commit ``amount`` of the pool if it fits, atomically (one conditional UPDATE, like ``reserve``)."""
    committed = await session.scalar(
        update(FundPool)
        .where(FundPool.program == program, FundPool.capacity - FundPool.committed >= amount)
        .values(committed=FundPool.committed + amount)
        .returning(FundPool.program)
    )
    return committed is not None


async def release_from_pool(session: AsyncSession, *, program: str, amount: Decimal) -> None:
    await session.execute(
        update(FundPool).where(FundPool.program == program).values(committed=FundPool.committed - amount)
    )


async def pool_available(session: AsyncSession, program: str) -> Decimal:
    pool = await session.get(FundPool, program, populate_existing=True)
    return pool.capacity - pool.committed if pool is not None else ZERO


async def release_part_from_pool(session: AsyncSession, *, program: str, amount: Decimal) -> bool:
    """Release ``amount`` of the pool's committed amount (a bridge loan repaid in part) if that much is
    committed: one conditional UPDATE, never below zero. False when it is not (nothing changed)."""
    released = await session.scalar(
        update(FundPool)
        .where(FundPool.program == program, FundPool.committed >= amount)
        .values(committed=FundPool.committed - amount)
        .returning(FundPool.program)
    )
    return released is not None


async def lock_pool(session: AsyncSession, program: str) -> FundPool | None:
    """The pool, locked for the rest of the transaction (a capacity change; bridge loans' conditional
    UPDATEs wait for it and then re-check what is left)."""
    return await _fresh(session, FundPool, FundPool.program == program, lock=True)


async def change_capacity(session: AsyncSession, *, program: str, capacity: Decimal) -> bool:
    """Set the pool's capacity if it stays at or above what is committed (one conditional UPDATE)."""
    changed = await session.scalar(
        update(FundPool)
        .where(FundPool.program == program, FundPool.committed <= capacity)
        .values(capacity=capacity)
        .returning(FundPool.program)
    )
    return changed is not None


async def capacity_changes(
    session: AsyncSession, *, program: str, cursor: Cursor | None, limit: int
) -> list[FundCapacityChange]:
    """A fund's capacity changes, newest first, paged (services/pagination.py)."""
    key = (FundCapacityChange.created_at, FundCapacityChange.id)
    return await _newest_first(
        session,
        FundCapacityChange,
        key,
        filters=ListFilters(),
        cursor=cursor,
        limit=limit,
        where=[FundCapacityChange.program == program],
    )


async def has_entry(session: AsyncSession, key: str) -> bool:
    """Whether a ledger entry was posted under ``key``."""
    stmt = select(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key).exists())
    return bool(await session.scalar(stmt))


async def bridge_repayments_of(
    session: AsyncSession, loan_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[BridgeLoanRepayment]]:
    """The repayments of each of these loans, oldest first."""
    rows = await session.scalars(
        select(BridgeLoanRepayment)
        .where(BridgeLoanRepayment.bridge_loan_id.in_(loan_ids))
        .order_by(BridgeLoanRepayment.created_at, BridgeLoanRepayment.id)
    )
    found: dict[uuid.UUID, list[BridgeLoanRepayment]] = {}
    for row in rows:
        found.setdefault(row.bridge_loan_id, []).append(row)
    return found


async def reserve_reward_budget(
    session: AsyncSession, *, program: str, year: int, budget: Decimal, amount: Decimal
) -> bool:
    """Hold ``amount`` of the program's listing-reward budget for ``year`` if it fits (the budget as the
    program's policy says now), atomically: one conditional UPDATE like ``reserve`` and ``commit_to_pool``,
    so concurrent reports serialize on the year's row and each re-checks what is left."""
    await session.execute(
        insert(RewardBudget)
        .values(program=program, year=year, budget=budget, committed=ZERO)
        .on_conflict_do_nothing(index_elements=["program", "year"])
    )
    reserved = await session.scalar(
        update(RewardBudget)
        .where(
            RewardBudget.program == program,
            RewardBudget.year == year,
            RewardBudget.committed + amount <= budget,
        )
        .values(committed=RewardBudget.committed + amount, budget=budget)
        .returning(RewardBudget.program)
    )
    return reserved is not None


async def reward_budget_left(session: AsyncSession, *, program: str, year: int, budget: Decimal) -> Decimal:
    """What is left of the program's listing-reward budget for ``year`` (never below zero)."""
    committed = await session.scalar(
        select(RewardBudget.committed)
        .where(RewardBudget.program == program, RewardBudget.year == year)
        .execution_options(populate_existing=True)
    )
    return max(budget - (committed or ZERO), ZERO)


async def release_reward_budget(session: AsyncSession, *, program: str, year: int, amount: Decimal) -> None:
    """Give ``amount`` back to the year's budget (a reward rejected, expired or refused by the bank); never
    below zero (conditional)."""
    await session.execute(
        update(RewardBudget)
        .where(RewardBudget.program == program, RewardBudget.year == year, RewardBudget.committed >= amount)
        .values(committed=RewardBudget.committed - amount)
    )


async def list_bridge_loans(
    session: AsyncSession, *, filters: ListFilters, today: date, cursor: Cursor | None, limit: int
) -> list[BridgeLoan]:
    """``filters.overdue``: only the loans that are (or are not) overdue ``today``: paid out, not repaid, and
    flagged or due before today."""
    where: list[ColumnElement[bool]] = []
    if filters.overdue is not None:
        is_overdue = and_(
            BridgeLoan.status == "disbursed",
            or_(BridgeLoan.overdue_since.is_not(None), func.coalesce(BridgeLoan.due_on < today, false())),
        )
        where.append(is_overdue if filters.overdue else not_(is_overdue))
    key = (BridgeLoan.created_at, BridgeLoan.id)
    return await _newest_first(
        session,
        BridgeLoan,
        key,
        filters=filters,
        cursor=cursor,
        limit=limit,
        where=where,
    )


async def list_listing_rewards(
    session: AsyncSession, *, filters: ListFilters, cursor: Cursor | None, limit: int
) -> list[ListingReward]:
    key = (ListingReward.created_at, ListingReward.id)
    return await _newest_first(session, ListingReward, key, filters=filters, cursor=cursor, limit=limit)


async def insert_listing_reward(session: AsyncSession, **values: Any) -> ListingReward | None:
    """The reward row, or None when the enterprise was already rewarded for the board (the unique index
    decides between concurrent reports)."""
    reward_id = await session.scalar(
        insert(ListingReward)
        .values(id=uuid.uuid4(), **values)
        .on_conflict_do_nothing(index_elements=["uscc", "board"])
        .returning(ListingReward.id)
    )
    if reward_id is None:
        return None
    return await session.get(ListingReward, reward_id)


async def reject_pending(
    session: AsyncSession,
    model: type[BridgeLoan] | type[ListingReward],
    *,
    recognition_id: uuid.UUID,
    reason: str,
    at: datetime,
) -> list[Any]:
    """Reject the recognition's bridge loans (or listing rewards) still awaiting approval, locking their
    rows; returns them (the caller releases what they held). A bridge loan a pool membership qualified has
    no recognition: only a revocation for fraud rejects it (``reject_pending_pool_loans``)."""
    return await _reject_awaiting(
        session, model, model.recognition_id == recognition_id, reason=reason, at=at
    )


async def reject_pending_pool_loans(
    session: AsyncSession, *, uscc: str, reason: str, at: datetime
) -> list[BridgeLoan]:
    """Reject the enterprise's bridge loans a pool membership qualified that still await approval, locking
    their rows; returns them (the caller releases what they held)."""
    by_pool = (BridgeLoan.uscc == uscc, BridgeLoan.qualified_by == "pool")
    return await _reject_awaiting(session, BridgeLoan, *by_pool, reason=reason, at=at)


# --- the worker's gauges (workflows/gauges.py) -------------------------------------------------------------


async def count_awaiting_approval(session: AsyncSession) -> dict[str, int]:
    """Payouts waiting for finance's decisions, by kind (each table's ix_<table>_awaiting)."""
    counted = union_all(
        *(
            select(literal(kind).label("kind"), func.count().label("n")).where(model.status == AWAITING)
            for kind, model in PAYOUT_MODELS.items()
        )
    ).subquery()
    rows = await session.execute(select(counted.c.kind, counted.c.n))
    return {kind: int(n) for kind, n in rows}


async def paid_by_kind(session: AsyncSession) -> dict[str, Decimal]:
    """Everything the bank has paid, by payout kind. A sum over the paid disbursements (one row per payout
    ever paid): a few ms for tens of thousands; the worker's gauges ask every 15 s."""
    rows = await session.execute(
        select(Disbursement.kind, func.sum(Disbursement.amount))
        .where(Disbursement.status == "paid")
        .group_by(Disbursement.kind)
    )
    return {row[0]: row[1] for row in rows}


async def count_ledger_entries(session: AsyncSession) -> int:
    """Ledger entries posted (an index-only scan of the primary key)."""
    return int(await session.scalar(select(func.count()).select_from(LedgerEntry)) or 0)


# --- drawdown repayments (services/credit/repayments.py) ---------------------------------------------------


async def restore(session: AsyncSession, *, line_id: uuid.UUID, amount: Decimal) -> bool:
    """A repayment of ``amount`` on the line, atomically: one conditional UPDATE (never more than is
    outstanding), which also takes the line's row lock first - the order every writer of a line uses."""
    restored = await session.scalar(
        update(CreditLine)
        .where(CreditLine.id == line_id, CreditLine.drawn - CreditLine.repaid >= amount)
        .values(repaid=CreditLine.repaid + amount)
        .returning(CreditLine.id)
    )
    return restored is not None


async def repay_drawdown(
    session: AsyncSession, *, drawdown_id: uuid.UUID, amount: Decimal
) -> Drawdown | None:
    """``amount`` repaid on a drawdown paid out, atomically, if it is no more than what is outstanding: one
    conditional UPDATE, which marks it ``repaid`` when nothing is left. None when it is not paid out (or
    repaid already) or the amount is more than outstanding."""
    row: Drawdown | None = await session.scalar(
        update(Drawdown)
        .where(
            Drawdown.id == drawdown_id,
            Drawdown.status == "disbursed",
            Drawdown.amount - Drawdown.repaid >= amount,
        )
        .values(
            repaid=Drawdown.repaid + amount,
            status=case((Drawdown.amount - Drawdown.repaid == amount, "repaid"), else_=Drawdown.status),
        )
        .returning(Drawdown)
        # The row it returns refreshes the session's drawdown (populate_existing): matching the WHERE against
        # the session's objects as well (synchronize_session) would only do it twice.
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return row


async def list_repayments(
    session: AsyncSession, *, drawdown_id: uuid.UUID, cursor: Cursor | None, limit: int
) -> list[DrawdownRepayment]:
    """A drawdown's repayments, newest first, paged (services/pagination.py)."""
    stmt = select(DrawdownRepayment).where(DrawdownRepayment.drawdown_id == drawdown_id)
    key = (DrawdownRepayment.created_at, DrawdownRepayment.id)
    return list(await session.scalars(paginate(stmt, key=key, cursor=cursor, limit=limit, newest_first=True)))


async def repayment_entries(
    session: AsyncSession, drawdown_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The ledger entries of each drawdown's repayments, oldest first."""
    rows = await session.execute(
        select(DrawdownRepayment.drawdown_id, DrawdownRepayment.ledger_entry_id)
        .where(DrawdownRepayment.drawdown_id.in_(drawdown_ids))
        .order_by(DrawdownRepayment.created_at, DrawdownRepayment.id)
    )
    found: dict[uuid.UUID, list[uuid.UUID]] = {}
    for drawdown_id, entry_id in rows:
        found.setdefault(drawdown_id, []).append(entry_id)
    return found


def _overdue_at(at: datetime) -> ColumnElement[bool]:
    """Drawdowns overdue at ``at``: paid out, not repaid in full, and flagged by the sweep or past due."""
    return and_(
        Drawdown.status == "disbursed",
        or_(Drawdown.overdue_since.is_not(None), func.coalesce(Drawdown.due_at <= at, false())),
    )


async def overdue_amounts(
    session: AsyncSession, line_ids: Sequence[uuid.UUID], *, at: datetime
) -> dict[uuid.UUID, Decimal]:
    """Per credit line, what is outstanding on its drawdowns overdue at ``at`` (lines with none left out)."""
    if not line_ids:
        return {}
    rows = await session.execute(
        select(Drawdown.credit_line_id, func.sum(Drawdown.amount - Drawdown.repaid))
        .where(Drawdown.credit_line_id.in_(line_ids), _overdue_at(at))
        .group_by(Drawdown.credit_line_id)
    )
    return dict(rows.all())


async def flag_overdue(session: AsyncSession, *, at: datetime, limit: int = 500) -> list[Drawdown]:
    """Flag up to ``limit`` drawdowns that fell due by ``at`` and are not flagged yet; returns them. Rows
    another transaction holds are skipped (a repayment in flight, another worker's sweep): the next sweep
    sees them again."""
    due = (
        select(Drawdown.id)
        .where(Drawdown.status == "disbursed", Drawdown.due_at <= at, Drawdown.overdue_since.is_(None))
        .order_by(Drawdown.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return await _updated(session, Drawdown, Drawdown.id.in_(due.scalar_subquery()), overdue_since=at)


async def drawdowns_repaid(
    session: AsyncSession, drawdown_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Decimal]:
    """What was repaid of each of these drawdowns (for the disbursement list)."""
    if not drawdown_ids:
        return {}
    rows = await session.execute(select(Drawdown.id, Drawdown.repaid).where(Drawdown.id.in_(drawdown_ids)))
    return dict(rows.all())


async def stream_disbursements_repaid(
    session: AsyncSession, *, filters: ListFilters
) -> AsyncIterator[tuple[Disbursement, Decimal | None]]:
    """``stream_disbursements`` with what was repaid of each (a drawdown's; None for the other kinds)."""
    stmt = (
        _filtered(select(Disbursement, Drawdown.repaid), filters)
        .join(Drawdown, Drawdown.id == Disbursement.drawdown_id, isouter=True)
        .order_by(Disbursement.created_at, Disbursement.id)
    )
    result = await session.stream(stmt.execution_options(yield_per=500))
    async for row, repaid in result:
        yield row, repaid
