"""Bridge loans qualified by a cultivation-pool membership: a program's fund open to its pool
(``bridge_pool.open_to_pool_members``, the Chongqing seed's) lends to its members with no recognition, through
the same approval, payment, repayment and ledger as a recognition's loan; a fund not open to the pool, or an
enterprise neither recognised nor in a pool, is refused with nothing written - through the HTTP API on the
dev server and the bank simulator."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.config import Settings
from services.credit import ledger
from services.credit.models import BridgeLoan
from services.pools.models import PoolMember
from services.programs import ProgramFileError, load_program_file
from tests.conftest import bearer
from tests.credit.conftest import PROGRAM, BankSim, arm, auth, enterprise_token, new_uscc
from tests.credit.test_funds_and_listings import finished, frozen_by_revocation, fund, loan, until

D = Decimal
OPEN = "pool-test"  # its fund is open to its pool; spent by these tests alone
SECOND_OPEN = "pool-second-test"
CLOSED = "bridge-test"  # its fund lends on recognition only
SEED = Path(__file__).resolve().parents[2] / "programs"


async def enlist(
    sessions: async_sessionmaker[AsyncSession], uscc: str, program: str, tier_aimed: str = "little_giant"
) -> None:
    """The enterprise in ``program``'s cultivation pool, as an import leaves a member."""
    async with sessions.begin() as session:
        session.add(
            PoolMember(
                program=program,
                uscc=uscc,
                name=f"Pool member {uscc}",
                region_code="500103",
                industry="C34",
                tier_aimed=tier_aimed,
            )
        )


async def ask(
    api: httpx.AsyncClient, settings: Settings, uscc: str, amount: str = "1000.00", **extra: Any
) -> httpx.Response:
    return await api.post(
        "/api/v1/bridge-loans", json=loan(amount, **extra), headers=bearer(enterprise_token(settings, uscc))
    )


async def loans_of(sessions: async_sessionmaker[AsyncSession], uscc: str) -> int:
    async with sessions() as session:
        count = await session.scalar(select(func.count()).where(BridgeLoan.uscc == uscc))
        return int(count or 0)


def test_the_seed_opens_its_fund_to_the_pool_and_older_files_stay_closed(tmp_path: Path) -> None:
    chongqing = load_program_file(SEED / "chongqing-2020.toml")
    assert chongqing.bridge_pool is not None
    assert chongqing.bridge_pool.open_to_pool_members is True
    text = (SEED / "chongqing-2020.toml").read_text(encoding="utf-8")
    older = tmp_path / "chongqing-2020.toml"
    older.write_text("\n".join(li for li in text.splitlines() if "open_to_pool_members" not in li))
    before = load_program_file(older).bridge_pool
    assert before is not None
    assert before.open_to_pool_members is False  # a file or version written before means what it meant
    older.write_text(text.replace("open_to_pool_members = true", 'open_to_pool_members = "yes"'))
    with pytest.raises(ProgramFileError, match=r"bridge_pool\.open_to_pool_members"):
        load_program_file(older)


async def test_a_pool_member_borrows_from_an_open_fund_and_is_paid_posted_and_repaid(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    resources: Any,
    calm_bank: BankSim,
) -> None:
    uscc = new_uscc()
    await enlist(sessions, uscc, OPEN, tier_aimed="little_giant")  # a tier the fund's recognitions lack
    headers = bearer(enterprise_token(settings, uscc))
    before = await fund(api, settings, OPEN)

    created = await ask(api, settings, uscc, "600000.00", term_days=10)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["program"], body["tier"], body["qualified_by"], body["recognition_id"]) == (
        OPEN,
        "little_giant",
        "pool",
        None,
    )
    assert (body["status"], body["required_approvals"]) == ("pending_approval", 1)
    loan_id = body["id"]
    reserved = await fund(api, settings, OPEN)
    assert D(reserved["reserved"]) - D(before["reserved"]) == D("600000.00")

    approved = await api.post(
        f"/api/v1/bridge-loans/{loan_id}/approvals",
        json={"decision": "approve", "reason": "pool member checked"},
        headers=auth(settings, "finance", "finance-pool"),
    )
    assert approved.status_code == 200, approved.text
    paid = await until(api, f"/api/v1/bridge-loans/{loan_id}", headers, lambda b: b["status"] == "disbursed")
    assert (paid["disbursement"]["status"], paid["qualified_by"]) == ("paid", "pool")
    [entry] = paid["ledger_entries"]
    assert sorted((li["account"], li["debit"], li["credit"]) for li in entry["lines"]) == [
        ("bank_settlement", "0.00", "600000.00"),
        (f"bridge_receivable:{uscc}", "600000.00", "0.00"),
    ]
    assert len(await calm_bank.payments_for({f"bridge-loan-{loan_id}"})) == 1
    lent = await fund(api, settings, OPEN)
    assert D(lent["lent"]) - D(before["lent"]) == D("600000.00")

    repaid = await api.post(
        f"/api/v1/bridge-loans/{loan_id}/repayment",
        json={"amount": "600000.00", "reference": "CNAPS-POOL-0001"},
        headers={**auth(settings, "finance", "finance-pool-2"), "Idempotency-Key": f"repay-{uuid.uuid4()}"},
    )
    assert repaid.status_code == 200, repaid.text
    assert (repaid.json()["status"], len(repaid.json()["ledger_entries"])) == ("repaid", 2)
    assert (await finished(resources, f"disbursement-bridge-loan-{loan_id}")).status == "repaid"
    after = await fund(api, settings, OPEN)
    assert (after["committed"], after["lent"]) == (before["committed"], before["lent"])
    async with sessions() as session:
        assert await ledger.balance(session, ledger.bridge_receivable(uscc)) == D("0.00")
        row = await session.get(BridgeLoan, uuid.UUID(loan_id))
        assert row is not None
        assert (row.qualified_by, row.recognition_id) == ("pool", None)


async def test_a_recognition_wins_and_its_revocation_leaves_the_pool_loans_alone(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    resources: Any,
) -> None:
    uscc = new_uscc()
    recognition_id = await arm(sessions, uscc, "bridge_loan")  # in PROGRAM, whose fund lends on recognition
    await enlist(sessions, uscc, OPEN)
    await enlist(sessions, uscc, PROGRAM)  # a pool its program's fund is not open to

    by_recognition = await ask(api, settings, uscc)  # no program named: the recognition's
    assert by_recognition.status_code == 201, by_recognition.text
    assert (by_recognition.json()["program"], by_recognition.json()["qualified_by"]) == (
        PROGRAM,
        "recognition",
    )
    assert by_recognition.json()["recognition_id"] == str(recognition_id)
    by_pool = await ask(api, settings, uscc, program=OPEN)
    assert by_pool.status_code == 201, by_pool.text
    assert (by_pool.json()["program"], by_pool.json()["qualified_by"]) == (OPEN, "pool")

    # Recognised and in the same program's pool: the recognition qualifies the loan.
    both = new_uscc()
    both_recognition = await arm(sessions, both, "bridge_loan", program=OPEN)
    await enlist(sessions, both, OPEN)
    mixed = await ask(api, settings, both)
    assert mixed.status_code == 201, mixed.text
    assert (mixed.json()["qualified_by"], mixed.json()["recognition_id"]) == (
        "recognition",
        str(both_recognition),
    )
    assert mixed.json()["tier"] == "specialized_new"

    # The revocation of the recognition rejects the loan it qualified, never the pool's.
    await frozen_by_revocation(resources, recognition_id=recognition_id, uscc=uscc)
    frozen = await finished(resources, f"disbursement-bridge-loan-{by_recognition.json()['id']}")
    assert (frozen.status, frozen.reason) == ("rejected", "benefit frozen: fraud found")
    headers = bearer(enterprise_token(settings, uscc))
    kept = await api.get(f"/api/v1/bridge-loans/{by_pool.json()['id']}", headers=headers)
    assert kept.json()["status"] == "pending_approval"
    # With the recognition frozen, the pool is what qualifies when no program is named.
    again = await ask(api, settings, uscc)
    assert again.status_code == 201, again.text
    assert (again.json()["program"], again.json()["qualified_by"]) == (OPEN, "pool")

    for loan_id in (by_pool.json()["id"], mixed.json()["id"], again.json()["id"]):  # give the fund back
        rejected = await api.post(
            f"/api/v1/bridge-loans/{loan_id}/approvals",
            json={"decision": "reject", "reason": "test over"},
            headers=auth(settings, "finance", "finance-pool"),
        )
        assert rejected.json()["status"] == "rejected", rejected.text


async def test_a_member_of_a_pool_whose_fund_is_not_open_is_refused_and_nothing_is_written(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    uscc = new_uscc()
    await enlist(sessions, uscc, CLOSED, tier_aimed="specialized_new")
    before = await fund(api, settings, CLOSED)
    for extra in ({}, {"program": CLOSED}):
        refused = await ask(api, settings, uscc, **extra)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        detail = refused.json()["detail"]
        assert detail.startswith("Neither an active recognition nor a cultivation-pool membership of yours")
        assert "not open to the pool" in detail
    assert await loans_of(sessions, uscc) == 0
    assert await fund(api, settings, CLOSED) == before


async def test_an_enterprise_in_no_pool_and_without_recognition_is_refused(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    uscc = new_uscc()
    before = await fund(api, settings, OPEN)
    refused = await ask(api, settings, uscc)
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == (
        "Neither an active recognition nor a cultivation-pool membership of yours qualifies for a bridge "
        "loan."
    )
    named = await ask(api, settings, uscc, program=OPEN)
    assert named.status_code == 409
    assert f"program {OPEN!r}'s bridge fund" in named.json()["detail"]
    assert await loans_of(sessions, uscc) == 0
    assert await fund(api, settings, OPEN) == before


async def test_a_member_of_two_open_pools_names_one(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    uscc = new_uscc()
    await enlist(sessions, uscc, OPEN)
    await enlist(sessions, uscc, SECOND_OPEN)
    unnamed = await ask(api, settings, uscc)
    assert unnamed.status_code == 422, unnamed.text
    assert unnamed.json()["errors"] == [{"field": "program", "message": "required when several qualify"}]
    assert f"({SECOND_OPEN}, {OPEN})" in unnamed.json()["detail"]
    assert await loans_of(sessions, uscc) == 0
    named = await ask(api, settings, uscc, program=SECOND_OPEN)
    assert named.status_code == 201, named.text
    assert (named.json()["program"], named.json()["qualified_by"]) == (SECOND_OPEN, "pool")
    rejected = await api.post(
        f"/api/v1/bridge-loans/{named.json()['id']}/approvals",
        json={"decision": "reject", "reason": "test over"},
        headers=auth(settings, "finance", "finance-pool"),
    )
    assert rejected.json()["status"] == "rejected", rejected.text
