"""The console through ASGITransport on the same app as the API: a signed-in staff member is a client with
the console's session cookie, made by the console's own ``session.encode``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from services.auth import CurrentUser, Role
from services.config import Settings
from services.console import session as sessions

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


class Staff:
    """A signed-in staff member's browser, without the browser: its cookie jar and its CSRF token."""

    def __init__(self, client: httpx.AsyncClient, csrf: str, user: CurrentUser) -> None:
        self.client, self.csrf, self.user = client, csrf, user

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, **kwargs)

    async def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        """A form post as the page sends it: with the session's CSRF token and this origin."""
        form = {"csrf_token": self.csrf, **(data or {})}
        headers = {"Origin": "http://testserver", **kwargs.pop("headers", {})}
        return await self.client.post(path, data=form, headers=headers, **kwargs)


StaffFactory = Callable[..., AbstractAsyncContextManager[Staff]]


@pytest.fixture
def staff(api: httpx.AsyncClient, settings: Settings) -> StaffFactory:
    """``async with staff("reviewer", "rev-1", level="provincial", region="500000") as s``: a console client
    signed in as that caller (the same claims an API token carries)."""
    return signed_in_on(api, settings)


@pytest.fixture
def staff_rollback(api_rollback: httpx.AsyncClient, settings: Settings) -> StaffFactory:
    """``staff`` on the API inside the test's rolled-back transaction (no Temporal): what the test writes
    with the ``session`` fixture, the pages see."""
    return signed_in_on(api_rollback, settings)


def signed_in_on(api: httpx.AsyncClient, settings: Settings) -> StaffFactory:
    transport = api._transport

    @asynccontextmanager
    async def signed_in(role: str, sub: str, **claims: Any) -> AsyncIterator[Staff]:
        user = CurrentUser.model_validate({"role": Role(role), "sub": sub, **claims})
        value, session = sessions.encode(settings, user)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", cookies={sessions.COOKIE: value}
        ) as client:
            yield Staff(client, session.csrf, user)

    return signed_in


def csrf_of(page: str) -> str:
    found = CSRF_FIELD.search(page)
    assert found, "the page carries no CSRF token"
    return found.group(1)
