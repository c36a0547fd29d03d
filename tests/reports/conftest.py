"""The reports tests' app: the shipped programs and the reports' own (tests/reports/programs/), whose
applications only these tests write, so a report's exact counts hold whatever the session's other tests
committed under the shipped programs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from services.config import Settings
from services.programs import load_programs
from services.resources import Resources
from tests.conftest import rollback_resources, served

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = {**load_programs(ROOT / "programs"), **load_programs(Path(__file__).parent / "programs")}


@pytest.fixture
async def api_rollback(settings: Settings, connection: AsyncConnection) -> AsyncIterator[httpx.AsyncClient]:
    """tests/conftest.py's ``api_rollback``, answering with PROGRAMS."""
    from services.app import create_app

    build = rollback_resources(connection)

    async def factory(s: Settings) -> Resources:
        resources = await build(s)
        resources._programs = PROGRAMS
        return resources

    async with served(create_app(settings, resources_factory=factory)) as client:
        yield client
