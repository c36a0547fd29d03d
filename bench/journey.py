"""An enterprise's way through the public API, step by step, for the benchmarks that need one: register,
upload evidence, submit, pass both review levels and the notice, open the credit line, draw down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from services.auth import Role
from tests.support.factories import strong_metrics

PROGRAM, TIER, BATCH = "bench", "specialized_new", "bench"
DISTRICT, CITY, PROVINCE = "500103", "500100", "500000"
EVIDENCE = ("business_licence", "financial_statements_3y")
PDF = b"%PDF-1.4\n% giantflow benchmark evidence\n"

Token = Callable[..., str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expect(response: httpx.Response, *codes: int) -> Any:
    if response.status_code not in codes:
        raise SystemExit(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:500]}"
        )
    return response.json()


def application_body(uscc: str, evidence: list[str]) -> dict[str, Any]:
    return {"uscc": uscc, "program": PROGRAM, "tier": TIER, "metrics": strong_metrics(), "evidence": evidence}


class Journey:
    def __init__(self, http: httpx.AsyncClient, token: Token, uscc: str) -> None:
        self.http, self.uscc = http, uscc
        self.owner = auth(token(Role.enterprise, f"owner-{uscc}", uscc=uscc))
        self.finance = auth(token(Role.finance, "finance-bench"))
        self.reviewers = {
            "municipal": auth(token(Role.reviewer, "reviewer-m", level="municipal", region=CITY)),
            "provincial": auth(token(Role.reviewer, "reviewer-p", level="provincial", region=PROVINCE)),
        }

    async def submit(self) -> str:
        expect(
            await self.http.post(
                "/api/v1/enterprises",
                headers=self.owner,
                json={
                    "uscc": self.uscc,
                    "name": f"Bench {self.uscc}",
                    "region_code": DISTRICT,
                    "industry": "machinery",
                    "founded_on": "2012-03-01",
                },
            ),
            201,
        )
        evidence = []
        for kind in EVIDENCE:
            document = await self.http.post(
                "/api/v1/documents",
                headers=self.owner,
                data={"kind": kind},
                files={"file": (f"{kind}.pdf", PDF, "application/pdf")},
            )
            evidence.append(expect(document, 201)["id"])
        created = await self.http.post(
            "/api/v1/applications", headers=self.owner, json=application_body(self.uscc, evidence)
        )
        application_id: str = expect(created, 201)["id"]
        return application_id

    async def application(self, application_id: str) -> dict[str, Any]:
        body: dict[str, Any] = expect(
            await self.http.get(f"/api/v1/applications/{application_id}", headers=self.owner), 200
        )
        return body

    async def until(self, what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := await probe()):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)
        return found

    async def wait_status(self, application_id: str, status: str, stage: str | None = None) -> None:
        async def probe() -> bool:
            body = await self.application(application_id)
            return bool(body["status"] == status and (stage is None or body.get("stage") == stage))

        await self.until(f"application {application_id} {status} {stage or ''}", probe)

    async def approve_both_levels(self, application_id: str) -> None:
        await self.wait_status(application_id, "in_review", "municipal")
        for level, headers in self.reviewers.items():
            expect(
                await self.http.post(
                    f"/api/v1/applications/{application_id}/decisions",
                    headers=headers,
                    json={"decision": "approve", "reason": f"{level} review passed"},
                ),
                200,
            )

    async def credit_line(self) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            items = expect(await self.http.get("/api/v1/credit-lines", headers=self.owner), 200)["items"]
            return items[0] if items else None

        line: dict[str, Any] = await self.until("the credit line", probe)
        return line

    async def request_drawdown(self, line_id: str, amount: str) -> str:
        created = await self.http.post(
            f"/api/v1/credit-lines/{line_id}/drawdowns", headers=self.owner, json={"amount": amount}
        )
        drawdown_id: str = expect(created, 201)["id"]
        return drawdown_id

    async def approve_drawdown(self, drawdown_id: str) -> None:
        expect(
            await self.http.post(
                f"/api/v1/drawdowns/{drawdown_id}/approvals",
                headers=self.finance,
                json={"decision": "approve", "reason": "benchmark"},
            ),
            200,
        )

    async def wait_disbursed(self, drawdown_id: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            body = expect(await self.http.get(f"/api/v1/drawdowns/{drawdown_id}", headers=self.owner), 200)
            return body if body["status"] == "disbursed" and body["ledger_entries"] else None

        found: dict[str, Any] = await self.until(f"drawdown {drawdown_id} disbursed", probe)
        return found
