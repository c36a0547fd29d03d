"""The bank reconciliation's activity: the statement from the bank, the ledger's postings, one transaction
that keeps the day's run (services/credit/reconciliation.py). Running it again changes nothing twice: the
day has one run, and its mismatches are replaced, one per key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.contracts import ReconcileDay, ReconciliationOutcome
from services.credit import reconciliation
from services.credit.bank import BankClient, BankRejected
from services.resources import Resources
from workflows.base import Activities


class ReconciliationActivities(Activities):
    def __init__(self, resources: Resources, *, bank: BankClient | None = None) -> None:
        super().__init__(resources)
        self.bank = bank or BankClient(resources.http, resources.settings.bank_url)

    def all(self) -> list[Callable[..., Any]]:
        return [self.reconcile_day]

    @activity.defn(name="reconcile_day")
    async def reconcile_day(self, data: ReconcileDay) -> ReconciliationOutcome:
        reconciliation.check_day(data.day)  # a day to come: final (Unprocessable), never retried
        try:
            statement = await self.bank.statement(data.day)
            activity.heartbeat()
            async with self.resources.sessionmaker() as session:
                postings = await reconciliation.postings(session, statement)
            # Postings of the day not on its statement: the bank may have paid them the day before.
            elsewhere: set[str] = set()
            for key in reconciliation.unmatched_postings(statement, postings):
                if await self.bank.get_payment(key) is not None:
                    elsewhere.add(key)
                activity.heartbeat()
        except BankRejected as exc:  # the bank refused the request: asking again gets the same answer
            raise ApplicationError(exc.reason, type="BankRejected", non_retryable=True) from exc
        # BankUnavailable (a timeout, a 5xx) is retried by the workflow's policy.
        return await self._in_transaction(
            reconciliation.record,
            statement=statement,
            postings=postings,
            paid_elsewhere=elsewhere,
            workflow_id=data.workflow_id,
        )
