"""Bridge-loan funds and listing rewards: requested by enterprises, approved by finance and paid through the
bank as payouts (``payouts``), like drawdowns.

An enterprise borrows from a program's fund when an active recognition of it carries the fund, or when it is
in the program's cultivation pool and the fund is open to the pool (``bridge_pool.open_to_pool_members``).
A bridge loan reserves its amount in the program's fund at once - one conditional UPDATE, so concurrent
requests never commit the fund beyond its capacity - and holds it until finance records its repayment, in one
part or several, each releasing its amount from the fund as it comes in (or until the loan is rejected,
expires or is refused by the bank). Approved, it falls due ``term_days`` working days later (China's official
calendar, ``policy.is_working_day``); its workflow flags it overdue, once, if anything is outstanding by
then. An admin raises or cuts a fund's capacity, never below what it has committed, each change booked in the
ledger with who and why. A listing reward is granted once per enterprise and board (the unique index decides
between concurrent reports) and holds its amount in the program's yearly budget (a conditional UPDATE, like
the fund's) until it is paid, or gives it back if it is rejected, expires or is refused by the bank.
Functions take the session first and never commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from services.auth import CurrentUser, Role, role_check
from services.credit import ledger, payouts, policy, repository
from services.credit.models import (
    ZERO,
    Benefit,
    BridgeLoan,
    BridgeLoanQualification,
    BridgeLoanRepayment,
    FundCapacityChange,
    ListingReward,
)
from services.credit.schemas import (
    BridgeLoanCreate,
    FundCapacityChangeCreate,
    FundCapacityChangeRead,
    FundRead,
    ListFilters,
    ListingCreate,
    PayoutRead,
    RepaymentCreate,
    format_money,
)
from services.credit.service import Listing
from services.errors import Conflict, FieldError, Forbidden, NotFound, Unprocessable
from services.pagination import Cursor, Page, decode_cursor, split_page
from services.pools.schemas import PoolMembership
from services.pools.service import memberships_of

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


@dataclass(frozen=True)
class _Qualification:
    """What lets an enterprise borrow from a program's fund: an active recognition's bridge-loan benefit, or
    a membership of the program's cultivation pool when the fund is open to it (no recognition then; the
    tier is the one the member aims at)."""

    program: str
    uscc: str
    tier: str
    recognition_id: uuid.UUID | None
    qualified_by: BridgeLoanQualification

    @classmethod
    def of_benefit(cls, benefit: Benefit) -> _Qualification:
        return cls(benefit.program, benefit.uscc, benefit.tier, benefit.recognition_id, "recognition")

    @classmethod
    def of_member(cls, uscc: str, member: PoolMembership) -> _Qualification:
        return cls(member.program, uscc, member.tier_aimed, None, "pool")

    def columns(self) -> dict[str, Any]:
        """The loan's columns that say who borrows and why they may."""
        return {
            "uscc": self.uscc,
            "tier": self.tier,
            "recognition_id": self.recognition_id,
            "qualified_by": self.qualified_by,
        }


def _open_to_pool(programs: policy.Programs, key: str) -> bool | None:
    """Whether program ``key``'s fund lends to its pool's members; None: the program has no fund."""
    found = programs.get(key)
    if found is None or found.bridge_pool is None:
        return None
    return found.bridge_pool.open_to_pool_members


class PoolBarred(Conflict):
    slug, title = "pool-barred", "Barred from the cultivation pool's benefits after a revocation for fraud"


def _barred(memberships: Sequence[PoolMembership]) -> PoolBarred:
    """The refusal of an enterprise whose only memberships that would qualify are barred: until when, and
    why (one bar per enterprise: the same reason for each)."""
    until = ", ".join(
        f"{m.program} until {m.barred_until.astimezone(UTC).isoformat(timespec='seconds')}"
        for m in memberships
        if m.barred_until is not None
    )
    return PoolBarred(
        f"Your cultivation-pool membership is barred after a revocation for fraud "
        f"({memberships[0].barred_reason}): {until}; no active recognition of yours qualifies for a bridge "
        "loan."
    )


async def _qualifying(
    session: AsyncSession, *, uscc: str, program: str | None, programs: policy.Programs, at: datetime
) -> _Qualification:
    """What qualifies the enterprise for ``program``'s fund, or when none is named, for the only program that
    qualifies. A recognition wins: its benefit qualifies before a pool membership of the same program, and
    when no program is named, the pools count only for an enterprise no recognition qualifies. A membership
    barred at ``at`` (after a revocation for fraud, ``pools.service.bar_enterprise``) qualifies for nothing:
    409 ``pool-barred``, saying until when, when it is what would have qualified. The memberships are read
    FOR SHARE, so a bar being written either waits for this request or is read by it."""
    benefits: dict[str, Benefit] = {}
    for benefit in await repository.active_benefits(session, uscc=uscc, kind="bridge_loan"):
        benefits.setdefault(benefit.program, benefit)
    memberships = await memberships_of(session, uscc, programs=programs, lock=True)
    barred = [m for m in memberships if _open_to_pool(programs, m.program) and m.barred_at(at)]
    members = {
        m.program: m for m in memberships if _open_to_pool(programs, m.program) and not m.barred_at(at)
    }
    # The pools the enterprise is in whose fund lends on recognition only: a refusal names them.
    closed = sorted(
        m.program
        for m in memberships
        if _open_to_pool(programs, m.program) is False and m.program not in benefits
    )
    if program is not None:
        if program in benefits:
            return _Qualification.of_benefit(benefits[program])
        if program in members:
            return _Qualification.of_member(uscc, members[program])
        if any(m.program == program for m in barred):
            raise _barred([m for m in barred if m.program == program])
        not_open = " (you are in its cultivation pool, but its fund is not open to the pool)"
        raise Conflict(
            "Neither an active recognition nor a cultivation-pool membership of yours qualifies for program "
            f"{program!r}'s bridge fund{not_open if program in closed else ''}."
        )
    eligible = sorted(benefits) or sorted(members)
    if not eligible and barred:
        raise _barred(barred)
    if not eligible:
        not_open = f" (the funds of {', '.join(closed)}, whose pools you are in, are not open to the pool)"
        raise Conflict(
            "Neither an active recognition nor a cultivation-pool membership of yours qualifies for a bridge "
            f"loan{not_open if closed else ''}."
        )
    if len(eligible) > 1:
        raise Unprocessable(
            f"Several programs qualify ({', '.join(eligible)}); name one in `program`.",
            errors=[FieldError(field="program", message="required when several qualify")],
        )
    [key] = eligible
    if key in benefits:
        return _Qualification.of_benefit(benefits[key])
    return _Qualification.of_member(uscc, members[key])


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
    """Reserve the amount in the fund of the program the enterprise qualifies for (``_qualifying``: by an
    active recognition, or by its membership of the program's cultivation pool when the fund is open to the
    pool; 409 when neither does - ``pool-barred`` when a membership barred after a revocation for fraud
    would have - 422 when several programs do and none is named) and write the loan: 409 beyond the fund's
    available capacity, 422 beyond the per-use cap or the fund's term. Once the request commits, its
    workflow starts: finance approves it before the program's approval deadline, which otherwise releases it.
    How it qualified changes nothing after this - the same caps, approvals, payment, repayment and ledger -
    but which revocation rejects it while pending: a recognition's the loans it qualified, a revocation for
    fraud (barring the pools) the pool's."""
    await authorize_bridge_loan(user)
    assert user.uscc is not None
    qualification = await _qualifying(
        session, uscc=user.uscc, program=data.program, programs=programs, at=payouts.now()
    )
    program = policy.program(programs, qualification.program)
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
    policy.due_on(payouts.now(), data.term_days)  # 409 now if the calendar cannot count the term
    await repository.ensure_pool(session, program=program.key, capacity=pool.capacity)
    if not await repository.commit_to_pool(session, program=program.key, amount=data.amount):
        available = await repository.pool_available(session, program.key)
        raise payouts.beyond(data.amount, "the fund's available", available)
    loan = BridgeLoan(
        id=uuid.uuid4(),
        program=program.key,
        **qualification.columns(),
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
    """Finance (or an admin; never the requester) records that the enterprise paid back ``data.amount`` of
    a loan paid out - a part or all of what is outstanding, never more (409). In the request's transaction:
    the ledger entry (debit ``bank_settlement``, credit the enterprise's bridge receivable), the repayment's
    row, the loan's ``repaid`` and the amount released from the fund's committed amount (a conditional
    UPDATE, never below zero). Repaid in full, the loan is ``repaid`` and its workflow stops watching the due
    date; until then an overdue loan stays overdue."""
    await authorize_repayment(session, user=user, loan_id=loan_id)
    rules = payouts.KINDS["bridge_loan"]
    loan: BridgeLoan = await rules.lock(session, loan_id)
    if loan.status != "disbursed":
        raise Conflict(f"The bridge loan is {loan.status}; only a loan paid out and not repaid is repaid.")
    outstanding = loan.outstanding
    if data.amount > outstanding:
        raise payouts.beyond(data.amount, "the loan's outstanding", outstanding)
    at, repayment_id = payouts.now(), uuid.uuid4()
    left = outstanding - data.amount
    entry = await payouts.post_repayment(
        session,
        key=f"bridge-loan-repayment:{loan.id}:{repayment_id}",
        memo=f"bridge loan {loan.id} repaid by {loan.uscc}: {format_money(data.amount)}, "
        f"{format_money(left)} outstanding",
        receivable=ledger.bridge_receivable(loan.uscc),
        amount=data.amount,
        reference=data.reference,
    )
    if not await repository.release_part_from_pool(session, program=loan.program, amount=data.amount):
        raise Conflict(f"The fund {loan.program!r} has less than {format_money(data.amount)} committed.")
    repository.add(
        session,
        BridgeLoanRepayment(
            id=repayment_id,
            bridge_loan_id=loan.id,
            outstanding_after=left,
            **payouts.repayment_columns(loan, data, user=user, entry=entry, at=at),
        ),
    )
    loan.repaid = loan.repaid + data.amount
    loan.repaid_by, loan.repayment_reference = user.sub, data.reference
    if left == ZERO:
        loan.status, loan.repaid_at, loan.repayment_entry_id = "repaid", at, entry.id
    await session.flush()
    if left == ZERO:
        # The workflow's check waits for this request's lock on the loan, so it reads the repayment once it
        # commits (or the loan as it was, if it never does).
        await payouts.refresh(temporal, "bridge_loan", loan.id)
    return await payouts.read(session, "bridge_loan", loan)


# --- fund administration -----------------------------------------------------------------------------------


def _fund_policy(programs: policy.Programs, key: str) -> policy.Program:
    found = programs.get(key)
    if found is None or found.bridge_pool is None:
        raise NotFound(f"There is no fund {key!r}.")
    return found


def _capacity_lines(program: str, delta: Decimal) -> list[ledger.Line]:
    """A raise debits the fund's capacity and credits its appropriation; a cut the other way round."""
    capacity, appropriation = ledger.fund_capacity(program), ledger.fund_appropriation(program)
    if delta > 0:
        return [ledger.Line.dr(capacity, delta), ledger.Line.cr(appropriation, delta)]
    return [ledger.Line.dr(appropriation, -delta), ledger.Line.cr(capacity, -delta)]


async def authorize_fund_admin(user: CurrentUser) -> None:
    """Who changes a fund's capacity: an admin."""
    user.require(Role.admin)


async def change_fund_capacity(
    session: AsyncSession,
    *,
    user: CurrentUser,
    program_key: str,
    data: FundCapacityChangeCreate,
    programs: policy.Programs,
) -> FundCapacityChangeRead:
    """An admin sets the fund's capacity (``capacity``) or moves it by ``delta``, with a reason: never below
    what the fund has committed (409), never to the capacity it has (422). The fund's row is locked for the
    change, so a concurrent bridge loan's conditional UPDATE waits and then re-checks what is left. The first
    change of a fund first books its opening capacity (the program's) in the ledger, so that the balance of
    ``fund_capacity:<program>`` is always the fund's capacity."""
    await authorize_fund_admin(user)
    program = _fund_policy(programs, program_key)
    assert program.bridge_pool is not None
    await repository.ensure_pool(session, program=program.key, capacity=program.bridge_pool.capacity)
    pool = await repository.lock_pool(session, program.key)
    assert pool is not None
    previous, committed = pool.capacity, pool.committed
    new = data.capacity if data.capacity is not None else previous + (data.delta or ZERO)
    field = "capacity" if data.capacity is not None else "delta"
    if new == previous:
        raise Unprocessable(
            f"The fund's capacity is {format_money(previous)} already.",
            errors=[FieldError(field=field, message="no change")],
        )
    if new < committed:
        raise Conflict(
            f"The fund has {format_money(committed)} committed; its capacity cannot go below that "
            f"(asked for {format_money(new)})."
        )
    opening = f"fund-capacity-opening:{program.key}"
    if previous > 0 and not await repository.has_entry(session, opening):
        await ledger.post_entry(
            session,
            key=opening,
            memo=f"fund {program.key}: opening capacity {format_money(previous)} (program policy)",
            lines=_capacity_lines(program.key, previous),
        )
    if not await repository.change_capacity(session, program=program.key, capacity=new):
        raise Conflict("The fund's committed amount changed; try again.")  # pragma: no cover - locked
    change_id, delta = uuid.uuid4(), new - previous
    entry = await ledger.post_entry(
        session,
        key=f"fund-capacity-change:{change_id}",
        memo=f"fund {program.key}: capacity {format_money(previous)} -> {format_money(new)} by {user.sub}: "
        f"{data.reason}",
        lines=_capacity_lines(program.key, delta),
    )
    change = FundCapacityChange(
        id=change_id,
        program=program.key,
        previous_capacity=previous,
        new_capacity=new,
        committed_then=committed,
        reason=data.reason,
        changed_by=user.sub,
        ledger_entry_id=entry.id,
        created_at=payouts.now(),
    )
    repository.add(session, change)
    await session.flush()
    [read] = await _change_reads(session, [change])
    return read


async def _change_reads(
    session: AsyncSession, changes: Sequence[FundCapacityChange]
) -> list[FundCapacityChangeRead]:
    entries = {e.id: e for e in await ledger.entries(session, [c.ledger_entry_id for c in changes])}
    return [
        FundCapacityChangeRead(
            id=c.id,
            program=c.program,
            previous_capacity=c.previous_capacity,
            new_capacity=c.new_capacity,
            delta=c.new_capacity - c.previous_capacity,
            committed_then=c.committed_then,
            reason=c.reason,
            changed_by=c.changed_by,
            created_at=c.created_at,
            ledger_entry=payouts.entry_read(entries[c.ledger_entry_id]),
        )
        for c in changes
    ]


async def list_capacity_changes(
    session: AsyncSession,
    *,
    user: CurrentUser,
    program_key: str,
    programs: policy.Programs,
    cursor: str | None,
    limit: int,
) -> Page[FundCapacityChangeRead]:
    """A fund's capacity changes, newest first (finance and admin)."""
    user.require(Role.finance, Role.admin)
    program = _fund_policy(programs, program_key)
    rows = await repository.capacity_changes(
        session, program=program.key, cursor=decode_cursor(cursor), limit=limit
    )
    page, next_cursor = split_page(rows, limit, lambda c: (c.created_at, c.id))
    return Page(items=await _change_reads(session, page), next_cursor=next_cursor)


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
    await _reserve_budget(session, program, reward)
    return await payouts.read(session, "listing_reward", reward)


async def _reserve_budget(session: AsyncSession, program: policy.Program, reward: ListingReward) -> None:
    """Hold the reward's amount in the program's listing-reward budget for the year it is requested in (China
    Standard Time): 409 with what is left when it does not fit (the request's transaction, the reward's row
    with it, is then rolled back). A program without a budget holds nothing."""
    budget = program.listing_reward_budget_per_year
    if budget is None:
        return
    year = policy.today(reward.created_at).year
    reserved = await repository.reserve_reward_budget(
        session, program=program.key, year=year, budget=budget, amount=reward.amount
    )
    if not reserved:
        left = await repository.reward_budget_left(session, program=program.key, year=year, budget=budget)
        raise Conflict(
            f"The listing-reward budget of program {program.key!r} for {year} has {format_money(left)} "
            f"left of {format_money(budget)}: not enough for the reward of {format_money(reward.amount)}."
        )
    reward.budget_year = year
    await session.flush()


# Enterprises see their own rewards, finance and admin all; newest first (service.Listing).
list_listing_rewards = Listing(
    repository.list_listing_rewards,
    lambda reward: (reward.created_at, reward.id),
    lambda session, rewards: payouts.reads(session, "listing_reward", rewards),
).page
