"""Replay every committed history against today's workflow code: a non-deterministic change fails here.

Histories are recorded with `GIANTFLOW_RECORD_HISTORIES=1 pytest tests/workflows tests/credit`; record a new
one for each new path, and never re-record an old one to make a change pass (use `workflow.patched`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.worker import workflow_classes

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("generation", ["", "-one-step-screening"])
def test_there_is_a_history_for_every_review_path(generation: str) -> None:
    names = {p.stem for p in HISTORIES}
    paths = {
        "review-approved",
        "review-rejected-municipal",
        "review-rejected-provincial",
        "review-rejected-national",
        "review-ineligible",
        "review-supplement-missed",
        "review-sla-escalated",
        "review-objection-upheld",
        "review-objection-dismissed",
        "review-withdrawn",
        "review-expired",
        "review-revoked",
    }
    expected = {f"{path}{generation}" for path in paths}
    assert expected <= names, f"missing histories: {sorted(expected - names)}"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=workflow_classes(), data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
