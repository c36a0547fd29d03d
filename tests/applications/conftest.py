"""API helpers for the applications domain."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.config import Settings
from services.programs import load_programs
from services.resources import Resources
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, strong_metrics

PROGRAMS = Path(__file__).resolve().parents[2] / "programs"


@pytest.fixture
def fast_programs(resources: Resources, tmp_path: Path) -> None:
    """The demo program with a 2-second notice period, so an HTTP test can watch it pass."""
    text = (PROGRAMS / "demo.toml").read_text().replace('notice_period = "PT20S"', 'notice_period = "PT2S"')
    (tmp_path / "demo.toml").write_text(text)
    resources._programs = load_programs(tmp_path)


@dataclass
class Applicant:
    api: httpx.AsyncClient
    settings: Settings
    uscc: str
    region: str = "500103"

    @property
    def headers(self) -> dict[str, str]:
        return bearer(make_token(self.settings, "enterprise", f"user-{self.uscc}", uscc=self.uscc))

    async def register(self) -> httpx.Response:
        return await self.api.post(
            "/api/v1/enterprises",
            headers=self.headers,
            json={
                "uscc": self.uscc,
                "name": f"Enterprise {self.uscc}",
                "region_code": self.region,
                "industry": "machinery",
                "founded_on": "2012-03-01",
            },
        )

    async def upload(
        self, kind: str, content: bytes = b"%PDF-1.4 evidence", ctype: str = "application/pdf"
    ) -> httpx.Response:
        return await self.api.post(
            "/api/v1/documents",
            headers=self.headers,
            data={"kind": kind},
            files={"file": (f"{kind}.pdf", content, ctype)},
        )

    async def evidence(self, *kinds: str) -> list[str]:
        ids = []
        for kind in kinds:
            resp = await self.upload(kind)
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["id"])
        return ids

    async def submit(
        self,
        *,
        tier: str = "specialized_new",
        evidence: list[str] | None = None,
        metrics: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> httpx.Response:
        if evidence is None:
            evidence = await self.evidence("business_licence", "financial_statements_3y")
        headers = dict(self.headers)
        if key:
            headers["Idempotency-Key"] = key
        return await self.api.post(
            "/api/v1/applications",
            headers=headers,
            json={
                "uscc": self.uscc,
                "program": "demo",
                "tier": tier,
                "metrics": metrics or strong_metrics(),
                "evidence": evidence,
            },
        )


@pytest.fixture
def applicant(api: httpx.AsyncClient, settings: Settings) -> Applicant:
    return Applicant(api=api, settings=settings, uscc=random_uscc("500103"))


def reviewer_headers(settings: Settings, level: str, region: str = "500000") -> dict[str, str]:
    return bearer(make_token(settings, "reviewer", f"{level}-{region}", level=level, region=region))


async def poll(
    api: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await api.get(url, headers=headers)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if until(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url} never matched: {body}")
        await asyncio.sleep(0.1)


def new_id() -> str:
    return str(uuid.uuid4())
