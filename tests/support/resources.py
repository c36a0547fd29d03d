"""The service's ``Resources`` for a test, over parts the test (or a fixture) owns and closes itself."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from services.config import Settings
from services.db import create_sessionmaker
from services.resources import Resources


def borrowing(
    settings: Settings,
    engine: AsyncEngine,
    temporal: Client,
    http: httpx.AsyncClient,
    *,
    task_queue: str | None = None,
) -> Resources:
    """Resources on ``engine``, ``temporal`` and ``http`` that close none of them (``owns=False``); with
    ``task_queue``, the settings' queue is that one (where a worker of the test's own runs the workflows)."""
    if task_queue is not None:
        settings = settings.model_copy(update={"temporal_task_queue": task_queue})
    return Resources(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        temporal=temporal,
        http=http,
        owns=False,
    )
