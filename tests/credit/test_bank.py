"""The bank simulator (one payment per key, persisted, faults) and the typed client's failure kinds."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from devtools.banksim import create_bank_app
from services.credit.bank import BankClient, BankRejected, BankUnavailable
from tests.credit.conftest import BankSim, new_uscc


def _body(uscc: str, amount: str = "1200.50") -> dict[str, str]:
    return {"amount": amount, "currency": "CNY", "beneficiary": uscc, "reference": "test"}


async def _sim_client(data_dir: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_bank_app(data_dir)), base_url="http://bank"
    )


async def test_one_payment_per_key_and_replays_answer_the_original(tmp_path: Path) -> None:
    uscc = new_uscc()
    async with await _sim_client(tmp_path) as bank:
        first = await bank.post("/payments", json=_body(uscc), headers={"Idempotency-Key": "k-1"})
        again = await bank.post("/payments", json=_body(uscc), headers={"Idempotency-Key": "k-1"})
        other = await bank.post("/payments", json=_body(uscc, "9.99"), headers={"Idempotency-Key": "k-1"})
        missing = await bank.post("/payments", json=_body(uscc))
        bad = await bank.post(
            "/payments", json={**_body(uscc), "amount": 12.5}, headers={"Idempotency-Key": "k-2"}
        )
        statement = (await bank.get("/statement")).json()

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert first.json()["amount"] == "1200.50"
    assert other.status_code == 422
    assert "different payment" in other.json()["reason"]
    assert missing.status_code == 400
    assert bad.status_code == 422
    assert statement["count"] == 1
    assert statement["total"] == "1200.50"


async def test_payments_survive_a_restart(tmp_path: Path) -> None:
    uscc = new_uscc()
    async with await _sim_client(tmp_path) as bank:
        made = (await bank.post("/payments", json=_body(uscc), headers={"Idempotency-Key": "keep"})).json()
    with (tmp_path / "payments.jsonl").open("a") as handle:
        handle.write('{"torn": ')  # a crash mid-write leaves a torn last line
    async with await _sim_client(tmp_path) as bank:
        found = await bank.get("/payments/keep")
        replay = await bank.post("/payments", json=_body(uscc), headers={"Idempotency-Key": "keep"})
        assert (await bank.get("/payments/other")).status_code == 404
    assert found.json() == made
    assert replay.status_code == 200
    assert replay.json()["id"] == made["id"]


async def test_faults_are_set_from_the_environment_and_at_run_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIANTFLOW_BANK_ERROR_RATE", "1")
    monkeypatch.setenv("GIANTFLOW_BANK_SEED", "3")
    uscc = new_uscc()
    async with await _sim_client(tmp_path) as bank:
        assert (await bank.get("/admin/faults")).json()["error_rate"] == 1.0
        failed = await bank.post("/payments", json=_body(uscc), headers={"Idempotency-Key": "f-1"})
        assert (await bank.post("/admin/faults", json={"error_rate": 2})).status_code == 422
        assert (
            await bank.post("/admin/faults", json={"error_rate": 0, "duplicate_delivery_rate": 1})
        ).is_success
        made = await bank.post("/payments", json=_body(uscc), headers={"Idempotency-Key": "f-1"})
        await bank.post("/admin/faults", json={"error_rate": 1, "max_faults_per_key": 2})
        budget = [(await bank.get(f"/payments/{k}")).status_code for k in ("f-1", "f-1", "f-1", "f-2")]
        stats = (await bank.get("/admin/stats")).json()
    assert failed.status_code == 500
    assert made.status_code == 200  # the duplicate delivery re-delivered the first answer
    assert budget == [500, 200, 200, 500]  # f-1 had one fault already, one more, then it goes through
    assert stats["errors"] == 3
    assert stats["duplicate_deliveries"] == 1
    assert stats["payments_made"] == 1
    assert stats["payments_stored"] == 1


async def test_client_tells_definite_failures_from_ambiguous_ones(calm_bank: BankSim) -> None:
    uscc, closed = new_uscc(), new_uscc()
    key = f"client-{uuid.uuid4()}"
    async with httpx.AsyncClient() as http:
        client = BankClient(http, calm_bank.url, timeout=0.3)
        assert await client.get_payment(key) is None
        paid = await client.create_payment(key=key, amount=Decimal("10.00"), beneficiary=uscc, reference="r")
        assert (await client.get_payment(key)) == paid
        assert paid.amount == Decimal("10.00")

        await calm_bank.faults(reject_beneficiaries=[closed])
        with pytest.raises(BankRejected, match="account is closed") as rejected:
            await client.create_payment(
                key=f"{key}-x", amount=Decimal("1.00"), beneficiary=closed, reference="r"
            )
        assert rejected.value.status == 422

        await calm_bank.faults(error_rate=1)
        with pytest.raises(BankUnavailable) as error:
            await client.create_payment(
                key=f"{key}-y", amount=Decimal("1.00"), beneficiary=uscc, reference="r"
            )
        assert error.value.status == 500

        await calm_bank.faults(error_rate=0, timeout_rate=1, hang_seconds=1)
        with pytest.raises(BankUnavailable, match="in time"):
            await client.get_payment(key)

        await calm_bank.faults(timeout_rate=0, answer_after_commit_error_rate=1)
        with pytest.raises(BankUnavailable):
            await client.create_payment(
                key=f"{key}-z", amount=Decimal("2.00"), beneficiary=uscc, reference="r"
            )
        await calm_bank.faults(answer_after_commit_error_rate=0)
        committed = await client.get_payment(f"{key}-z")
        assert committed is not None  # the money moved although the answer was an error

    async with httpx.AsyncClient() as http:
        nowhere = BankClient(http, "http://127.0.0.1:9", timeout=0.3)
        with pytest.raises(BankUnavailable, match="reached"):
            await nowhere.get_payment(key)
