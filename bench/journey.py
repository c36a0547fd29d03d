"""An enterprise's way through the public API, step by step, for the benchmarks and the chaos run that need
one: register, upload evidence, submit, pass both review levels and the notice, open the credit line, draw
down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Protocol

import httpx

from devtools.seeding import strong_metrics
from services.auth import Role

PROGRAM, TIER, BATCH = "bench", "specialized_new", "bench"
DISTRICT, CITY, PROVINCE = "500103", "500100", "500000"
EVIDENCE = ("business_licence", "financial_statements_3y")
PDF = b"%PDF-1.4\n% giantflow benchmark evidence\n"
ENDED = ("ineligible", "rejected", "withdrawn")

Token = Callable[..., str]


class Send(Protocol):
    """One call to the API (``path`` below ``/api/v1``) as ``token``'s holder; None: no answer came."""

    def __call__(
        self,
        method: str,
        path: str,
        token: str,
        *,
        key: str | None = None,
        json: Any = None,
        data: Any = None,
        files: Any = None,
    ) -> Awaitable[httpx.Response | None]: ...


class JourneyError(RuntimeError):
    """A step got an answer the journey cannot go on from (or none in time); the message says which."""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def describe(response: httpx.Response) -> str:
    return (
        f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:500]}"
    )


def application_body(uscc: str, evidence: list[str], program: str = PROGRAM) -> dict[str, Any]:
    return {"uscc": uscc, "program": program, "tier": TIER, "metrics": strong_metrics(), "evidence": evidence}


class Journey:
    """One enterprise's calls. By default each is sent once through ``http`` (its base URL is the API's);
    ``send`` replaces that (bench/chaos.py retries with the same Idempotency-Key over several APIs).
    ``timeout`` bounds each wait, ``poll`` is the pause between two looks."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        token: Token,
        uscc: str,
        *,
        program: str = PROGRAM,
        send: Send | None = None,
        timeout: float = 60.0,
        poll: float = 0.02,
    ) -> None:
        self.http, self.uscc, self.program = http, uscc, program
        self.send: Send = send or self._send_once
        self.timeout, self.poll = timeout, poll
        self.owner = token(Role.enterprise, f"owner-{uscc}", uscc=uscc)
        self.finance = token(Role.finance, f"finance-{program}")
        self.reviewers = {
            "municipal": token(Role.reviewer, "reviewer-m", level="municipal", region=CITY),
            "provincial": token(Role.reviewer, "reviewer-p", level="provincial", region=PROVINCE),
        }

    async def _send_once(
        self, method: str, path: str, token: str, *, key: str | None = None, **request: Any
    ) -> httpx.Response:
        headers = auth(token) | ({"Idempotency-Key": key} if key is not None else {})
        return await self.http.request(method, f"/api/v1{path}", headers=headers, **request)

    def fail(self, what: str) -> NoReturn:
        raise JourneyError(f"enterprise {self.uscc}: {what}")

    async def call(
        self, method: str, path: str, token: str, *codes: int, key: str | None = None, **request: Any
    ) -> Any:
        """The JSON body of the answer, which must have one of ``codes``."""
        response = await self.send(method, path, token, key=key, **request)
        if response is None:
            self.fail(f"{method} {path}: no answer")
        if response.status_code not in codes:
            self.fail(describe(response))
        return response.json()

    async def submit(self) -> str:
        await self.call(
            "POST",
            "/enterprises",
            self.owner,
            201,
            key=f"reg-{self.uscc}",
            json={
                "uscc": self.uscc,
                "name": f"{self.program.capitalize()} {self.uscc}",
                "region_code": DISTRICT,
                "industry": "machinery",
                "founded_on": "2012-03-01",
            },
        )
        evidence = []
        for kind in EVIDENCE:
            document = await self.call(
                "POST",
                "/documents",
                self.owner,
                201,
                data={"kind": kind},
                files={"file": (f"{kind}.pdf", PDF, "application/pdf")},
            )
            evidence.append(document["id"])
        created = await self.call(
            "POST",
            "/applications",
            self.owner,
            201,
            key=f"apply-{self.uscc}",
            json=application_body(self.uscc, evidence, self.program),
        )
        application_id: str = created["id"]
        return application_id

    async def application(self, application_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.call("GET", f"/applications/{application_id}", self.owner, 200)
        return body

    async def until(self, what: str, probe: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.timeout
        while not (found := await probe()):
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            await asyncio.sleep(self.poll)
        return found

    async def wait_status(self, application_id: str, status: str, stage: str | None = None) -> None:
        async def probe() -> bool:
            body = await self.application(application_id)
            if body["status"] in ENDED and body["status"] != status:
                self.fail(f"application {application_id} ended {body['status']}")
            return bool(body["status"] == status and (stage is None or body.get("stage") == stage))

        await self.until(f"application {application_id} {status} {stage or ''}", probe)

    async def approve_both_levels(self, application_id: str) -> None:
        await self.wait_status(application_id, "in_review", "municipal")
        for level, reviewer in self.reviewers.items():
            await self.call(
                "POST",
                f"/applications/{application_id}/decisions",
                reviewer,
                200,
                json={"decision": "approve", "reason": f"{level} review passed"},
            )

    async def credit_line(self) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            items = (await self.call("GET", "/credit-lines", self.owner, 200))["items"]
            return items[0] if items else None

        line: dict[str, Any] = await self.until("the credit line", probe)
        return line

    async def to_credit_line(self) -> dict[str, Any]:
        """The whole way to a credit line: register, apply, both reviews, the notice, recognition and the line
        the benefits workflow opens."""
        application_id = await self.submit()
        await self.approve_both_levels(application_id)
        return await self.credit_line()

    async def request_drawdown(self, line_id: str, amount: str) -> str:
        created = await self.call(
            "POST", f"/credit-lines/{line_id}/drawdowns", self.owner, 201, json={"amount": amount}
        )
        drawdown_id: str = created["id"]
        return drawdown_id

    async def approve_drawdown(self, drawdown_id: str) -> None:
        await self.call(
            "POST",
            f"/drawdowns/{drawdown_id}/approvals",
            self.finance,
            200,
            json={"decision": "approve", "reason": "benchmark"},
        )

    async def wait_disbursed(self, drawdown_id: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            body = await self.call("GET", f"/drawdowns/{drawdown_id}", self.owner, 200)
            return body if body["status"] == "disbursed" and body["ledger_entries"] else None

        found: dict[str, Any] = await self.until(f"drawdown {drawdown_id} disbursed", probe)
        return found
