"""Every path of the credit workflows has a committed history, replayed by tests/workflows/test_replay.py."""

from __future__ import annotations

import pytest

from tests.credit.conftest import HISTORIES, PAYOUT_GENERATION


def test_there_is_a_history_for_every_benefits_path() -> None:
    names = {path.stem for path in HISTORIES.glob("*.json")}
    assert {"benefits-revoked", "benefits-expired"} <= names


@pytest.mark.parametrize("generation", ["", PAYOUT_GENERATION])
def test_there_is_a_history_for_every_payout_path(generation: str) -> None:
    names = {path.stem for path in HISTORIES.glob("*.json")}
    paths = {
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
    expected = {f"{path}{generation}" for path in paths}
    assert expected <= names, f"missing histories: {sorted(expected - names)}"
