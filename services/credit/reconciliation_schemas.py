"""API schemas of the bank reconciliation: a day's run, its mismatches, the answer to a run asked for."""

from __future__ import annotations

import datetime as dt
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.credit.schemas import Money

RunStatus = Literal["clean", "mismatches"]
MismatchKind = Literal["paid_not_posted", "posted_not_paid", "amount_differs"]


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ReconciliationRunRead(_Read):
    """One statement day's reconciliation (China Standard Time), as last run."""

    id: uuid.UUID
    date: dt.date = Field(validation_alias="day", description="the statement's day (China Standard Time)")
    status: RunStatus = Field(description="clean when the statement and the ledger agree on every key")
    statement_count: int = Field(description="payments on the bank's statement of the day")
    statement_total: Money
    posted_count: int = Field(description="the ledger's bank postings (payouts marked paid) of the day")
    posted_total: Money
    mismatch_count: int
    paid_not_posted: int = Field(description="payments on the statement with no ledger posting for their key")
    posted_not_paid: int = Field(description="ledger postings with no payment at the bank for their key")
    amount_differs: int = Field(description="keys both sides have, with different amounts")
    runs: int = Field(description="how many times the day was reconciled (the row is updated each time)")
    first_run_at: datetime
    last_run_at: datetime


class ReconciliationMismatchRead(_Read):
    id: uuid.UUID
    kind: MismatchKind
    key: str = Field(description="the payment's idempotency key at the bank")
    statement_amount: Money | None = Field(description="what the bank's statement says was paid")
    ledger_amount: Money | None = Field(description="what the ledger posted as paid through the bank")
    beneficiary: str | None
    bank_reference: str | None
    disbursement_id: uuid.UUID | None = Field(description="the disbursement the ledger posted, if any")
    detected_at: datetime


class ReconciliationReport(ReconciliationRunRead):
    """A day's run with every mismatch it found, by kind and key."""

    mismatches: list[ReconciliationMismatchRead]


class ReconciliationRunRequested(BaseModel):
    """A reconciliation asked for: its workflow reconciles the day, then ``GET /reconciliations/{date}``
    shows the result."""

    date: dt.date
    workflow_id: str
    status: Literal["started"] = "started"
