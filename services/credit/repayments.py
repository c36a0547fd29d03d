"""Drawdown repayments: the money that comes back on a credit line, which makes the line revolve.

A drawdown paid out falls due its term later (the program's ``durations.drawdown_term``, kept on the
drawdown when it is requested; ``due_at`` is set when the bank pays it). The enterprise (its own) or finance
records what came in, in parts or whole, never more than is outstanding. One request is one transaction:

1. the line gives the amount back to ``available`` (``repository.restore``: a conditional UPDATE that takes
   the line's row lock first, the order every writer of a line uses, and never lets ``repaid`` pass
   ``drawn``);
2. the drawdown takes it (``repository.repay_drawdown``: a conditional UPDATE, never more than is
   outstanding; ``repaid`` when nothing is left) - either refusal rolls the whole request back;
3. the repayment row and its balanced ledger entry (debit ``bank_settlement``, credit the enterprise's credit
   receivable: the drawdown's payment mirrored) and the ``drawdown.repaid`` event are written.

Overdue: a drawdown paid out, not repaid in full and past ``due_at`` is overdue - computed on every read, so
the view and the refusal of new drawdowns on its line (``service.request_drawdown``) are exact without any
timer. The worker's periodic sweep (``sweep_overdue``, with the write-then-start reconciler) stamps
``overdue_since`` and writes ``drawdown.overdue`` once per drawdown, in one transaction: durable (a sweep
that dies commits nothing and the next one does it) and idempotent (only rows not stamped yet).

A line whose recognition lapsed or was revoked is frozen: it takes no new drawdowns, and repayments are
still taken until nothing is outstanding.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.auth import CurrentUser, Role
from services.credit import announce, ledger, payouts, policy, repository
from services.credit.models import Drawdown, DrawdownRepayment
from services.credit.schemas import DrawdownRepaymentCreate, DrawdownRepaymentRead, format_money
from services.credit.service import reader_scope
from services.errors import Conflict, FieldError, NotFound, Unprocessable
from services.idempotency import require_key
from services.pagination import Page, decode_cursor, split_page

log = structlog.get_logger("giantflow.credit")


def ledger_key(repayment_id: uuid.UUID) -> str:
    return f"drawdown-repayment:{repayment_id}"


# The drawdowns whose access was checked, held for the session's life so that the session's identity map keeps
# them: ``repay`` checks access again (it is also called without the route's check) and then finds the row
# there instead of reading it a second time. Who drew it and on which line never change; what is outstanding
# is read where it changes (``repository.repay_drawdown``, ``_refusal``). Saves one query per repayment.
_CHECKED = "credit.repayments.checked"


async def _visible_drawdown(session: AsyncSession, scope: str | None, drawdown_id: uuid.UUID) -> Drawdown:
    row = await session.get(Drawdown, drawdown_id)
    if row is None or scope not in (None, row.uscc):
        raise NotFound(f"There is no drawdown {drawdown_id}.")
    return row


async def authorize_repayment(
    session: AsyncSession, *, user: CurrentUser, drawdown_id: uuid.UUID, key: str | None
) -> Drawdown:
    """Who may record a repayment: the enterprise that drew it, or finance (another enterprise's drawdown
    does not exist for an enterprise). Money moves: the request must carry an Idempotency-Key (checked
    after access, so a refusal says nothing about the header)."""
    user.require(Role.enterprise, Role.finance)
    row = await _visible_drawdown(session, user.uscc if user.role is Role.enterprise else None, drawdown_id)
    session.info.setdefault(_CHECKED, {})[row.id] = row
    require_key(key)
    return row


async def _refusal(session: AsyncSession, drawdown_id: uuid.UUID, amount: Decimal) -> Exception:
    """Why a repayment was not taken, from the drawdown as it is committed now."""
    row = await repository.get_drawdown(session, drawdown_id)
    assert row is not None
    if row.status == "repaid":
        return Conflict("The drawdown is repaid in full; nothing is outstanding.")
    if row.status != "disbursed":
        return Conflict(f"The drawdown is {row.status}; only a drawdown paid out is repaid.")
    return Unprocessable(
        f"The amount {format_money(amount)} is more than the {format_money(row.outstanding)} outstanding on "
        "the drawdown.",
        errors=[FieldError(field="amount", message="more than outstanding")],
    )


async def repay(
    session: AsyncSession,
    *,
    user: CurrentUser,
    drawdown_id: uuid.UUID,
    data: DrawdownRepaymentCreate,
    key: str | None,
) -> DrawdownRepaymentRead:
    """Record a repayment of ``data.amount`` on a drawdown paid out (see the module): the line's available
    amount grows by it, the drawdown's outstanding shrinks by it, and the ledger entry is posted - in the
    request's one transaction. 409 for a drawdown not paid out or repaid already, 422 for more than is
    outstanding or a day still to come."""
    row = await authorize_repayment(session, user=user, drawdown_id=drawdown_id, key=key)
    at = payouts.now()
    paid_on = data.paid_on or policy.today(at)
    if paid_on > policy.today(at):
        raise Unprocessable(
            "A repayment is recorded once the money came in.",
            errors=[FieldError(field="paid_on", message="in the future")],
        )
    if not await repository.restore(session, line_id=row.credit_line_id, amount=data.amount):
        raise await _refusal(session, row.id, data.amount)
    repaid = await repository.repay_drawdown(session, drawdown_id=row.id, amount=data.amount)
    if repaid is None:
        raise await _refusal(session, row.id, data.amount)
    repayment_id = uuid.uuid4()
    entry = await payouts.post_repayment(
        session,
        key=ledger_key(repayment_id),
        memo=f"drawdown {repaid.id} repaid by {repaid.uscc} ({format_money(data.amount)})",
        receivable=ledger.credit_receivable(repaid.uscc),
        amount=data.amount,
        reference=data.reference,
    )
    repayment = DrawdownRepayment(
        id=repayment_id,
        drawdown_id=repaid.id,
        credit_line_id=repaid.credit_line_id,
        paid_on=paid_on,
        **payouts.repayment_columns(repaid, data, user=user, entry=entry, at=at),
    )
    repository.add(session, repayment)
    await session.flush()
    await announce.drawdown_repaid(
        session, repaid, repayment_id=repayment_id, repayment=data.amount, outstanding=repaid.outstanding
    )
    return DrawdownRepaymentRead.model_validate(repayment).model_copy(
        update={"ledger_entry": payouts.entry_read(entry)}
    )


async def list_repayments(
    session: AsyncSession,
    *,
    user: CurrentUser,
    drawdown_id: uuid.UUID,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[DrawdownRepaymentRead]:
    """A drawdown's repayments, newest first, each with its ledger entry: the enterprise its own, finance and
    admin all."""
    row = await _visible_drawdown(session, reader_scope(user), drawdown_id)
    rows = await repository.list_repayments(
        session, drawdown_id=row.id, cursor=decode_cursor(cursor), limit=limit
    )
    page, next_cursor = split_page(rows, limit, lambda r: (r.created_at, r.id))
    entries = {e.id: e for e in await ledger.entries(session, [r.ledger_entry_id for r in page])}
    items = [
        DrawdownRepaymentRead.model_validate(r).model_copy(
            update={"ledger_entry": payouts.entry_read(entries[r.ledger_entry_id])}
        )
        for r in page
    ]
    return Page(items=items, next_cursor=next_cursor)


async def sweep_overdue(
    sessionmaker: async_sessionmaker[AsyncSession], *, at: datetime | None = None, batch: int = 500
) -> int:
    """Flag the drawdowns that fell due by ``at`` with an amount outstanding, and tell their enterprise and
    finance (``drawdown.overdue``), once each: the flag and the event commit together, batch by batch. The
    worker runs it every period; any number of workers may (rows one holds, the others skip)."""
    at = at or payouts.now()
    flagged = 0
    while True:
        async with sessionmaker.begin() as session:
            rows = await repository.flag_overdue(session, at=at, limit=batch)
            for row in rows:
                assert row.due_at is not None
                await announce.drawdown_overdue(session, row, due_at=row.due_at, outstanding=row.outstanding)
        flagged += len(rows)
        if len(rows) < batch:
            break
    if flagged:
        log.info("drawdowns_overdue", flagged=flagged)
    return flagged
