"""Every path of the credit workflows has a committed history, replayed by tests/workflows/test_replay.py."""

from __future__ import annotations

from tests.credit.conftest import HISTORIES


def test_there_is_a_history_for_every_credit_path() -> None:
    names = {path.stem for path in HISTORIES.glob("*.json")}
    expected = {
        "benefits-revoked",
        "benefits-expired",
        "disbursement-dual-approval-paid",
        "disbursement-rejected",
        "disbursement-bank-refused",
        "disbursement-expired-half-approved",
        "disbursement-frozen",
        "disbursement-answer-lost-after-commit",
        "bridge-loan-dual-approval-paid-repaid",
        "bridge-loan-rejected",
        "bridge-loan-bank-refused",
        "bridge-loan-expired",
        "bridge-loan-frozen",
        "bridge-loan-overdue",
        "listing-reward-paid",
        "listing-reward-rejected",
        "listing-reward-expired",
    }
    assert expected <= names, f"missing histories: {sorted(expected - names)}"
