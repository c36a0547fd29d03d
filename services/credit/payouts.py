"""Payouts: money a program pays out through the partner bank once finance approves it - a credit-line
drawdown, a bridge loan from a program's fund, a listing reward. One set of rules serves every kind:

1. Requested: whatever the payout draws on is held at once (a drawdown's credit line, a bridge loan's fund,
   a listing reward its program's yearly budget), the payout is ``pending_approval`` and its
   DisbursementWorkflow starts.
2. Maker-checker: finance officers decide, never the requester, each once; above the program's threshold
   two distinct approvers are needed. A rejection, a freeze of the benefit or the approval deadline ends it
   and frees the hold.
3. Paid: the approval opens a disbursement under a bank key derived from the payout's id; the workflow pays
   it. The bank's confirmation posts the ledger entry (debit what the payout is owed as, credit
   ``bank_settlement``) and marks the payout ``disbursed``; a definite refusal marks it ``failed`` and frees
   the hold.

What differs by kind - what is held, what is debited, what happens on approval and payment - is one small
class per kind below. Functions take the session first and never commit; the activity-side ones are
idempotent, so a retried attempt changes nothing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar, cast

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from services import temporal as temporal_boundary
from services.auth import CurrentUser, Role
from services.contracts import (
    DISBURSEMENT_WORKFLOW,
    ApprovalRequest,
    DisbursementInput,
    PaymentFailure,
    PaymentOrder,
    PaymentReceipt,
    PayoutCheck,
    PayoutKind,
    PayoutRef,
    PayoutReminder,
    PayoutReminderTime,
    PayoutState,
    PayoutStatus,
    disbursement_workflow_id,
    search_attributes,
)
from services.credit import announce, ledger, policy, repository
from services.credit.models import (
    ZERO,
    BridgeLoan,
    Disbursement,
    Drawdown,
    ListingReward,
    Payout,
    PayoutApproval,
    column_values,
    payout_column,
)
from services.credit.schemas import (
    ApprovalCreate,
    ApprovalRead,
    BridgeLoanRead,
    DisbursementRead,
    DrawdownRead,
    DrawdownRepaymentCreate,
    LedgerEntryRead,
    LedgerLineRead,
    ListingRewardRead,
    PayoutRead,
    RepaymentCreate,
    format_money,
)
from services.errors import Conflict, Forbidden, NotFound
from services.events import BridgeLoanDueSoon
from services.vocabulary import whose

log = structlog.get_logger("giantflow.credit")

P = TypeVar("P", Drawdown, BridgeLoan, ListingReward)


def now() -> datetime:
    return datetime.now(UTC)


# --- what differs by kind ----------------------------------------------------------------------------------


class Kind(Generic[P]):
    """The rules of one kind of payout. Subclasses hold what differs; the defaults hold nothing."""

    name: ClassVar[PayoutKind]
    noun: ClassVar[str]
    read_model: ClassVar[type[PayoutRead]]

    async def lock(self, session: AsyncSession, payout_id: uuid.UUID) -> P:
        """The payout, locked (with what it holds, in the order every writer of this kind uses)."""
        row: P | None = await repository.get_payout(session, self.name, payout_id, lock=True)
        if row is None:
            raise NotFound(f"There is no {self.noun} {payout_id}.")
        return row

    async def release(self, session: AsyncSession, row: P) -> None:
        """Free what the payout holds: it was rejected, expired, refused by the bank (or repaid)."""

    def approved(self, row: P, at: datetime) -> None:
        """The last approval came in at ``at``."""

    async def paid(self, session: AsyncSession, row: P) -> None:
        """The bank paid the payout out."""

    def debit_account(self, row: P) -> str:
        raise NotImplementedError

    def bank_key(self, row: P) -> str:
        """The bank's Idempotency-Key: derived from the payout's id, so it is paid once whatever happens."""
        return f"{self.name.replace('_', '-')}-{row.id}"

    def ledger_key(self, row: P) -> str:
        return f"disbursement:{self.bank_key(row)}"

    def due_at(self, row: P) -> datetime | None:
        return None

    def remind_at(self, row: P, programs: policy.Programs) -> datetime | None:
        """When the payout's workflow reminds the enterprise and finance that it falls due (a bridge loan)."""
        return None

    def overdue(self, row: P, at: datetime) -> bool:
        return False

    def flag_overdue(self, row: P, at: datetime) -> bool:
        """The payout fell due at ``at`` (only a bridge loan ever does); whether it was flagged now."""
        return False

    def more_entries(self, row: P) -> Sequence[uuid.UUID | None]:
        """The payout's ledger entries besides its payment's."""
        return ()

    async def more_entries_of(
        self, session: AsyncSession, rows: Sequence[P]
    ) -> dict[uuid.UUID, list[uuid.UUID]]:
        """``more_entries`` of each of ``rows``, with what only the database knows (one query at most)."""
        return {row.id: [e for e in self.more_entries(row) if e is not None] for row in rows}

    def read_fields(self, row: P, at: datetime) -> dict[str, Any]:
        """What the kind's read model shows at ``at`` besides the row's columns and ``details``."""
        return {}


class Drawdowns(Kind[Drawdown]):
    name, noun, read_model = "drawdown", "drawdown", DrawdownRead

    async def lock(self, session: AsyncSession, payout_id: uuid.UUID) -> Drawdown:
        """The drawdown and its line, locked line first (the order every writer of a line uses, the freeze
        of the benefits included)."""
        found = await repository.get_drawdown(session, payout_id)
        if found is None:
            raise NotFound(f"There is no drawdown {payout_id}.")
        await repository.get_credit_line(session, found.credit_line_id, lock=True)
        drawdown = await repository.get_drawdown(session, payout_id, lock=True)
        assert drawdown is not None
        return drawdown

    async def release(self, session: AsyncSession, row: Drawdown) -> None:
        await repository.release(session, line_id=row.credit_line_id, amount=row.amount)

    async def paid(self, session: AsyncSession, row: Drawdown) -> None:
        """Drawn now; it falls due its term after this moment (a drawdown from before terms has none)."""
        await repository.settle(session, line_id=row.credit_line_id, amount=row.amount)
        if row.term is not None:
            row.due_at = policy.drawdown_due_at(row.term, now())

    def debit_account(self, row: Drawdown) -> str:
        return ledger.credit_receivable(row.uscc)

    async def more_entries_of(
        self, session: AsyncSession, rows: Sequence[Drawdown]
    ) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Each repayment's entry, oldest first (services/credit/repayments.py)."""
        found = await repository.repayment_entries(session, [row.id for row in rows])
        return {row.id: found.get(row.id, []) for row in rows}

    def overdue(self, row: Drawdown, at: datetime) -> bool:
        """Paid out, not repaid in full, and past due: flagged by the worker's sweep, or by the clock on
        read. (Not in ``state``: the drawdown's workflow ends once it is paid; no timer watches it.)"""
        return row.status == "disbursed" and (
            row.overdue_since is not None or (row.due_at is not None and at >= row.due_at)
        )

    def read_fields(self, row: Drawdown, at: datetime) -> dict[str, Any]:
        outstanding = row.outstanding if row.status == "disbursed" else ZERO
        return {"overdue": self.overdue(row, at), "outstanding": outstanding}

    def ledger_key(self, row: Drawdown) -> str:
        return f"disbursement:{row.id}"  # the key drawdowns were paid under before payouts had kinds


class BridgeLoans(Kind[BridgeLoan]):
    """A bridge loan holds its amount in the program's fund until it is repaid (or never paid out). Its lock
    is the loan's row; the fund's row is then changed by one conditional UPDATE, never locked first."""

    name, noun, read_model = "bridge_loan", "bridge loan", BridgeLoanRead

    async def release(self, session: AsyncSession, row: BridgeLoan) -> None:
        """What it still holds: all of it, unless parts were repaid (each released as it came in)."""
        await repository.release_from_pool(session, program=row.program, amount=row.outstanding)

    def approved(self, row: BridgeLoan, at: datetime) -> None:
        row.due_on = policy.due_on(at, row.term_days)

    def debit_account(self, row: BridgeLoan) -> str:
        return ledger.bridge_receivable(row.uscc)

    def due_at(self, row: BridgeLoan) -> datetime | None:
        return policy.due_at(row.due_on) if row.due_on is not None else None

    def remind_at(self, row: BridgeLoan, programs: policy.Programs) -> datetime | None:
        """The program's ``reminder_working_days`` before the day it is due (none if its program no longer
        has a bridge fund)."""
        found = programs.get(row.program)
        pool = found.bridge_pool if found is not None else None
        if row.due_on is None or pool is None:
            return None
        return policy.reminder_at(row.due_on, pool.reminder_working_days)

    def overdue(self, row: BridgeLoan, at: datetime) -> bool:
        """Paid out, not repaid, and past due: flagged by the workflow's timer, or by the clock on read."""
        due = self.due_at(row)
        return row.status == "disbursed" and (
            row.overdue_since is not None or (due is not None and at >= due)
        )

    def flag_overdue(self, row: BridgeLoan, at: datetime) -> bool:
        if row.status == "disbursed" and row.overdue_since is None:
            row.overdue_since = at
            return True
        return False

    def more_entries(self, row: BridgeLoan) -> Sequence[uuid.UUID | None]:
        return [row.repayment_entry_id]

    async def more_entries_of(
        self, session: AsyncSession, rows: Sequence[BridgeLoan]
    ) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Each repayment's entry, oldest first (a loan repaid whole before repayments came in parts has
        only ``repayment_entry_id``)."""
        parts = await repository.bridge_repayments_of(session, [row.id for row in rows])
        found = {}
        for row in rows:
            entries = [part.ledger_entry_id for part in parts.get(row.id, [])]
            if row.repayment_entry_id is not None and row.repayment_entry_id not in entries:
                entries.append(row.repayment_entry_id)
            found[row.id] = entries
        return found

    def read_fields(self, row: BridgeLoan, at: datetime) -> dict[str, Any]:
        return {"overdue": self.overdue(row, at), "outstanding": row.outstanding}


class ListingRewards(Kind[ListingReward]):
    name, noun, read_model = "listing_reward", "listing reward", ListingRewardRead

    async def release(self, session: AsyncSession, row: ListingReward) -> None:
        """Give its amount back to the year's budget it was reserved in (if any)."""
        if row.budget_year is not None:
            await repository.release_reward_budget(
                session, program=row.program, year=row.budget_year, amount=row.amount
            )

    def debit_account(self, row: ListingReward) -> str:
        return ledger.program_fund(row.program)

    def read_fields(self, row: ListingReward, at: datetime) -> dict[str, Any]:
        return {"reported_by": row.requested_by}


KINDS: dict[PayoutKind, Kind[Any]] = {
    kind.name: kind for kind in (Drawdowns(), BridgeLoans(), ListingRewards())
}


# --- reads -------------------------------------------------------------------------------------------------


async def reads(session: AsyncSession, kind: PayoutKind, rows: Sequence[Payout]) -> list[PayoutRead]:
    """The read models (the kind's ``read_model``) of ``rows`` of a kind: their columns, their ``details`` and
    the kind's ``read_fields``."""
    rules, at = KINDS[kind], now()
    found = await details(session, kind, rows)
    return [
        rules.read_model.model_validate({**column_values(row), **more, **rules.read_fields(row, at)})
        for row, more in zip(rows, found, strict=True)
    ]


async def read(session: AsyncSession, kind: PayoutKind, row: Payout) -> PayoutRead:
    [one] = await reads(session, kind, [row])
    return one


async def details(session: AsyncSession, kind: PayoutKind, rows: Sequence[Payout]) -> list[dict[str, Any]]:
    """What every payout read shows, for each of ``rows`` (in four queries however many): its approvals, its
    disbursement, and its ledger entries - the payment's, and the kind's ``more_entries`` of the row."""
    more_entries = await KINDS[kind].more_entries_of(session, rows)
    ids = [row.id for row in rows]
    approvals = await repository.approvals_of(session, kind, ids)
    disbursements = await repository.disbursements_of(session, kind, ids)
    entry_ids = {
        row.id: [
            e
            for e in (getattr(disbursements.get(row.id), "ledger_entry_id", None), *more_entries[row.id])
            if e is not None
        ]
        for row in rows
    }
    entries = {
        e.id: e for e in await ledger.entries(session, [e for found in entry_ids.values() for e in found])
    }
    return [
        {
            "approvals": [ApprovalRead.model_validate(a) for a in approvals.get(row.id, [])],
            "disbursement": (
                DisbursementRead.model_validate(disbursements[row.id]) if row.id in disbursements else None
            ),
            "ledger_entries": [_entry_read(entries[e]) for e in entry_ids[row.id] if e in entries],
        }
        for row in rows
    ]


def entry_read(entry: ledger.Entry) -> LedgerEntryRead:
    """A ledger entry as the API shows it (a payout's, a repayment's)."""
    return _entry_read(entry)


def _entry_read(entry: ledger.Entry) -> LedgerEntryRead:
    return LedgerEntryRead(
        id=entry.id,
        memo=entry.memo,
        reverses=entry.reverses,
        lines=[LedgerLineRead(account=li.account, debit=li.debit, credit=li.credit) for li in entry.lines],
    )


# --- requests and decisions (HTTP) -------------------------------------------------------------------------


def requested(program: policy.Program, amount: Decimal, *, by: str, at: datetime) -> dict[str, Any]:
    """The amount and the approval columns (``PayoutColumns``) of a payout of ``amount`` requested ``by``
    someone ``at``: it awaits the approvals the program asks for the amount, until the program's deadline."""
    return {
        "amount": amount,
        "status": "pending_approval",
        "requested_by": by,
        "required_approvals": policy.approvals_required(program, amount),
        "approval_deadline": policy.approval_deadline(program, at),
        "created_at": at,
    }


def beyond(amount: Decimal, what: str, available: Decimal) -> Conflict:
    """The 409 for a payout of ``amount`` beyond ``what`` it draws on has ``available``."""
    return Conflict(f"The amount {format_money(amount)} is more than {what} {format_money(available)}.")


async def post_repayment(
    session: AsyncSession, *, key: str, memo: str, receivable: str, amount: Decimal, reference: str | None
) -> ledger.Entry:
    """Money an enterprise paid back, as finance records it - the mirror of a payout's posting: debit
    ``bank_settlement``, credit what it owed as (``receivable``). The bank's reference, if any, ends the
    memo."""
    return await ledger.post_entry(
        session,
        key=key,
        memo=memo + (f" (ref {reference})" if reference else ""),
        lines=[ledger.Line.dr(ledger.BANK_SETTLEMENT, amount), ledger.Line.cr(receivable, amount)],
    )


def repayment_columns(
    payout: Drawdown | BridgeLoan,
    data: DrawdownRepaymentCreate | RepaymentCreate,
    *,
    user: CurrentUser,
    entry: ledger.Entry,
    at: datetime,
) -> dict[str, Any]:
    """What a repayment row of either kind records alike: the payout's enterprise and program, the amount
    paid back, and its ``RepaymentColumns`` (services/credit/models.py) - what ``user`` recorded at ``at``,
    booked by ``entry`` (``post_repayment``)."""
    return {
        "uscc": payout.uscc,
        "program": payout.program,
        "amount": data.amount,
        "reference": data.reference,
        "recorded_by": user.sub,
        "ledger_entry_id": entry.id,
        "created_at": at,
    }


async def add(session: AsyncSession, kind: PayoutKind, row: Payout) -> PayoutRead:
    """Write a payout just requested (its ``requested`` columns set); returns its read model."""
    repository.add(session, row)
    await session.flush()
    await announce.awaiting_approval(session, kind, row, approvals_needed=row.required_approvals)
    return await read(session, kind, row)


async def start(temporal: Client, *, kind: PayoutKind, row: Payout, task_queue: str) -> None:
    """Start the committed payout's workflow (again: harmless, the id is the payout's)."""
    await temporal_boundary.start_workflow(
        temporal,
        DISBURSEMENT_WORKFLOW,
        DisbursementInput(
            kind=kind,
            payout_id=row.id,
            requested_by=row.requested_by,
            approval_deadline=row.approval_deadline,
        ),
        id=disbursement_workflow_id(kind, row.id),
        task_queue=task_queue,
        search_attributes=search_attributes(uscc=row.uscc, program=row.program, tier=row.tier),
        unavailable=f"The workflow service is unavailable; the {KINDS[kind].noun} is saved and its "
        "approval will start automatically.",
    )


async def start_after_commit(
    session: AsyncSession, temporal: Client, *, kind: PayoutKind, payout_id: uuid.UUID, task_queue: str
) -> None:
    """The write-then-start protocol's second half (services/temporal.py) for a payout the request has
    written: commit it (with the request's idempotent answer), start its workflow, mark it started. An API
    that dies in between leaves a committed, unstarted payout for ``reconcile``; never a workflow for a
    payout that was not committed."""
    await session.commit()
    row = await repository.get_payout(session, kind, payout_id)
    await start(temporal, kind=kind, row=row, task_queue=task_queue)
    await repository.mark_started(session, kind, payout_id)


async def reconcile(
    temporal: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    task_queue: str,
    older_than_seconds: float = 30.0,
) -> int:
    """Start the workflows of committed payouts that have none (the API died between commit and start), and
    have those of payouts approved and still unpaid look again; the worker runs it every period. A payout
    past its approval deadline is started too: its workflow expires it at once and frees what it holds."""
    started = 0
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    for kind in KINDS:
        async with sessionmaker.begin() as session:
            for row in await repository.payouts_without_workflow(session, kind, older_than=cutoff):
                await start(temporal, kind=kind, row=row, task_queue=task_queue)
                await repository.mark_started(session, kind, row.id)
                started += 1
            # Approved long ago and not paid: the workflow may have missed the decision (its Update lost
            # with a workflow task that never completed, after its local activity committed it - a worker
            # or Temporal server crash) and would wait for its deadline. Have it look again (harmless).
            for row in await repository.payouts_approved_unpaid(session, kind, older_than=cutoff):
                await refresh(temporal, kind, row.id)
    if started:
        log.info("payouts_reconciled", started=started)
    return started


def may_decide(
    user: CurrentUser,
    *,
    status: str,
    requested_by: str,
    approval_deadline: datetime,
    approvers: Collection[str],
    at: datetime,
) -> bool:
    """Whether ``user`` may decide on a payout at ``at`` (the inbox's ``can_approve``): the maker-checker
    rules ``authorize_decision`` and ``record_decision`` enforce - finance, never the requester, once each,
    only while it awaits approval - and before its approval deadline, which expires it."""
    return (
        user.role is Role.finance
        and status == "pending_approval"
        and at < approval_deadline
        and user.sub != requested_by
        and user.sub not in approvers
    )


async def authorize_decision(
    session: AsyncSession, *, user: CurrentUser, kind: PayoutKind, payout_id: uuid.UUID
) -> Payout:
    """Who may decide on a payout: finance, never its requester (maker-checker)."""
    user.require(Role.finance)
    rules = KINDS[kind]
    row: Payout | None = await repository.get_payout(session, kind, payout_id)
    if row is None:
        raise NotFound(f"There is no {rules.noun} {payout_id}.")
    if row.requested_by == user.sub:
        raise Forbidden(f"The requester of a {rules.noun} never decides on it.")
    return row


async def decide(
    session: AsyncSession,
    *,
    user: CurrentUser,
    kind: PayoutKind,
    payout_id: uuid.UUID,
    data: ApprovalCreate,
    temporal: Client,
    retry: bool = False,
    task_queue: str | None = None,
) -> PayoutRead:
    """One finance officer's decision, sent to the payout's workflow as an Update: its activity writes the
    decision in its own transaction (maker-checker enforced under a row lock). Returns the payout's new
    state. A payout committed whose workflow has not started yet (its request's process died in between, and
    the reconciler has not come round) has it started here, on `task_queue`, rather than the decision refused.

    `retry` (an Idempotency-Key was sent): the same officer's identical decision, already recorded, is
    the first attempt whose answer was lost (the API died after the Update and before its commit); it is
    answered with the current state instead of a conflict."""
    rules = KINDS[kind]
    row = await authorize_decision(session, user=user, kind=kind, payout_id=payout_id)
    if not row.workflow_started and task_queue is not None:
        # Started, not marked: the row stays unlocked for the decision's activity, and the reconciler's
        # start (harmless: same id) marks it.
        await start(temporal, kind=kind, row=row, task_queue=task_queue)
    mine = [a for a in await repository.approvals(session, kind, row.id) if a.approver == user.sub]
    if not mine:
        await _send_decision(temporal, kind, row, approver=user.sub, data=data)
    elif not (retry and mine[0].decision == data.decision and mine[0].reason == data.reason):
        raise Conflict(
            f"You have already decided on this {rules.noun}; another finance officer must approve it."
        )
    else:
        # The first attempt's Update may be lost with its answer: its activity (a local one) committed the
        # decision, then its workflow task never completed (the worker or the Temporal server died, the task
        # timed out), and the workflow waits on. Have it look at the payout again (harmless if it knew).
        await refresh(temporal, kind, row.id)
    return await read(session, kind, await repository.get_payout(session, kind, payout_id))


async def _send_decision(
    temporal: Client, kind: PayoutKind, row: Payout, *, approver: str, data: ApprovalCreate
) -> None:
    noun = KINDS[kind].noun
    if row.status != "pending_approval":
        raise Conflict(f"The {noun} is {row.status}; it is no longer waiting for approval.")
    request = ApprovalRequest(
        kind=kind, payout_id=row.id, approver=approver, decision=data.decision, reason=data.reason
    )
    await temporal_boundary.execute_update(
        temporal,
        disbursement_workflow_id(kind, row.id),
        "decide",
        request,
        update_id=f"decision-{approver}",
        result_type=PayoutState,
        refused="The decision could not be recorded.",
        finished=f"The {noun} is no longer waiting for approval.",
    )


async def refresh(temporal: Client, kind: PayoutKind, payout_id: uuid.UUID) -> None:
    """Tell a payout's workflow to look at the payout again (best effort: a workflow not told finds out at
    its next deadline anyway)."""
    await temporal_boundary.signal(temporal, disbursement_workflow_id(kind, payout_id), "refresh")


# --- activity-side writes, each idempotent -----------------------------------------------------------------


async def state(session: AsyncSession, kind: PayoutKind, row: Payout) -> PayoutState:
    rules = KINDS[kind]
    approvals = await repository.approvals(session, kind, row.id)
    return PayoutState(
        kind=kind,
        payout_id=row.id,
        status=cast(PayoutStatus, row.status),  # the database CHECK keeps it one of them
        approvals=sum(1 for a in approvals if a.decision == "approve"),
        required_approvals=row.required_approvals,
        reason=row.reason,
        due_at=rules.due_at(row),
        overdue=rules.overdue(row, now()),
    )


async def record_decision(session: AsyncSession, *, request: ApprovalRequest) -> PayoutState:
    rules = KINDS[request.kind]
    row = await rules.lock(session, request.payout_id)
    approvals = await repository.approvals(session, request.kind, row.id)
    if any(a.approver == request.approver for a in approvals):
        return await state(session, request.kind, row)  # this decision was recorded by an earlier attempt
    if request.approver == row.requested_by:
        raise Forbidden(f"The requester of a {rules.noun} never decides on it.")
    if row.status != "pending_approval":
        raise Conflict(f"The {rules.noun} is {row.status}; it is no longer waiting for approval.")
    at = now()
    repository.add(
        session,
        PayoutApproval(
            **{payout_column(request.kind): row.id},
            approver=request.approver,
            decision=request.decision,
            reason=request.reason,
            created_at=at,
        ),
    )
    approved_so_far = sum(1 for a in approvals if a.decision == "approve") + 1
    if request.decision == "reject":
        row.status, row.decided_at = "rejected", at
        row.reason = f"rejected by finance: {request.reason or 'no reason given'}"
        await rules.release(session, row)
        await announce.rejected(session, request.kind, row)
    elif approved_so_far < row.required_approvals:
        await announce.awaiting_approval(
            session, request.kind, row, approvals_needed=row.required_approvals - approved_so_far
        )
    else:
        row.status, row.decided_at = "approved", at
        rules.approved(row, at)
        repository.add(
            session,
            Disbursement(
                id=uuid.uuid4(),
                kind=request.kind,
                **{payout_column(request.kind): row.id},
                **whose(row),
                amount=row.amount,
                status="pending",
                bank_key=rules.bank_key(row),
                created_at=at,
            ),
        )
        await announce.approved(session, request.kind, row)
    await session.flush()
    return await state(session, request.kind, row)


async def check(session: AsyncSession, *, check: PayoutCheck) -> PayoutState:
    """The payout's state. With ``expire`` one still awaiting approval expires and its hold is released; with
    ``overdue`` a bridge loan paid out and not repaid is flagged overdue."""
    rules = KINDS[check.kind]
    try:
        row = await rules.lock(session, check.payout_id)
    except NotFound:
        # Not committed (yet): before the deadline keep waiting; after it, the request that started the
        # workflow never committed and nothing was held.
        status: PayoutStatus = "expired" if check.expire else "pending_approval"
        return PayoutState(kind=check.kind, payout_id=check.payout_id, status=status, reason="not recorded")
    if check.expire and row.status == "pending_approval":
        row.status, row.decided_at = "expired", check.at
        row.reason = "the approval deadline passed"
        await rules.release(session, row)
        await announce.rejected(session, check.kind, row)
    if check.overdue and rules.flag_overdue(row, check.at):
        await announce.bridge_loan_overdue(session, row, due_on=row.due_on, outstanding=row.outstanding)
    await session.flush()
    return await state(session, check.kind, row)


async def reminder_time(
    session: AsyncSession, *, ref: PayoutRef, programs: policy.Programs
) -> PayoutReminderTime:
    """When the payout's workflow reminds of it: a bridge loan paid out, the program's
    ``reminder_working_days`` before it is due; anything else never."""
    rules = KINDS[ref.kind]
    row = await repository.get_payout(session, ref.kind, ref.payout_id)
    if row is None:
        raise NotFound(f"There is no {rules.noun} {ref.payout_id}.")
    if row.status != "disbursed":
        return PayoutReminderTime()
    return PayoutReminderTime(remind_at=rules.remind_at(row, programs))


async def remind(session: AsyncSession, *, reminder: PayoutReminder) -> PayoutState:
    """A bridge loan falls due soon (the workflow's timer, at ``reminder.at``): tell the enterprise and
    finance - once (under the loan's lock, an event already in the outbox is not written again), and only
    while the loan is paid out, not repaid, not yet due and not flagged overdue. Returns its state, like
    ``check``."""
    rules = KINDS[reminder.kind]
    row = await rules.lock(session, reminder.payout_id)
    due = rules.due_at(row)
    if (
        row.status == "disbursed"
        and row.overdue_since is None
        and due is not None
        and reminder.at < due
        and not await repository.told(session, BridgeLoanDueSoon.type, row.id)
    ):
        await announce.bridge_loan_due_soon(session, row, due_on=row.due_on)
    return await state(session, reminder.kind, row)


async def _paying(
    session: AsyncSession, kind: PayoutKind, payout_id: uuid.UUID
) -> tuple[Kind[Any], Any, Disbursement]:
    """For the bank's answer: the kind's rules, the payout (locked, with what it holds) and its disbursement
    (locked)."""
    rules = KINDS[kind]
    row = await rules.lock(session, payout_id)
    disbursement = await repository.get_disbursement(session, kind, row.id, lock=True)
    if disbursement is None:
        raise NotFound(f"The {rules.noun} {row.id} has no disbursement.")
    return rules, row, disbursement


async def payment_order(session: AsyncSession, *, ref: PayoutRef) -> PaymentOrder:
    rules = KINDS[ref.kind]
    disbursement = await repository.get_disbursement(session, ref.kind, ref.payout_id)
    if disbursement is None:
        raise NotFound(f"The {rules.noun} {ref.payout_id} has no disbursement.")
    return PaymentOrder(
        **ref.model_dump(),  # the payout it pays
        key=disbursement.bank_key,
        amount=disbursement.amount,
        beneficiary=disbursement.uscc,
        reference=f"giantflow {rules.noun} {ref.payout_id}",
    )


async def confirm(session: AsyncSession, *, receipt: PaymentReceipt) -> PayoutState:
    """The bank paid: post the ledger entry, mark the disbursement and the payout - once."""
    rules, row, disbursement = await _paying(session, receipt.kind, receipt.payout_id)
    if disbursement.status == "paid":
        return await state(session, receipt.kind, row)
    if disbursement.status != "pending" or row.status != "approved":
        raise Conflict(f"The disbursement is {disbursement.status} and the {rules.noun} {row.status}.")
    entry = await ledger.post_entry(
        session,
        key=rules.ledger_key(row),
        memo=f"{rules.noun} {row.id} paid to {row.uscc} (bank {receipt.bank_reference})",
        lines=[
            ledger.Line.dr(rules.debit_account(row), row.amount),
            ledger.Line.cr(ledger.BANK_SETTLEMENT, row.amount),
        ],
    )
    disbursement.status, disbursement.bank_reference = "paid", receipt.bank_reference
    disbursement.ledger_entry_id, disbursement.completed_at = entry.id, now()
    row.status = "disbursed"
    await rules.paid(session, row)
    await session.flush()
    await announce.paid(session, receipt.kind, row, bank_reference=receipt.bank_reference)
    return await state(session, receipt.kind, row)


async def fail(session: AsyncSession, *, failure: PaymentFailure) -> PayoutState:
    """The bank definitely refused: record the reason and release the hold - once."""
    rules, row, disbursement = await _paying(session, failure.kind, failure.payout_id)
    if disbursement.status == "failed":
        return await state(session, failure.kind, row)
    if disbursement.status != "pending":
        raise Conflict(f"The disbursement is already {disbursement.status}.")
    disbursement.status, disbursement.failure_reason, disbursement.completed_at = (
        "failed",
        failure.reason,
        now(),
    )
    row.status, row.reason = "failed", f"the bank refused the payment: {failure.reason}"
    await rules.release(session, row)
    await session.flush()
    await announce.refused(session, failure.kind, row, reason=failure.reason)
    return await state(session, failure.kind, row)
