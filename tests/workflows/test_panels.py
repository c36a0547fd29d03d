"""Expert panels (services/applications/panels.py): the draw, the blind file, answers, the rules and the SLA,
in the time-skipping server with the real activities and PostgreSQL. The demo program has no panel (its review
tests walk every stage with reviewers), so these reviews carry one in their input, as a program with
``[tiers.specialized_new.panels.provincial]`` would give them."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from services.applications import panels
from services.applications.models import Application, Transition
from services.applications.panel_models import Expert, ExpertConflict, Panel, PanelAssignment
from services.applications.panel_schemas import ScoreBody, VoteBody
from services.applications.service import review_input
from services.auth import CurrentUser, Role
from services.contracts import PanelPolicy, ReviewState
from services.errors import Conflict, NotFound, Unprocessable
from services.programs import load_program_file
from tests.support.factories import random_uscc
from tests.workflows.conftest import Harness
from tests.workflows.test_review_paths import decide, in_review, record, reviewer

PROGRAMS = Path(__file__).resolve().parents[2] / "programs"
APPLICANT_REGION = "500103"  # Chongqing: experts of province 50 are never drawn
OTHER_REGIONS = ["110105", "310104", "440305", "330106", "320102"]


def expert(expert_id: str) -> CurrentUser:
    return CurrentUser(sub=f"user-{expert_id}", role=Role.expert, expert_id=expert_id)


@pytest.fixture
async def pool(harness: Harness) -> list[str]:
    """A fresh pool: five experts of other provinces (``far-0`` .. ``far-4``) and two of the applicant's."""
    async with harness.sessionmaker.begin() as session:
        for table in (PanelAssignment, Panel, ExpertConflict, Expert):
            await session.execute(delete(table))
        far = [f"far-{i}" for i in range(len(OTHER_REGIONS))]
        for expert_id, region in zip(far, OTHER_REGIONS, strict=True):
            session.add(Expert(expert_id=expert_id, name=expert_id, region_code=region, fields=[]))
        for i in range(2):
            session.add(Expert(expert_id=f"near-{i}", name=f"near-{i}", region_code="500000", fields=[]))
    return far


async def start(
    harness: Harness, policy: PanelPolicy, *, uscc: str | None = None
) -> tuple[Application, WorkflowHandle[Any, ReviewState]]:
    """A specialized_new review whose provincial stage is a panel's; past the municipal stage."""
    application = await harness.seed(uscc=uscc)
    data = review_input(application, harness.resources.programs[application.program])
    data = data.model_copy(update={"panels": {"provincial": policy}})
    handle = await harness.env.client.start_workflow(
        "ReviewWorkflow",
        data,
        id=f"review-{application.id}",
        task_queue=harness.task_queue,
        result_type=ReviewState,
    )
    await in_review(harness, handle, "municipal")
    await decide(handle, reviewer("municipal"), "approve")
    await in_review(harness, handle, "provincial")
    return application, handle


async def sitting(harness: Harness, application_id: uuid.UUID) -> tuple[Panel, dict[str, uuid.UUID]]:
    """The application's panel once drawn, and its seats by expert."""
    for _ in range(200):
        async with harness.sessionmaker() as session:
            panel = await session.scalar(select(Panel).where(Panel.application_id == application_id))
            if panel is not None:
                seats = await session.scalars(
                    select(PanelAssignment).where(PanelAssignment.panel_id == panel.id)
                )
                return panel, {s.expert_id: s.id for s in seats}
        await asyncio.sleep(0.05)
    raise AssertionError("no panel was drawn")


async def answer(harness: Harness, expert_id: str, seat: uuid.UUID, **body: Any) -> Any:
    async with harness.sessionmaker.begin() as session:
        return await panels.score(
            session,
            harness.env.client,
            user=expert(expert_id),
            key=None,
            assignment_id=seat,
            data=ScoreBody(**body) if "score" in body else VoteBody(**body),
        )


async def actions(harness: Harness, application_id: uuid.UUID) -> list[tuple[str, str | None, str | None]]:
    async with harness.sessionmaker() as session:
        rows = await session.scalars(
            select(Transition).where(Transition.application_id == application_id).order_by(Transition.id)
        )
        return [(t.action, t.stage, t.reason) for t in rows]


# --- the draw -------------------------------------------------------------------------------------------


def test_draw_is_deterministic_and_excludes_own_province_and_conflicts() -> None:
    pool = [
        {"expert_id": f"e{i}", "region_code": region, "conflict": i == 3}
        for i, region in enumerate(["110105", "500000", "500103", "310104", "440305", "330106", "320102"])
    ]
    chosen = panels.draw("seed-1", 3, pool, "500230")
    assert chosen is not None
    assert len(set(chosen)) == 3
    assert not {"e1", "e2", "e3"} & set(chosen)  # province 50, and the conflicted one
    assert (
        panels.draw("seed-1", 3, list(reversed(pool)), "500230") == chosen
    )  # the pool's order is irrelevant
    assert {tuple(panels.draw(f"seed-{i}", 3, pool, "500230") or []) for i in range(20)} != {tuple(chosen)}
    assert panels.draw("seed-1", 5, pool, "500230") is None  # four eligible


def test_verdict_rules_at_their_edges() -> None:
    average = panels.verdict("average_score", 70, panels.Answers(size=3, scores=[70, 70, 70], votes=[]))
    assert average.decision == "approve"
    assert "70.00 >= 70" in average.reason
    below = panels.verdict("average_score", 70, panels.Answers(size=3, scores=[70, 70, 69], votes=[]))
    assert below.decision == "reject"
    tie = panels.verdict("majority", None, panels.Answers(size=4, scores=[], votes=["approve", "reject"] * 2))
    assert tie.decision == "reject"
    assert "a tie rejects" in tie.reason
    majority = panels.verdict(
        "majority", None, panels.Answers(size=3, scores=[], votes=["approve", "approve"])
    )
    assert majority.decision == "approve"
    assert "1 absent" in majority.reason
    no_quorum = panels.verdict("average_score", 70, panels.Answers(size=5, scores=[90, 90], votes=[]))
    assert no_quorum.decision is None


def test_national_little_giants_are_judged_by_a_panel() -> None:
    for name in ("national.toml", "chongqing-2020.toml"):
        program = load_program_file(PROGRAMS / name)
        panel = program.tiers["little_giant"].panels["national"]  # type: ignore[index]
        assert (panel.size, panel.rule, panel.pass_score) == (5, "average_score", 70)
    demo = load_program_file(PROGRAMS / "demo.toml")
    assert all(not tier.panels for tier in demo.tiers.values())


def test_a_panel_policy_is_validated(tmp_path: Path) -> None:
    text = (PROGRAMS / "demo.toml").read_text()
    for bad in (
        '[tiers.specialized_new.panels.national]\nsize = 3\nrule = "majority"\n',  # not a level of the tier
        '[tiers.specialized_new.panels.provincial]\nsize = 3\nrule = "majority"\npass_score = 70\n',
        '[tiers.specialized_new.panels.provincial]\nsize = 0\nrule = "average_score"\npass_score = 70\n',
    ):
        path = tmp_path / "demo.toml"
        path.write_text(text.replace("[tiers.little_giant]", bad + "\n[tiers.little_giant]"))
        with pytest.raises(ValueError, match="panels"):
            load_program_file(path)


# --- panels in the review ------------------------------------------------------------------------------


async def test_panel_drawn_blind_and_decides_at_exactly_the_pass_score(
    harness: Harness, pool: list[str]
) -> None:
    uscc = random_uscc(APPLICANT_REGION)
    async with harness.sessionmaker.begin() as session:
        session.add(ExpertConflict(expert_id="far-0", uscc=uscc, declared_by="far-0"))
    policy = PanelPolicy(size=3, rule="average_score", pass_score=70)
    application, handle = await start(harness, policy, uscc=uscc)
    panel, seats = await sitting(harness, application.id)

    # the draw: none of the applicant's province, not the conflicted expert; reproducible from its seed
    assert set(seats) <= {"far-1", "far-2", "far-3", "far-4"}
    assert len(seats) == 3
    assert panels.draw(panel.seed, panel.size, panel.pool, panel.applicant_region) == panel.chosen
    assert sorted(panel.chosen) == sorted(seats)
    assert {e["expert_id"]: e["conflict"] for e in panel.pool}["far-0"] is True
    async with harness.sessionmaker() as session:
        audit = await panels.list_panels(
            session, user=CurrentUser(sub="a", role=Role.admin), application_id=application.id
        )
    (drawn,) = audit.items
    assert panels.draw(drawn.seed, drawn.size, drawn.pool, drawn.applicant_region) == drawn.chosen
    assert {s.expert_id for s in drawn.seats} == set(seats)

    # blind: the figures, never the enterprise's name, USCC, region or the application's id
    first, seat = next(iter(seats.items()))
    async with harness.sessionmaker() as session:
        blind = await panels.blind_file(session, user=expert(first), assignment_id=seat)
        text = json.dumps(blind.model_dump(mode="json"))
        for secret in (application.uscc, f"Enterprise {application.uscc}", str(application.id), "500103"):
            assert secret not in text
        assert blind.metrics == application.metrics
        listed = await panels.list_assignments(session, user=expert(first), cursor=None, limit=10)
        assert [a.id for a in listed.items] == [seat]
        with pytest.raises(NotFound):  # not on this panel
            await panels.blind_file(session, user=expert("near-0"), assignment_id=seat)

    # a reviewer cannot decide while the panel sits
    with pytest.raises(WorkflowUpdateFailedError):
        await decide(handle, reviewer("provincial", "500000"), "approve")
    with pytest.raises(NotFound):  # another expert's seat
        await answer(harness, "near-0", seat, score=90)
    with pytest.raises(Unprocessable):  # this panel scores, it does not vote
        await answer(harness, first, seat, vote="approve")
    scored = await answer(harness, first, seat, score=70)
    assert (scored.answered, scored.size) == (1, 3)
    with pytest.raises(Conflict):  # once
        await answer(harness, first, seat, score=99)
    for expert_id, other in list(seats.items())[1:]:
        await answer(harness, expert_id, other, score=70)

    state = await harness.wait_state(handle, lambda s: s.status != "in_review")
    assert state.status == "public_notice"
    action, stage, reason = (await actions(harness, application.id))[-1]
    assert (action, stage) == ("approved", "provincial")
    assert reason is not None
    assert "average score 70.00 >= 70" in reason
    await record(handle, "panel-approved-at-pass-score")


async def test_majority_tie_rejects(harness: Harness, pool: list[str]) -> None:
    application, handle = await start(harness, PanelPolicy(size=2, rule="majority"))
    _, seats = await sitting(harness, application.id)
    (a, seat_a), (b, seat_b) = seats.items()
    await answer(harness, a, seat_a, vote="approve")
    await answer(harness, b, seat_b, vote="reject")
    result = await handle.result()
    assert result.status == "rejected"
    reason = (await actions(harness, application.id))[-1][2]
    assert reason is not None
    assert "1 approve, 1 reject votes (a tie rejects)" in reason
    await record(handle, "panel-majority-tie-rejected")


async def test_sla_lapse_records_absentees_and_the_answers_decide(harness: Harness, pool: list[str]) -> None:
    application, handle = await start(harness, PanelPolicy(size=3, rule="average_score", pass_score=70))
    _, seats = await sitting(harness, application.id)
    (a, seat_a), (b, seat_b), (_, seat_c) = seats.items()
    await answer(harness, a, seat_a, score=80)
    await answer(harness, b, seat_b, score=64)
    await harness.env.sleep(timedelta(seconds=61))  # the stage's SLA (demo: PT60S)
    state = await harness.wait_state(handle, lambda s: s.status != "in_review")
    assert state.status == "public_notice"  # 72.00 of the two who answered
    async with harness.sessionmaker() as session:
        absent = await session.get(PanelAssignment, seat_c)
        assert absent is not None
        assert absent.status == "absent"
    reason = (await actions(harness, application.id))[-1][2]
    assert reason is not None
    assert "2 of 3 experts answered, 1 absent" in reason
    await record(handle, "panel-sla-absentee")


async def test_no_quorum_at_the_sla_escalates_to_the_backup_group(harness: Harness, pool: list[str]) -> None:
    application, handle = await start(harness, PanelPolicy(size=3, rule="majority"))
    _, seats = await sitting(harness, application.id)
    (a, seat_a), *_ = seats.items()
    await answer(harness, a, seat_a, vote="approve")
    await harness.env.sleep(timedelta(seconds=61))
    state = await harness.wait_state(handle, lambda s: s.overdue)
    assert state.status == "in_review"
    async with harness.sessionmaker() as session:
        panel = await session.scalar(select(Panel).where(Panel.application_id == application.id))
        assert panel is not None
        assert panel.status == "no_quorum"
    group = harness.resources.programs[application.program].escalation_group
    backup = reviewer("municipal", "110100").model_copy(update={"groups": [group]})
    state = await decide(handle, backup, "approve")
    assert state.status == "public_notice"
    await record(handle, "panel-no-quorum-escalated")


async def test_too_few_eligible_experts_leave_the_stage_to_its_reviewers(
    harness: Harness, pool: list[str]
) -> None:
    application, handle = await start(harness, PanelPolicy(size=6, rule="majority"))  # five eligible
    for _ in range(100):
        async with harness.sessionmaker() as session:
            panel = await session.scalar(select(Panel).where(Panel.application_id == application.id))
        if panel is not None:
            break
        await asyncio.sleep(0.05)
    assert panel is not None
    assert panel.status == "too_few_experts"
    assert panel.reason is not None
    assert "only 5 of 7 experts" in panel.reason
    state = await decide(handle, reviewer("provincial", "500000"), "approve")
    assert state.status == "public_notice"
    await record(handle, "panel-too-few-experts")
