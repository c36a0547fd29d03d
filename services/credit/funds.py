"""Bridge-loan funds and listing rewards: requested by enterprises, approved by finance and paid through the
bank as payouts (``payouts``), like drawdowns.

A bridge loan reserves its amount in the program's fund at once - one conditional UPDATE, so concurrent
requests never commit the fund beyond its capacity - and holds it until finance records the repayment (or
the loan is rejected, expires or is refused by the bank). Approved, it falls due ``term_days`` working days
later; its workflow flags it overdue if it is not repaid by then. A listing reward is granted once per
enterprise and board: the unique index decides between concurrent reports. Functions take the session first
and never commit.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from services.auth import CurrentUser, Role, role_check
from services.credit import ledger, payouts, policy, repository
from services.credit.models import ZERO, Benefit, BridgeLoan
from services.credit.schemas import (
    BridgeLoanCreate,
    FundRead,
    ListFilters,
    ListingCreate,
    PayoutRead,
    RepaymentCreate,
    format_money,
)
from services.credit.service import Listing
from services.errors import Conflict, FieldError, Forbidden, NotFound, Unprocessable
from services.pagination import Cursor, Page

# --- funds -------------------------------------------------------------------------------------------------


async def list_funds(
    session: AsyncSession, *, user: CurrentUser, programs: policy.Programs
) -> Page[FundRead]:
    """Every program's bridge fund: capacity, committed (reserved + lent), available."""
    user.require(Role.finance, Role.admin)
    policies = {key: program.bridge_pool for key, program in sorted(programs.items()) if program.bridge_pool}
    pools = await repository.pools(session, list(policies))
    usage = await repository.pool_usage(session, list(policies))
    items = []
    for key, pool in policies.items():
        row = pools.get(key)
        capacity = row.capacity if row is not None else pool.capacity  # fixed when the fund is first used
        committed = row.committed if row is not None else ZERO
        reserved, lent = usage.get(key, (ZERO, ZERO))
        items.append(
            FundRead(
                program=key,
                capacity=capacity,
                committed=committed,
                available=capacity - committed,
                reserved=reserved,
                lent=lent,
                per_use_cap=pool.per_use_cap,
                term_working_days=pool.term_working_days,
            )
        )
    return Page(items=items)


# --- bridge loans ------------------------------------------------------------------------------------------


async def _qualifying(session: AsyncSession, *, uscc: str, program: str | None) -> Benefit:
    """The enterprise's active bridge-loan benefit in ``program`` (or in the only program that qualifies)."""
    benefits = await repository.active_benefits(session, uscc=uscc, kind="bridge_loan")
    eligible = sorted({b.program for b in benefits})
    if program is not None:
        if program not in eligible:
            raise Conflict(f"No active recognition of yours qualifies for program {program!r}'s bridge fund.")
    elif not eligible:
        raise Conflict("No active recognition of yours qualifies for a bridge loan.")
    elif len(eligible) > 1:
        raise Unprocessable(
            f"Several programs qualify ({', '.join(eligible)}); name one in `program`.",
            errors=[FieldError(field="program", message="required when several qualify")],
        )
    key = program or eligible[0]
    return next(b for b in benefits if b.program == key)


def _qualified_by(benefit: Benefit) -> dict[str, Any]:
    """What a bridge loan or a listing reward takes from the benefit that qualified it: the recognition, the
    enterprise and its tier."""
    return {"recognition_id": benefit.recognition_id, "uscc": benefit.uscc, "tier": benefit.tier}


# Who may ask for a bridge loan: an enterprise, for itself (its token's `uscc`).
authorize_bridge_loan = role_check(Role.enterprise)


async def request_bridge_loan(
    session: AsyncSession,
    *,
    user: CurrentUser,
    data: BridgeLoanCreate,
    programs: policy.Programs,
) -> PayoutRead:
    """Reserve the amount in the fund of the program the enterprise's recognition qualifies for (409 beyond
    the fund's available capacity; 422 beyond the per-use cap or the fund's term) and write the loan; once the
    request commits, its workflow starts: finance approves it before the program's approval deadline, which
    otherwise releases it."""
    await authorize_bridge_loan(user)
    assert user.uscc is not None
    benefit = await _qualifying(session, uscc=user.uscc, program=data.program)
    program = policy.program(programs, benefit.program)
    pool = program.bridge_pool
    if pool is None:
        raise Conflict(f"Program {program.key!r} no longer has a bridge fund.")
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
    await repository.ensure_pool(session, program=program.key, capacity=pool.capacity)
    if not await repository.commit_to_pool(session, program=program.key, amount=data.amount):
        available = await repository.pool_available(session, program.key)
        raise payouts.beyond(data.amount, "the fund's available", available)
    loan = BridgeLoan(
        id=uuid.uuid4(),
        program=program.key,
        **_qualified_by(benefit),
        term_days=data.term_days,
        purpose=data.purpose,
        **payouts.requested(program, data.amount, by=user.sub, at=payouts.now()),
    )
    return await payouts.add(session, "bridge_loan", loan)


async def _loans(
    session: AsyncSession, *, filters: ListFilters, cursor: Cursor | None, limit: int
) -> list[BridgeLoan]:
    """``overdue=true``: the loans past due and not repaid (today); ``overdue=false``: every other loan."""
    today = policy.today(payouts.now())
    return await repository.list_bridge_loans(
        session, filters=filters, today=today, cursor=cursor, limit=limit
    )


# Enterprises see their own loans, finance and admin all; newest first (service.Listing).
list_bridge_loans = Listing(
    _loans,
    lambda loan: (loan.created_at, loan.id),
    lambda session, loans: payouts.reads(session, "bridge_loan", loans),
).page


async def authorize_repayment(session: AsyncSession, *, user: CurrentUser, loan_id: uuid.UUID) -> None:
    """Who may record a repayment: finance or an admin, never the loan's requester."""
    user.require(Role.finance, Role.admin)
    loan: BridgeLoan | None = await repository.get_payout(session, "bridge_loan", loan_id)
    if loan is None:
        raise NotFound(f"There is no bridge loan {loan_id}.")
    if loan.requested_by == user.sub:
        raise Forbidden("The requester of a bridge loan never records its repayment.")


async def repay_bridge_loan(
    session: AsyncSession, *, user: CurrentUser, loan_id: uuid.UUID, data: RepaymentCreate, temporal: Client
) -> PayoutRead:
    """Finance (or an admin; never the requester) records that the enterprise repaid the whole loan into the
    fund: the fund's capacity is freed and the ledger entry of the payment is mirrored (debit
    ``bank_settlement``, credit the enterprise's bridge receivable). Then the loan's workflow stops watching
    the due date."""
    await authorize_repayment(session, user=user, loan_id=loan_id)
    rules = payouts.KINDS["bridge_loan"]
    loan: BridgeLoan = await rules.lock(session, loan_id)
    if loan.status != "disbursed":
        raise Conflict(f"The bridge loan is {loan.status}; only a loan paid out and not repaid is repaid.")
    if data.amount != loan.amount:
        raise Unprocessable(
            f"The loan is repaid in full: {format_money(loan.amount)}.",
            errors=[FieldError(field="amount", message="not the amount lent")],
        )
    at = payouts.now()
    entry = await ledger.post_entry(
        session,
        key=f"bridge-loan-repayment:{loan.id}",
        memo=f"bridge loan {loan.id} repaid by {loan.uscc}"
        + (f" (ref {data.reference})" if data.reference else ""),
        lines=[
            ledger.Line.dr(ledger.BANK_SETTLEMENT, loan.amount),
            ledger.Line.cr(ledger.bridge_receivable(loan.uscc), loan.amount),
        ],
    )
    loan.status, loan.repaid_at, loan.repaid_by = "repaid", at, user.sub
    loan.repayment_reference, loan.repayment_entry_id = data.reference, entry.id
    await rules.release(session, loan)
    await session.flush()
    # The workflow's check waits for this request's lock on the loan, so it reads the repayment once it
    # commits (or the loan as it was, if it never does).
    await payouts.refresh(temporal, "bridge_loan", loan.id)
    return await payouts.read(session, "bridge_loan", loan)


# --- listing rewards ---------------------------------------------------------------------------------------


async def authorize_listing(user: CurrentUser, uscc: str) -> None:
    """Who may report an enterprise's listing: the enterprise itself or an admin."""
    user.require(Role.enterprise, Role.admin)
    if user.role is Role.enterprise and user.uscc != uscc:
        raise NotFound(f"There is no enterprise {uscc}.")


async def report_listing(
    session: AsyncSession,
    *,
    user: CurrentUser,
    uscc: str,
    data: ListingCreate,
    programs: policy.Programs,
) -> PayoutRead:
    """Record a listing and request the board's one-time reward: once per enterprise and board, even when the
    listing is reported concurrently (the unique index decides; the others get a 409). Finance approves the
    reward before the program's approval deadline; then the bank pays it."""
    await authorize_listing(user, uscc)
    now = payouts.now()
    if data.listed_on > policy.today(now):
        raise Unprocessable(
            "A listing is reported once it has happened.",
            errors=[FieldError(field="listed_on", message="in the future")],
        )
    armed = await repository.active_benefits(session, uscc=uscc, kind="listing_reward")
    if not armed:
        raise Conflict("No active recognition of this enterprise carries a listing reward.")
    offered = [
        (benefit, programs[benefit.program])
        for benefit in armed
        if benefit.program in programs and data.board in programs[benefit.program].listing_rewards
    ]
    if not offered:
        raise Unprocessable(
            f"No listing reward is offered for board {data.board!r}.",
            errors=[FieldError(field="board", message="no reward for this board")],
        )
    benefit, program = offered[0]
    amount = program.listing_rewards[data.board]
    reward = await repository.insert_listing_reward(
        session,
        program=program.key,
        **data.model_dump(include={"board", "listed_on", "security_code"}),  # the listing as reported
        **_qualified_by(benefit),
        **payouts.requested(program, amount, by=user.sub, at=now),
    )
    if reward is None:
        raise Conflict(f"The enterprise was already rewarded for listing on {data.board!r}.")
    return await payouts.read(session, "listing_reward", reward)


# Enterprises see their own rewards, finance and admin all; newest first (service.Listing).
list_listing_rewards = Listing(
    repository.list_listing_rewards,
    lambda reward: (reward.created_at, reward.id),
    lambda session, rewards: payouts.reads(session, "listing_reward", rewards),
).page
