"""The access-control matrix: every operation in the OpenAPI document x every kind of caller, each cell the
status the contract requires (API.md), on real objects built through the API first.

- 401 without a token or with a forged one; 403 for a wrong role (checked before any lookup, so it says
  nothing about ids); 404 for an object that is not yours (never reveal existence); the review rules' 403
  for a reviewer of another level or region *deciding* an application (workflows/review.py validators).
- A 2xx on a list must contain the target object for the callers who may see it and must not for others
  (`sees`): a 200 that leaks other enterprises' rows is a failure too.
- A new operation without a row fails the test, as does a row for an operation that no longer exists.

Add a row per new endpoint to ROWS (and, if it needs one, an object to BUILDERS). Cells that succeed run
after the refusals of their row; a row that `consumes` its target gets a fresh object for each success."""

from __future__ import annotations

import asyncio
import json
import tomllib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.config import Settings
from services.programs import load_programs
from services.resources import Resources
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, strong_metrics

PROGRAMS = Path(__file__).resolve().parents[2] / "programs"
DEMO_TOML = (PROGRAMS / "demo.toml").read_text(encoding="utf-8")
API = "/api/v1"
REGION = "500230"  # every enterprise of the matrix; reviewers below are placed around it

# --- callers ------------------------------------------------------------------------------------------

CALLERS: dict[str, str] = {
    "anon": "no token",
    "forged": "a token signed with another secret",
    "own": "enterprise, on its own object",
    "other": "enterprise, on another enterprise's object",
    "rev": "reviewer in region, right level (municipal 500200)",
    "rev_lvl": "reviewer in region, wrong level (provincial 500000)",
    "rev_out": "reviewer out of region, right level (municipal 110100)",
    "rev_out_lvl": "reviewer out of region, wrong level (provincial 110000)",
    "fin": "finance",
    "fin_self": "finance, the requester of the object (maker-checker)",
    "admin": "admin",
    "expert": "panel expert, the target's seat's (a token good for the panel endpoints only)",
}
REVIEWERS = {
    "rev": ("municipal", "500200"),
    "rev_lvl": ("provincial", "500000"),
    "rev_out": ("municipal", "110100"),
    "rev_out_lvl": ("provincial", "110000"),
}


def expect(
    default: int, *, public: bool = False, reviewers: int | None = None, **cells: int
) -> dict[str, int]:
    """A row's cells: `default` for every authenticated caller unless overridden; 401 without a valid
    token unless `public`; `reviewers` sets all four reviewers; `fin_self` follows `fin` unless given; an
    expert, whose token opens the panel endpoints only, 403 unless given (or `public`)."""
    table = dict.fromkeys(CALLERS, default)
    table["anon"] = table["forged"] = default if public else 401
    table["expert"] = default if public else 403
    if reviewers is not None:
        table.update(dict.fromkeys(REVIEWERS, reviewers))
    table.update(cells)
    if "fin_self" not in cells:
        table["fin_self"] = table["fin"]
    return table


# --- objects ------------------------------------------------------------------------------------------


@dataclass
class Obj:
    """A real object and its owner: `ids` fills the path parameters of the rows that target it."""

    uscc: str
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def owner_sub(self) -> str:
        return f"user-{self.uscc}"


@dataclass
class World:
    api: httpx.AsyncClient
    settings: Settings
    other: Obj
    pools: dict[str, list[Obj]] = field(default_factory=dict)
    resources: Resources | None = None  # for what only the worker makes (a webhook delivery: the relay)

    def token(self, caller: str, target: Obj) -> dict[str, str]:
        s = self.settings
        if caller == "anon":
            return {}
        if caller == "forged":
            forged = s.model_copy(update={"jwt_secret": SecretStr("another-secret-0123456789-0123456789")})
            return bearer(make_token(forged, "admin", "forger"))
        if caller == "own":
            return self.owner(target)
        if caller == "other":
            return self.owner(self.other)
        if caller in REVIEWERS:
            level, region = REVIEWERS[caller]
            return bearer(make_token(s, "reviewer", f"{caller}-{region}", level=level, region=region))
        if caller == "expert":
            expert_id = target.ids.get("expert_id", "matrix-expert")
            return bearer(make_token(s, "expert", f"user-{expert_id}", expert_id=expert_id))
        if caller == "fin_self":
            return bearer(make_token(s, "finance", target.owner_sub))
        if caller == "fin":
            return bearer(make_token(s, "finance", "finance-matrix"))
        return bearer(make_token(s, "admin", "admin-matrix"))

    def owner(self, obj: Obj) -> dict[str, str]:
        return bearer(make_token(self.settings, "enterprise", obj.owner_sub, uscc=obj.uscc))

    def twin(self, obj: Obj) -> dict[str, str]:
        """Another enterprise (`other`) whose token carries the same `sub` as `obj`'s owner: a careless
        identity provider, or two tenants of one, can hand out the same subject twice."""
        return bearer(make_token(self.settings, "enterprise", obj.owner_sub, uscc=self.other.uscc))

    @property
    def admin(self) -> dict[str, str]:
        return bearer(make_token(self.settings, "admin", "admin-matrix"))


async def ok(resp: Awaitable[httpx.Response], status: int = 200) -> dict[str, Any]:
    r = await resp
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    body: dict[str, Any] = r.json()
    return body


async def until(world: World, url: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    for _ in range(300):
        body = await ok(world.api.get(url, headers=world.admin))
        if check(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never got there: {body}")


async def enterprise(world: World) -> Obj:
    """Registered, with the evidence the demo tiers need uploaded; no application yet."""
    obj = Obj(uscc=random_uscc(REGION))
    headers = world.owner(obj)
    await ok(
        world.api.post(
            f"{API}/enterprises",
            headers=headers,
            json={
                "uscc": obj.uscc,
                "name": f"Matrix {obj.uscc}",
                "region_code": REGION,
                "industry": "machinery",
                "founded_on": "2012-03-01",
            },
        ),
        201,
    )
    documents = []
    for kind in ("business_licence", "financial_statements_3y"):
        doc = await ok(
            world.api.post(
                f"{API}/documents",
                headers=headers,
                data={"kind": kind},
                files={"file": (f"{kind}.pdf", b"%PDF-1.4 " + uuid.uuid4().bytes, "application/pdf")},
            ),
            201,
        )
        documents.append(doc["id"])
    obj.ids.update(uscc=obj.uscc, evidence=",".join(documents), document_id=documents[0])
    return obj


def application_body(obj: Obj, program: str = "demo") -> dict[str, Any]:
    return {
        "uscc": obj.uscc,
        "program": program,
        "tier": "specialized_new",
        "metrics": strong_metrics(),
        "evidence": obj.ids["evidence"].split(","),
    }


async def in_review(world: World, program: str = "demo") -> Obj:
    obj = await enterprise(world)
    created = await ok(
        world.api.post(f"{API}/applications", headers=world.owner(obj), json=application_body(obj, program)),
        201,
    )
    obj.ids["application_id"] = created["id"]
    body = await until(world, f"{API}/applications/{created['id']}", lambda b: b["status"] == "in_review")
    obj.ids["task_id"] = body["task"]["id"]
    return obj


async def draft(world: World) -> Obj:
    """A complete draft (``"submit": false``): no review, its enterprise's and the admins' alone."""
    obj = await enterprise(world)
    body = {**application_body(obj), "submit": False}
    created = await ok(world.api.post(f"{API}/applications", headers=world.owner(obj), json=body), 201)
    obj.ids["application_id"] = created["id"]
    return obj


async def decide(world: World, obj: Obj, reviewer: str, decision: str) -> dict[str, Any]:
    return await ok(
        world.api.post(
            f"{API}/applications/{obj.ids['application_id']}/decisions",
            headers=world.token(reviewer, obj),
            json={"decision": decision, "reason": "matrix set-up"},
        )
    )


async def returned(world: World) -> Obj:
    obj = await in_review(world)
    await decide(world, obj, "rev", "return")
    return obj


async def on_notice(world: World, program: str = "demo") -> Obj:
    obj = await in_review(world, program)
    await decide(world, obj, "rev", "approve")
    state = await decide(world, obj, "rev_lvl", "approve")
    assert state["status"] == "public_notice", state
    return obj


async def objection(world: World) -> Obj:
    notice = world.pools["notice"][0]
    filed = await ok(
        world.api.post(
            f"{API}/applications/{notice.ids['application_id']}/objections",
            headers=world.admin,
            json={"reason": "matrix set-up"},
        ),
        201,
    )
    return Obj(uscc=notice.uscc, ids={**notice.ids, "objection_id": filed["objection_id"]})


async def recognized(world: World) -> Obj:
    """Recognised under the 1-second-notice program; its benefits opened a credit line and armed a bridge
    loan and a listing reward."""
    obj = await on_notice(world, "matrix-fast")
    await until(
        world, f"{API}/applications/{obj.ids['application_id']}", lambda b: b["status"] == "recognized"
    )
    recognitions = await ok(
        world.api.get(f"{API}/recognitions", params={"uscc": obj.uscc}, headers=world.admin)
    )
    obj.ids["recognition_id"] = recognitions["items"][0]["id"]
    obj.ids["certificate_no"] = recognitions["items"][0]["certificate_no"]
    wanted = {"credit_line", "bridge_loan", "listing_reward"}  # what the demo tier's recognition triggers
    await until(world, f"{API}/benefits?uscc={obj.uscc}", lambda b: wanted <= {i["kind"] for i in b["items"]})
    lines = await ok(world.api.get(f"{API}/credit-lines", params={"uscc": obj.uscc}, headers=world.admin))
    obj.ids["line_id"] = lines["items"][0]["id"]
    obj.ids["program"] = "matrix-fast"  # its bridge fund
    return obj


async def drawdown(world: World) -> Obj:
    line = world.pools["recognition"][0]
    created = await ok(
        world.api.post(
            f"{API}/credit-lines/{line.ids['line_id']}/drawdowns",
            headers=world.owner(line),
            json={"amount": "1000.00"},
        ),
        201,
    )
    return Obj(uscc=line.uscc, ids={**line.ids, "drawdown_id": created["id"]})


async def bridge_loan(world: World) -> Obj:
    """A bridge loan awaiting approval (the matrix has no bank, so none is ever paid out)."""
    owner = world.pools["recognition"][0]
    created = await ok(
        world.api.post(
            f"{API}/bridge-loans",
            headers=world.owner(owner),
            json={"amount": "1000.00", "term_days": 10, "purpose": "matrix"},
        ),
        201,
    )
    return Obj(uscc=owner.uscc, ids={**owner.ids, "loan_id": created["id"]})


async def listing_reward(world: World) -> Obj:
    """The incubation board's reward awaiting approval: once per enterprise and board, so one object."""
    owner = world.pools["recognition"][0]
    created = await ok(
        world.api.post(
            f"{API}/enterprises/{owner.uscc}/listings",
            headers=world.owner(owner),
            json={
                "board": "incubation",
                "listed_on": str(date.today() - timedelta(days=30)),
                "security_code": "873002",
            },
        ),
        201,
    )
    return Obj(uscc=owner.uscc, ids={**owner.ids, "reward_id": created["id"]})


PANEL_LOCK = asyncio.Lock()


async def panel_seat(world: World) -> Obj:
    """An application whose provincial stage (program `matrix-panel`: a one-expert panel that votes) is at its
    panel, and the expert drawn onto it: one registered for it, every other expert of the pool declared in
    conflict with the applicant first, so that the draw can pick nobody else."""
    async with PANEL_LOCK:
        obj = await enterprise(world)
        expert_id = f"matrix-{uuid.uuid4().hex[:10]}"
        body = {"expert_id": expert_id, "name": "Matrix expert", "region_code": "110105"}
        await ok(world.api.post(f"{API}/experts", headers=world.admin, json=body), 201)
        experts = await ok(world.api.get(f"{API}/experts", headers=world.admin, params={"limit": "200"}))
        assert experts["next_cursor"] is None, "the matrix expects a small pool"
        for other in experts["items"]:
            if other["expert_id"] != expert_id:
                await ok(
                    world.api.post(
                        f"{API}/experts/{other['expert_id']}/conflicts",
                        headers=world.admin,
                        json={"uscc": obj.uscc},
                    ),
                    201,
                )
        created = await ok(
            world.api.post(
                f"{API}/applications", headers=world.owner(obj), json=application_body(obj, "matrix-panel")
            ),
            201,
        )
        obj.ids.update(application_id=created["id"], expert_id=expert_id)
        await until(world, f"{API}/applications/{created['id']}", lambda b: b["status"] == "in_review")
        await decide(world, obj, "rev", "approve")
        expert = bearer(make_token(world.settings, "expert", f"user-{expert_id}", expert_id=expert_id))
        for _ in range(300):
            seats = await ok(world.api.get(f"{API}/panel-assignments", headers=expert))
            if seats["items"]:
                obj.ids["assignment_id"] = seats["items"][0]["id"]
                return obj
            await asyncio.sleep(0.1)
        raise AssertionError(f"no panel seat for {expert_id}")


WEBHOOK_URL = "https://93.184.215.14/hooks"  # a public address as a literal: nothing to resolve


async def webhook(world: World) -> Obj:
    """An enterprise's webhook endpoint with one delivery (an event of its own, fanned out by a relay as the
    worker's would) and that event in its feed."""
    from services.events import ApplicationSubmitted, Audience, emit
    from services.notifications.relay import Relay

    owner = world.pools["enterprise"][0]
    created = await ok(
        world.api.post(f"{API}/webhook-endpoints", headers=world.owner(owner), json={"url": WEBHOOK_URL}), 201
    )
    assert world.resources is not None
    async with world.resources.sessionmaker() as session, session.begin():
        event_id = await emit(
            session,
            ApplicationSubmitted(
                application_id=uuid.uuid4(),
                uscc=owner.uscc,
                program="demo",
                tier="specialized_new",
                status="screening",
                batch="demo-2026",
            ),
            Audience(uscc=owner.uscc),
        )
    relay = Relay(world.resources.sessionmaker, world.settings)
    while await relay.fan_out(wait=True):
        pass
    await relay.close()
    deliveries = await ok(
        world.api.get(f"{API}/webhook-endpoints/{created['id']}/deliveries", headers=world.owner(owner))
    )
    return Obj(
        uscc=owner.uscc,
        ids={
            **owner.ids,
            "endpoint_id": created["id"],
            "delivery_id": deliveries["items"][0]["id"],
            "notification_id": str(event_id),
        },
    )


async def pool_import(world: World) -> Obj:
    """The first enterprise imported into the demo program's cultivation pool by an admin (a finished job)."""
    owner = world.pools["enterprise"][0]
    content = f"USCC,name,region,industry,tier\r\n{owner.uscc},Matrix,{REGION},machinery,specialized_new\r\n"
    created = await ok(
        world.api.post(
            f"{API}/programs/demo/pool-imports",
            headers=world.admin,
            files={"file": ("pool.csv", content.encode(), "text/csv")},
        ),
        202,
    )
    await until(world, f"{API}/pool-imports/{created['id']}", lambda b: b["status"] == "finished")
    return Obj(uscc=owner.uscc, ids={**owner.ids, "import_id": created["id"], "key": "demo"})


async def nothing(world: World) -> Obj:
    return world.pools["enterprise"][0]


async def program(world: World) -> Obj:
    """The demo program's versions and batches (`none` no batch of it: the matrix changes no program)."""
    owner = world.pools["enterprise"][0]
    return Obj(uscc=owner.uscc, ids={**owner.ids, "key": "demo", "version": "1", "batch": "none"})


async def reconciliation_run(world: World) -> Obj:
    """A day's bank reconciliation, recorded as its workflow's activity records one (an empty statement)."""
    from services.credit import reconciliation
    from services.credit.bank import BankStatement

    assert world.resources is not None
    day = date(1995, 6, 1)
    statement = BankStatement(date=day, count=0, total=0, payments=[])
    async with world.resources.sessionmaker.begin() as session:
        await reconciliation.record(
            session, statement=statement, postings=[], paid_elsewhere=(), workflow_id="matrix"
        )
    owner = world.pools["enterprise"][0]
    return Obj(uscc=owner.uscc, ids={**owner.ids, "date": day.isoformat()})


# Each stage is built at once; a later stage may use the first object of a kind built before it.
BUILDERS: list[dict[str, Callable[[World], Awaitable[Obj]]]] = [
    {
        "enterprise": enterprise,
        "draft": draft,
        "review": in_review,
        "returned": returned,
        "notice": on_notice,
        "recognition": recognized,
    },
    {
        "objection": objection,
        "drawdown": drawdown,
        "bridge_loan": bridge_loan,
        "listing": listing_reward,
        "webhook": webhook,
        "pool": pool_import,
        "none": nothing,
        "reconciliation": reconciliation_run,
        "program": program,
        "panel": panel_seat,
    },
]

# --- the table ----------------------------------------------------------------------------------------

Body = Callable[[Obj], Any]


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expected: Mapping[str, int]
    target: str = "none"
    consumes: bool = False  # each success changes the target for good: give it a fresh one
    json: Body | None = None
    files: bool = False  # a multipart evidence upload
    params: Body | None = None
    sees: tuple[str, frozenset[str]] | None = None  # (id key, callers whose 200 must contain it)
    keyed: bool = False  # sent with a fresh Idempotency-Key (the writes that require one)

    @property
    def operation(self) -> tuple[str, str]:
        return self.method, self.path


def _enterprise_body(o: Obj) -> dict[str, Any]:
    return {
        "uscc": o.uscc,
        "name": "x",
        "region_code": REGION,
        "industry": "x",
        "founded_on": "2012-03-01",
    }


def _by_uscc(o: Obj) -> dict[str, str]:
    return {"uscc": o.uscc, "limit": "200"}


READERS_OF_CREDIT = {"own", "fin", "fin_self", "admin"}

ROWS: list[Row] = [
    Row("GET", "/healthz", expect(200, public=True)),
    Row("GET", "/readyz", expect(200, public=True)),
    Row("GET", f"{API}/programs", expect(200, public=True)),
    # An enterprise registers only itself; admin passes authorisation and meets the duplicate.
    Row("POST", f"{API}/enterprises", expect(403, own=409, admin=409), "enterprise", json=_enterprise_body),
    Row(
        "GET",
        f"{API}/enterprises/{{uscc}}",
        expect(200, other=404, rev_out=404, rev_out_lvl=404),
        "enterprise",
    ),
    Row("POST", f"{API}/documents", expect(403, own=201, other=201), "enterprise", files=True),
    # Evidence is read by its enterprise, the reviewers who may read an application citing it, and admins:
    # 404 for anyone else, finance refused by role ...
    Row(
        "GET",
        f"{API}/documents",
        expect(200, fin=403),
        "review",
        params=_by_uscc,
        sees=("document_id", frozenset({"own", "rev", "rev_lvl", "admin"})),
    ),
    Row(
        "GET",
        f"{API}/documents/{{document_id}}",
        expect(200, other=404, rev_out=404, rev_out_lvl=404, fin=403),
        "review",
    ),
    Row(
        "GET",
        f"{API}/documents/{{document_id}}/content",
        expect(200, other=404, rev_out=404, rev_out_lvl=404, fin=403),
        "review",
    ),
    # ... so a document no application cites is its enterprise's and the admins' alone.
    Row("GET", f"{API}/documents/{{document_id}}", expect(404, own=200, admin=200, fin=403), "enterprise"),
    Row(
        "GET",
        f"{API}/documents",
        expect(200, fin=403),
        "enterprise",
        params=_by_uscc,
        sees=("document_id", frozenset({"own", "admin"})),
    ),
    Row(
        "POST",
        f"{API}/applications",
        expect(403, own=201),
        "enterprise",
        consumes=True,
        json=application_body,
    ),
    Row(
        "GET",
        f"{API}/applications",
        expect(200, fin=403),
        "review",
        params=_by_uscc,
        sees=("application_id", frozenset({"own", "rev", "rev_lvl", "admin"})),
    ),
    Row(
        "GET",
        f"{API}/applications/{{application_id}}",
        expect(200, other=404, rev_out=404, rev_out_lvl=404, fin=403),
        "review",
    ),
    # A draft is read by its enterprise and admins only, and edited, checked, submitted or deleted by its
    # enterprise only (every other role refused before any lookup).
    Row(
        "GET",
        f"{API}/applications/{{application_id}}",
        expect(404, own=200, admin=200, fin=403),
        "draft",
    ),
    Row(
        "GET",
        f"{API}/applications",
        expect(200, fin=403),
        "draft",
        params=_by_uscc,
        sees=("application_id", frozenset({"own", "admin"})),
    ),
    Row(
        "PATCH",
        f"{API}/applications/{{application_id}}",
        expect(403, own=200, other=404),
        "draft",
        json=lambda o: {"metrics": strong_metrics()},
    ),
    Row("POST", f"{API}/applications/{{application_id}}/check", expect(403, own=200, other=404), "draft"),
    Row(
        "POST",
        f"{API}/applications/{{application_id}}/submit",
        expect(403, own=200, other=404),
        "draft",
        consumes=True,
        keyed=True,
    ),
    Row(
        "DELETE",
        f"{API}/applications/{{application_id}}",
        expect(403, own=204, other=404),
        "draft",
        consumes=True,
    ),
    # The review rules: a reviewer outside the stage's level or region is refused with 403 by the
    # workflow's validator; every other role is refused before any lookup.
    Row(
        "POST",
        f"{API}/applications/{{application_id}}/decisions",
        expect(403, rev=200),
        "review",
        consumes=True,
        json=lambda o: {"decision": "approve", "reason": "matrix"},
    ),
    Row(
        "POST",
        f"{API}/applications/{{application_id}}/supplements",
        expect(403, own=200, other=404),
        "returned",
        consumes=True,
        json=lambda o: {"note": "matrix"},
    ),
    Row(
        "POST",
        f"{API}/applications/{{application_id}}/withdraw",
        expect(403, own=200, other=404),
        "review",
        consumes=True,
        json=lambda o: {"reason": "matrix"},
    ),
    # Anyone authenticated may object during a public notice ...
    Row(
        "POST",
        f"{API}/applications/{{application_id}}/objections",
        expect(201),
        "notice",
        json=lambda o: {"reason": "matrix"},
    ),
    # ... and nobody learns that an application not on notice exists unless they may read it.
    Row(
        "POST",
        f"{API}/applications/{{application_id}}/objections",
        expect(404, own=409, rev=409, rev_lvl=409, admin=409),
        "review",
        json=lambda o: {"reason": "matrix"},
    ),
    Row(
        "POST",
        f"{API}/objections/{{objection_id}}/resolution",
        expect(403, rev=200, rev_lvl=200, rev_out=404, rev_out_lvl=404),
        "objection",
        consumes=True,
        json=lambda o: {"upheld": False, "reason": "matrix"},
    ),
    Row(
        "GET",
        f"{API}/review-tasks",
        expect(403, reviewers=200),
        "review",
        params=lambda o: {"q": o.uscc, "limit": "200"},
        sees=("application_id", frozenset({"rev"})),
    ),
    # A task is claimed by a reviewer whose queue holds it (anyone else's: 404), released by its holder or
    # an admin; only `rev` ever claims the shared task, so no cell meets another holder's claim (409).
    Row(
        "POST",
        f"{API}/review-tasks/{{task_id}}/claim",
        expect(403, rev=200, rev_lvl=404, rev_out=404, rev_out_lvl=404),
        "review",
    ),
    Row(
        "POST",
        f"{API}/review-tasks/{{task_id}}/release",
        expect(403, rev=200, rev_lvl=404, rev_out=404, rev_out_lvl=404, admin=200),
        "review",
    ),
    Row(
        "GET",
        f"{API}/recognitions",
        expect(200, reviewers=403),
        "recognition",
        params=_by_uscc,
        sees=("recognition_id", frozenset({"own", "fin", "fin_self", "admin"})),
    ),
    Row(
        "GET",
        f"{API}/recognitions/{{recognition_id}}",
        expect(200, other=404, reviewers=403),
        "recognition",
    ),
    # The re-review is its enterprise's to file (other roles refused before any lookup); the matrix's
    # recognitions are minutes from their re-review window, so the owner meets the closed window (409).
    Row(
        "POST",
        f"{API}/recognitions/{{recognition_id}}/re-review",
        expect(403, own=409, other=404),
        "recognition",
        json=lambda o: {"metrics": strong_metrics(), "evidence": []},
        keyed=True,
    ),
    Row(
        "POST",
        f"{API}/recognitions/{{recognition_id}}/revocation",
        expect(403, admin=200),
        "recognition",
        consumes=True,
        json=lambda o: {"reason": "matrix"},
    ),
    # A certificate is its enterprise's and the admins' (other roles are refused before any lookup) ...
    Row(
        "GET",
        f"{API}/recognitions/{{recognition_id}}/certificate",
        expect(403, own=200, other=404, admin=200),
        "recognition",
    ),
    # ... and anyone verifies it, or reads the public notices, without a token (a forged one is not read).
    Row("GET", f"{API}/public/recognitions/{{certificate_no}}", expect(200, public=True), "recognition"),
    Row(
        "GET",
        f"{API}/public/notices",
        expect(200, public=True),
        "notice",
        params=_by_uscc,
        sees=("application_id", frozenset(CALLERS)),
    ),
    # --- credit: data-driven and simple, so each new endpoint is one more row ---------------------------
    Row(
        "GET",
        f"{API}/benefits",
        expect(200, reviewers=403),
        "recognition",
        params=_by_uscc,
        sees=("recognition_id", frozenset(READERS_OF_CREDIT)),
    ),
    Row(
        "GET",
        f"{API}/credit-lines",
        expect(200, reviewers=403),
        "recognition",
        params=_by_uscc,
        sees=("line_id", frozenset(READERS_OF_CREDIT)),
    ),
    Row("GET", f"{API}/credit-lines/{{line_id}}", expect(200, other=404, reviewers=403), "recognition"),
    Row(
        "POST",
        f"{API}/credit-lines/{{line_id}}/drawdowns",
        expect(403, own=201, other=404),
        "recognition",
        json=lambda o: {"amount": "1000.00"},
    ),
    Row("GET", f"{API}/drawdowns/{{drawdown_id}}", expect(200, other=404, reviewers=403), "drawdown"),
    Row(
        "GET",
        f"{API}/drawdowns",
        expect(200, reviewers=403),
        "drawdown",
        params=_by_uscc,
        sees=("drawdown_id", frozenset(READERS_OF_CREDIT)),
    ),
    # The finance inbox: every kind of payout together; an enterprise sees its own.
    Row(
        "GET",
        f"{API}/payouts",
        expect(200, reviewers=403),
        "drawdown",
        params=_by_uscc,
        sees=("drawdown_id", frozenset(READERS_OF_CREDIT)),
    ),
    Row(
        "POST",
        f"{API}/drawdowns/{{drawdown_id}}/approvals",
        expect(403, fin=200, fin_self=403),
        "drawdown",
        consumes=True,
        json=lambda o: {"decision": "reject", "reason": "matrix"},
    ),
    # Repayments: the owner or finance records one (a required Idempotency-Key); no drawdown of the matrix is
    # ever paid out (no bank), so those who pass authorisation meet the 409 of a drawdown not paid out.
    Row(
        "POST",
        f"{API}/drawdowns/{{drawdown_id}}/repayments",
        expect(403, own=409, other=404, fin=409),
        "drawdown",
        json=lambda o: {"amount": "1.00"},
        keyed=True,
    ),
    Row(
        "GET",
        f"{API}/drawdowns/{{drawdown_id}}/repayments",
        expect(200, other=404, reviewers=403),
        "drawdown",
    ),
    Row(
        "GET",
        f"{API}/disbursements",
        expect(200, reviewers=403),
        "recognition",
        params=_by_uscc,
    ),
    Row("GET", f"{API}/funds", expect(403, fin=200, admin=200), "recognition"),
    # Fund administration: an admin changes a fund's capacity (with an Idempotency-Key); finance reads.
    Row(
        "POST",
        f"{API}/funds/{{program}}/capacity-changes",
        expect(403, admin=201),
        "recognition",
        json=lambda o: {"delta": "1000.00", "reason": "matrix"},
        keyed=True,
    ),
    Row("GET", f"{API}/funds/{{program}}/capacity-changes", expect(403, fin=200, admin=200), "recognition"),
    # A bridge loan is the caller's own: the other enterprise holds no qualifying recognition.
    Row(
        "POST",
        f"{API}/bridge-loans",
        expect(403, own=201, other=409),
        "recognition",
        json=lambda o: {"amount": "1000.00", "term_days": 10, "purpose": "matrix"},
    ),
    # The board's reward is granted once per enterprise: each success needs an enterprise of its own.
    Row(
        "POST",
        f"{API}/enterprises/{{uscc}}/listings",
        expect(403, own=201, other=404, admin=201),
        "recognition",
        consumes=True,
        json=lambda o: {
            "board": "growth",
            "listed_on": str(date.today() - timedelta(days=30)),
            "security_code": "873001",
        },
    ),
    Row(
        "GET",
        f"{API}/bridge-loans",
        expect(200, reviewers=403),
        "bridge_loan",
        params=_by_uscc,
        sees=("loan_id", frozenset(READERS_OF_CREDIT)),
    ),
    Row("GET", f"{API}/bridge-loans/{{loan_id}}", expect(200, other=404, reviewers=403), "bridge_loan"),
    Row(
        "POST",
        f"{API}/bridge-loans/{{loan_id}}/approvals",
        expect(403, fin=200, fin_self=403),
        "bridge_loan",
        consumes=True,
        json=lambda o: {"decision": "reject", "reason": "matrix"},
    ),
    # No loan of the matrix is ever paid out (no bank): finance and admin pass authorisation and meet the
    # 409 of a loan not paid out; the requester holding a finance role is refused before that.
    Row(
        "POST",
        f"{API}/bridge-loans/{{loan_id}}/repayment",
        expect(403, fin=409, admin=409, fin_self=403),
        "bridge_loan",
        json=lambda o: {"amount": "1000.00"},
        keyed=True,
    ),
    Row(
        "GET",
        f"{API}/listing-rewards",
        expect(200, reviewers=403),
        "listing",
        params=_by_uscc,
        sees=("reward_id", frozenset(READERS_OF_CREDIT)),
    ),
    Row("GET", f"{API}/listing-rewards/{{reward_id}}", expect(200, other=404, reviewers=403), "listing"),
    # One success only (a board's reward is once per enterprise), so the shared reward is decided.
    Row(
        "POST",
        f"{API}/listing-rewards/{{reward_id}}/approvals",
        expect(403, fin=200, fin_self=403),
        "listing",
        json=lambda o: {"decision": "reject", "reason": "matrix"},
    ),
]

# Bank reconciliation: finance and admins read the runs and ask for one (an Idempotency-Key required; the
# workflow it starts meets no bank here, and retries in the background).
ROWS += [
    Row("GET", f"{API}/reconciliations", expect(403, fin=200, admin=200), "reconciliation"),
    Row("GET", f"{API}/reconciliations/{{date}}", expect(403, fin=200, admin=200), "reconciliation"),
    Row(
        "POST",
        f"{API}/reconciliations/{{date}}/run",
        expect(403, fin=202, admin=202),
        "reconciliation",
        keyed=True,
    ),
]

# Notifications: endpoints are an enterprise's own or an admin's; the feed is everyone's, each its own.
ROWS += [
    Row(
        "POST",
        f"{API}/webhook-endpoints",
        expect(403, own=201, other=201, admin=201),
        "enterprise",
        json=lambda o: {"url": WEBHOOK_URL},
    ),
    Row(
        "GET",
        f"{API}/webhook-endpoints",
        expect(403, own=200, other=200, admin=200),
        "webhook",
        params=lambda o: {"limit": "200"},
        sees=("endpoint_id", frozenset({"own", "admin"})),
    ),
    Row(
        "DELETE",
        f"{API}/webhook-endpoints/{{endpoint_id}}",
        expect(403, own=204, other=404, admin=204),
        "webhook",
        consumes=True,
    ),
    Row(
        "POST",
        f"{API}/webhook-endpoints/{{endpoint_id}}/rotate-secret",
        expect(403, own=200, other=404, admin=200),
        "webhook",
        json=lambda o: {},
    ),
    Row(
        "GET",
        f"{API}/webhook-endpoints/{{endpoint_id}}/deliveries",
        expect(403, own=200, other=404, admin=200),
        "webhook",
        sees=("delivery_id", frozenset({"own", "admin"})),
    ),
    Row("GET", f"{API}/webhook-deliveries", expect(403, admin=200), "webhook"),
    Row(
        "POST",
        f"{API}/webhook-deliveries/{{delivery_id}}/retry",
        expect(403, own=202, other=404, admin=202),
        "webhook",
    ),
    Row("GET", f"{API}/notifications", expect(200), "webhook"),
    Row(
        "POST",
        f"{API}/notifications/{{notification_id}}/read",
        expect(404, own=200, admin=200),
        "webhook",
    ),
]

# Cultivation pools: an admin imports (the matrix's upload is a PDF: refused whole, 415); admin, finance and
# reviewers read a program's pool, reviewers only their region's part.
ROWS += [
    Row("POST", f"{API}/programs/{{key}}/pool-imports", expect(403, admin=415), "pool", files=True),
    Row("GET", f"{API}/pool-imports/{{import_id}}", expect(403, admin=200), "pool"),
    # API.md's names for the same two operations.
    Row("POST", f"{API}/programs/{{key}}/pool", expect(403, admin=415), "pool", files=True),
    Row("GET", f"{API}/imports/{{import_id}}", expect(403, admin=200), "pool"),
    Row("GET", f"{API}/pool-imports/{{import_id}}/errors.csv", expect(403, admin=200), "pool"),
    Row(
        "GET",
        f"{API}/programs/{{key}}/pool",
        expect(200, own=403, other=403),
        "pool",
        params=lambda o: {"q": o.uscc, "limit": "200"},
        sees=("uscc", frozenset({"rev", "rev_lvl", "fin", "fin_self", "admin"})),
    ),
]

# Reports: a program's cohort report and its plan are read by admin, reviewers (their region's figures) and
# finance (the money); only an admin replaces the plan.
REPORT_READERS = expect(200, own=403, other=403)
NO_TARGETS: dict[str, list[object]] = {"targets": []}  # the file's plan again
ROWS += [
    Row("GET", f"{API}/programs/{{key}}/report", REPORT_READERS, "pool"),
    Row("GET", f"{API}/reports/cohort", REPORT_READERS, params=lambda _: {"program": "demo"}),
    Row("GET", f"{API}/programs/{{key}}/plan", REPORT_READERS, "pool"),
    Row("PUT", f"{API}/programs/{{key}}/plan", expect(403, admin=200), "pool", json=lambda _: NO_TARGETS),
]


def _new_program(_: Obj) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(tomllib.loads(DEMO_TOML), default=str))
    return {**document, "key": f"matrix-{uuid.uuid4().hex[:8]}"}


# Programs as managed data (services/catalog): admins alone create versions and manage batches. The matrix
# changes no program it uses: POST /programs makes a fresh one; the demo's writes are refused after the access
# check (an empty document, a batch it has, a batch it has not).
ROWS += [
    Row("POST", f"{API}/programs", expect(403, admin=201), json=_new_program),
    Row("GET", f"{API}/programs/{{key}}", expect(403, admin=200), "program"),
    Row("POST", f"{API}/programs/{{key}}/versions", expect(403, admin=422), "program", json=lambda o: {}),
    Row("GET", f"{API}/programs/{{key}}/versions", expect(403, admin=200), "program"),
    Row("GET", f"{API}/programs/{{key}}/versions/{{version}}", expect(403, admin=200), "program"),
    Row(
        "POST",
        f"{API}/programs/{{key}}/batches",
        expect(403, admin=409),
        "program",
        json=lambda o: {"key": "demo-2026", "opens_on": "2026-04-01", "closes_on": "2027-12-31"},
    ),
    Row("POST", f"{API}/programs/{{key}}/batches/{{batch}}/open", expect(403, admin=404), "program"),
    Row("POST", f"{API}/programs/{{key}}/batches/{{batch}}/close", expect(403, admin=404), "program"),
    Row("POST", f"{API}/batches/{{batch}}/close", expect(403, admin=404), "program"),
]


def _listed_row(_: Obj) -> dict[str, Any]:
    """A fresh enterprise named in a ministry's list: the admin's import registers and recognises it."""
    return {
        "program": "demo",
        "tier": "specialized_new",
        "uscc": random_uscc(REGION),
        "name": "Listed",
        "region_code": REGION,
        "industry": "machinery",
        "founded_on": "2011-05-01",
        "batch": "2026-6",
        "list_reference": f"matrix-{uuid.uuid4().hex[:8]}",
        "recognized_on": "2026-06-01",
        "valid_until": "2029-05-31",
    }


# Expert panels (services/applications/panels.py): admins keep the pool; an admin or the expert itself
# declares a conflict; an expert reads and answers its own seats only (blind files).
ROWS += [
    Row(
        "POST",
        f"{API}/experts",
        expect(403, admin=201),
        json=lambda o: {"expert_id": f"m-{uuid.uuid4().hex[:10]}", "name": "x", "region_code": "500000"},
    ),
    Row(
        "GET",
        f"{API}/experts",
        expect(403, admin=200),
        "panel",
        params=lambda o: {"limit": "200"},
        sees=("expert_id", frozenset({"admin"})),
    ),
    Row(
        "POST",
        f"{API}/experts/{{expert_id}}/conflicts",
        expect(403, admin=201, expert=201),
        "panel",
        json=lambda o: {"uscc": random_uscc("110105")},
    ),
    Row(
        "GET",
        f"{API}/panel-assignments",
        expect(403, expert=200),
        "panel",
        sees=("assignment_id", frozenset({"expert"})),
    ),
    Row("GET", f"{API}/panel-assignments/{{assignment_id}}", expect(403, expert=200), "panel"),
    # The draws, for audit: admins only (the seats name the experts).
    Row(
        "GET",
        f"{API}/panels",
        expect(403, admin=200),
        "panel",
        params=lambda o: {"application_id": o.ids["application_id"]},
        sees=("application_id", frozenset({"admin"})),
    ),
    Row(
        "POST",
        f"{API}/panel-assignments/{{assignment_id}}/score",
        expect(403, expert=200),
        "panel",
        consumes=True,
        json=lambda o: {"vote": "approve"},
        keyed=True,
    ),
]

# Imported recognitions (services/applications/imported.py): an admin enters a ministry's list.
ROWS += [Row("POST", f"{API}/recognitions/imports", expect(403, admin=200), json=_listed_row)]

# Cells where the code answers otherwise than the contract, in code this suite does not own: the status
# it answers today and where to fix it. The test fails when one is fixed, so the entry gets deleted.
KNOWN_DEFECTS: dict[tuple[str, str, str], tuple[int, str]] = {}


# --- running it ---------------------------------------------------------------------------------------


@pytest.fixture
async def matrix_api(resources: Resources, worker: Any, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The `api` fixture's app, on a program folder of its own: `demo` with an hour-long notice period and
    SLA (an application stays where the matrix put it) and `matrix-fast` with a 1-second notice period."""
    from services.app import create_app

    demo = (PROGRAMS / "demo.toml").read_text()
    slow = demo.replace('notice_period = "PT20S"', 'notice_period = "PT3600S"')
    slow = slow.replace('stage_sla = "PT60S"', 'stage_sla = "PT3600S"')
    (tmp_path / "demo.toml").write_text(slow)
    fast = demo.replace('key = "demo"', 'key = "matrix-fast"').replace(
        'notice_period = "PT20S"', 'notice_period = "PT1S"'
    )
    (tmp_path / "matrix-fast.toml").write_text(fast)
    panel = slow.replace('key = "demo"', 'key = "matrix-panel"').replace(
        "[tiers.little_giant]",
        '[tiers.specialized_new.panels.provincial]\nsize = 1\nrule = "majority"\n\n[tiers.little_giant]',
    )
    (tmp_path / "matrix-panel.toml").write_text(panel)
    resources.settings = resources.settings.model_copy(update={"programs_dir": tmp_path})
    resources._programs = load_programs(tmp_path)

    async def factory(_: Settings) -> Resources:
        return resources

    app = create_app(resources.settings, resources_factory=factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def _documented_operations(api: httpx.AsyncClient) -> set[tuple[str, str]]:
    app = api._transport.app  # type: ignore[attr-defined]
    spec: dict[str, Any] = app.openapi()
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


async def _build(world: World) -> None:
    """One object of each kind for the refusals, plus one more per success of a consuming row."""
    wanted = Counter({kind: 1 for stage in BUILDERS for kind in stage})
    for row in ROWS:
        if row.consumes:
            wanted[row.target] += sum(1 for status in row.expected.values() if status < 300)
    for stage in BUILDERS:
        kinds = list(stage)
        built = await asyncio.gather(
            *(asyncio.gather(*(stage[kind](world) for _ in range(wanted[kind]))) for kind in kinds)
        )
        world.pools.update({kind: list(objs) for kind, objs in zip(kinds, built, strict=True)})


async def _listed(world: World, url: str, headers: dict[str, str], params: dict[str, str]) -> str:
    """Every page of a list, as text (bounded)."""
    text, query = "", dict(params)
    for _ in range(20):
        resp = await world.api.get(url, headers=headers, params=query)
        text += resp.text
        cursor = resp.json().get("next_cursor") if resp.status_code == 200 else None
        if not cursor:
            break
        query["cursor"] = cursor
    return text


async def _cell(world: World, row: Row, caller: str, target: Obj) -> str | None:
    url = row.path.format(**target.ids)
    headers = world.token(caller, target)
    kwargs: dict[str, Any] = {"headers": headers}
    if row.json is not None:
        kwargs["json"] = row.json(target)
    if row.files:
        kwargs["data"] = {"kind": "business_licence"}
        kwargs["files"] = {"file": ("m.pdf", b"%PDF-1.4 " + uuid.uuid4().bytes, "application/pdf")}
    if row.params is not None:
        kwargs["params"] = row.params(target)
    if row.keyed:
        headers["Idempotency-Key"] = f"matrix-{uuid.uuid4()}"
    resp = await world.api.request(row.method, url, **kwargs)
    known = KNOWN_DEFECTS.get((row.method, row.path, caller))
    wanted = known[0] if known else row.expected[caller]
    where = f"{row.method} {row.path} as {caller} ({CALLERS[caller]})"
    if resp.status_code != wanted:
        hint = f" - listed as a known defect ({known[1]}): fixed? delete the entry" if known else ""
        return f"{where}: {resp.status_code}, expected {wanted}{hint}: {resp.text[:200]}"
    if resp.status_code >= 400 and resp.headers.get("content-type") != "application/problem+json":
        return f"{where}: a {resp.status_code} that is not a problem document"
    if row.sees and resp.status_code == 200:
        key, allowed = row.sees
        text = await _listed(world, url, headers, kwargs.get("params", {}))
        if (target.ids[key] in text) != (caller in allowed):
            verdict = "missing from" if caller in allowed else "LEAKED in"
            return f"{where}: {key} {target.ids[key]} {verdict} the list"
    return None


PROBES = frozenset({"/healthz", "/readyz"})


async def _run_row(world: World, row: Row, fresh: dict[str, list[Obj]]) -> list[str]:
    shared = world.pools[row.target][0]
    order = sorted(CALLERS, key=lambda c: row.expected[c] < 300)  # refusals first, then successes
    failures = []
    for caller in order:
        target = fresh[row.target].pop() if row.consumes and row.expected[caller] < 300 else shared
        failure = await _cell(world, row, caller, target)
        if failure:
            failures.append(failure)
    return failures


@dataclass(frozen=True)
class Replayed:
    """A write the owner sends with an Idempotency-Key, then `other` with the owner's `sub` sends again with
    the same key and body: the twin must get its own answer (`twin`), never the owner's stored one."""

    name: str
    path: str
    target: str
    json: Body
    owner: int
    twin: int


REPLAYED: list[Replayed] = [
    Replayed("register the owner's enterprise", f"{API}/enterprises", "fresh", _enterprise_body, 201, 403),
    Replayed(
        "request a drawdown on the owner's line",
        f"{API}/credit-lines/{{line_id}}/drawdowns",
        "recognition",
        lambda o: {"amount": "1000.00"},
        201,
        404,
    ),
    Replayed(
        "request a bridge loan",
        f"{API}/bridge-loans",
        "recognition",
        lambda o: {"amount": "1000.00", "term_days": 10, "purpose": "matrix replay"},
        201,
        409,  # the twin's own enterprise holds no recognition
    ),
    Replayed(
        "withdraw the owner's application",
        f"{API}/applications/{{application_id}}/withdraw",
        "review",
        lambda o: {"reason": "matrix replay"},
        200,
        404,
    ),
]


async def _cross_tenant(world: World) -> list[str]:
    """Every case of REPLAYED; each owner's retry is still replayed (the key works for its own identity)."""
    failures = []
    for case in REPLAYED:
        if case.target == "fresh":
            target = Obj(uscc=random_uscc(REGION))
        elif case.target == "review":
            target = await in_review(world)  # rows have consumed the pool's spares
        else:
            target = world.pools[case.target][0]  # shared by the rows, never consumed
        url = case.path.format(**target.ids)
        key = {"Idempotency-Key": f"replay-{uuid.uuid4()}"}
        first = await world.api.post(url, headers={**world.owner(target), **key}, json=case.json(target))
        again = await world.api.post(url, headers={**world.owner(target), **key}, json=case.json(target))
        twin = await world.api.post(url, headers={**world.twin(target), **key}, json=case.json(target))
        where = f"{case.name} ({url})"
        if first.status_code != case.owner:
            failures.append(
                f"{where}: the owner got {first.status_code}, expected {case.owner}: {first.text}"
            )
        elif again.status_code != case.owner or again.headers.get("Idempotent-Replayed") != "true":
            failures.append(f"{where}: the owner's retry was not replayed: {again.status_code}")
        if twin.status_code != case.twin or twin.headers.get("Idempotent-Replayed"):
            failures.append(
                f"{where}: another tenant with the owner's sub and key got {twin.status_code} "
                f"(replayed: {twin.headers.get('Idempotent-Replayed')}), expected {case.twin}: "
                + twin.text[:200]
            )
    return failures


async def test_every_operation_x_every_caller(
    matrix_api: httpx.AsyncClient, settings: Settings, resources: Resources
) -> None:
    documented = _documented_operations(matrix_api)
    covered = {row.operation for row in ROWS}
    missing = sorted(documented - covered)
    stale = sorted(covered - documented)
    assert not missing, f"operations without rows in the access matrix (add them to ROWS): {missing}"
    assert not stale, f"rows for operations the app no longer has: {stale}"
    for row in ROWS:
        assert set(row.expected) == set(CALLERS), f"{row.operation}: every caller needs a cell"

    world = World(api=matrix_api, settings=resources.settings, other=Obj(uscc=""), resources=resources)
    await _build(world)
    world.other = await enterprise(world)
    fresh = {kind: objs[1:] for kind, objs in world.pools.items()}

    # The probes first, on their own: the rows below run all at once and hold every connection of the test's
    # pool, and the readiness probe's database check gives up after 3 s (a slow CI machine saw a 503). Who
    # may call a probe is what the matrix asks, not how it fares with its pool exhausted.
    probes = [row for row in ROWS if row.path in PROBES]
    failures = [f for row in probes for f in await _run_row(world, row, fresh)]
    results = await asyncio.gather(*(_run_row(world, row, fresh) for row in ROWS if row.path not in PROBES))
    failures += [f for row_failures in results for f in row_failures]
    failures += await _cross_tenant(world)
    cells = len(ROWS) * len(CALLERS) + len(REPLAYED)
    assert not failures, f"{len(failures)} of {cells} cells are wrong:\n" + "\n".join(failures)
