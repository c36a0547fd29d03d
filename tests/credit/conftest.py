"""Fixtures of the credit tests: a test program folder, the bank simulator served by uvicorn on a free port,
and helpers that open credit lines on committed data (unique USCCs and recognition ids per test)."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle

from devtools.banksim import create_bank_app
from devtools.devstack import free_port
from services.auth import CurrentUser, Role
from services.config import Settings
from services.contracts import BenefitGrant
from services.credit import payouts, repository, service
from services.credit.schemas import DrawdownCreate, ListFilters
from services.db import create_sessionmaker
from services.resources import Resources
from tests.conftest import bearer, make_token
from tests.support.resources import borrowing
from tests.support.servers import loopback_server
from workflows.benefits import BenefitsWorkflow
from workflows.credit_activities import CreditActivities
from workflows.disbursement import DisbursementWorkflow
from workflows.worker import build_worker

PROGRAMS = Path(__file__).parent / "programs"
HISTORIES = Path(__file__).parent.parent / "workflows" / "histories"
PROGRAM = "credit-test"
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"


@dataclass
class BankSim:
    url: str
    data_dir: Path
    http: httpx.AsyncClient

    async def faults(self, **changes: Any) -> dict[str, Any]:
        response = await self.http.post(f"{self.url}/admin/faults", json=changes)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def calm(self) -> None:
        await self.faults(
            latency_ms=0,
            error_rate=0,
            timeout_rate=0,
            answer_after_commit_error_rate=0,
            duplicate_delivery_rate=0,
            reject_beneficiaries=[],
            hang_seconds=1.5,
            max_faults_per_key=None,
        )

    async def stats(self) -> dict[str, int]:
        result: dict[str, int] = (await self.http.get(f"{self.url}/admin/stats")).json()
        return result

    async def payments_for(self, keys: set[str]) -> list[dict[str, Any]]:
        statement = (await self.http.get(f"{self.url}/statement")).json()
        return [p for p in statement["payments"] if p["key"] in keys]


async def serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = loopback_server(app, port)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "the bank simulator did not start"
    return server, task


@pytest.fixture(scope="session")
async def bank_sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BankSim]:
    """The bank simulator as a real HTTP server (in-process uvicorn) for the whole session."""
    data_dir = tmp_path_factory.mktemp("bank")
    port = free_port()
    server, task = await serve(create_bank_app(data_dir), port)
    async with httpx.AsyncClient(timeout=10.0) as http:
        sim = BankSim(url=f"http://127.0.0.1:{port}", data_dir=data_dir, http=http)
        await sim.calm()
        yield sim
    server.should_exit = True
    await task


@pytest.fixture(scope="session")
def settings(settings: Settings, bank_sim: BankSim) -> Settings:
    """The shared settings with the test program folder and the simulator as the partner bank."""
    return settings.model_copy(update={"programs_dir": PROGRAMS, "bank_url": bank_sim.url})


@pytest.fixture
async def calm_bank(bank_sim: BankSim) -> AsyncIterator[BankSim]:
    await bank_sim.calm()
    yield bank_sim
    await bank_sim.calm()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


def new_uscc() -> str:
    return "91500000" + "".join(random.choice(USCC_CHARS) for _ in range(10))


def enterprise_token(settings: Settings, uscc: str, sub: str | None = None) -> str:
    return make_token(settings, Role.enterprise, sub or f"ent-{uscc}", uscc=uscc)


def auth(settings: Settings, role: str, sub: str | None = None, **claims: Any) -> dict[str, str]:
    return bearer(make_token(settings, role, sub, **claims))


async def open_line(
    sessions: async_sessionmaker[AsyncSession],
    *,
    uscc: str,
    tier: str = "little_giant",
    limit: Decimal = Decimal("3000000.00"),
    recognition_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A committed credit line, opened the way the benefits workflow's activity opens one."""
    recognition_id = await arm(
        sessions, uscc, "credit_line", tier=tier, limit=limit, recognition_id=recognition_id
    )
    async with sessions() as session:
        lines = await repository.list_credit_lines(
            session, filters=ListFilters(uscc=uscc), cursor=None, limit=100
        )
    return next(line.id for line in lines if line.recognition_id == recognition_id)


async def request_drawdown(
    res: Resources, user: CurrentUser, line_id: uuid.UUID, amount: Decimal
) -> uuid.UUID:
    """A drawdown requested through the services as the route requests it: written, committed, then its
    workflow started (services/temporal.py)."""
    async with res.sessionmaker() as session:
        drawdown = await service.request_drawdown(
            session, user=user, line_id=line_id, data=DrawdownCreate(amount=amount), programs=res.programs
        )
        await payouts.start_after_commit(
            session,
            res.temporal,
            kind="drawdown",
            payout_id=drawdown.id,
            task_queue=res.settings.temporal_task_queue,
        )
        await session.commit()
    return drawdown.id


async def arm(
    sessions: async_sessionmaker[AsyncSession],
    uscc: str,
    *kinds: Literal["credit_line", "bridge_loan", "listing_reward"],
    program: str = PROGRAM,
    tier: str = "specialized_new",
    limit: Decimal = Decimal("2000000.00"),
    recognition_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Benefits as the benefits workflow grants them on recognition (a credit line of ``limit``); returns the
    recognition's id."""
    recognition_id = recognition_id or uuid.uuid4()
    async with sessions.begin() as session:
        for kind in kinds:
            await service.grant_benefit(
                session,
                grant=BenefitGrant(
                    recognition_id=str(recognition_id),
                    uscc=uscc,
                    tier=tier,
                    program=program,
                    kind=kind,
                    amount=limit if kind == "credit_line" else None,
                ),
            )
    return recognition_id


@pytest.fixture
async def skipping(time_skipping: Any, settings: Settings, engine: AsyncEngine) -> AsyncIterator[Resources]:
    """A worker for the credit workflows on the time-skipping server, on the real database."""
    queue = f"credit-skip-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient() as http:
        res = borrowing(settings, engine, time_skipping.client, http, task_queue=queue)
        credit = [BenefitsWorkflow, DisbursementWorkflow]
        activities = CreditActivities(res).all()
        async with build_worker(
            time_skipping.client, res, task_queue=queue, workflows=credit, activities=activities
        ):
            yield res


# Payout histories of each generation of the disbursement workflow are kept side by side: "" from before the
# bookkeeping steps became local activities (BOOKKEEPING_LOCAL), "-local-bookkeeping" since.
PAYOUT_GENERATION = "-local-bookkeeping"


async def record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With GIANTFLOW_RECORD_HISTORIES=1, keep this run's history for the replay tests (tests/workflows),
    never overwriting a committed one."""
    suffix = "" if name.startswith("benefits-") else PAYOUT_GENERATION
    path = HISTORIES / f"{name}{suffix}.json"
    if os.environ.get("GIANTFLOW_RECORD_HISTORIES") and not path.exists():
        history = await handle.fetch_history()
        path.write_text(history.to_json())
