"""The finance inbox (GET /payouts: drawdowns, bridge loans and listing rewards together) and GET /drawdowns,
through the HTTP API on committed data, with the real Temporal dev server and a worker deciding payouts.
Committed rows of other tests share the database, so each test reads its own enterprises' payouts."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.auth import CurrentUser, Role
from services.config import Settings
from services.credit import payouts
from services.credit.schemas import InboxStatus
from services.vocabulary import PAYOUT_STATUSES
from tests.conftest import bearer
from tests.credit.conftest import arm, auth, enterprise_token, new_uscc, open_line

D = Decimal
INBOX = "/api/v1/payouts"
TODAY = datetime.now(UTC).date()


class Company:
    """An enterprise with a credit line, a bridge-loan benefit and a listing reward benefit."""

    def __init__(self, api: httpx.AsyncClient, settings: Settings, uscc: str, line_id: uuid.UUID) -> None:
        self.api, self.uscc, self.line_id = api, uscc, line_id
        self.sub = f"ent-{uscc}"
        self.headers = bearer(enterprise_token(settings, uscc, self.sub))

    async def created(self, path: str, body: dict[str, Any]) -> str:
        response = await self.api.post(f"/api/v1{path}", json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        created: str = response.json()["id"]
        return created

    async def draw(self, amount: str, line_id: uuid.UUID | None = None) -> str:
        return await self.created(f"/credit-lines/{line_id or self.line_id}/drawdowns", {"amount": amount})

    async def borrow(self, amount: str) -> str:
        return await self.created(
            "/bridge-loans", {"amount": amount, "term_days": 10, "purpose": "repay a maturing loan"}
        )

    async def list(self) -> str:
        return await self.created(
            f"/enterprises/{self.uscc}/listings",
            {"board": "incubation", "listed_on": str(TODAY - timedelta(days=3)), "security_code": "873009"},
        )


async def company(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> Company:
    uscc = new_uscc()
    line_id = await open_line(sessions, uscc=uscc)
    await arm(sessions, uscc, "bridge_loan", "listing_reward", tier="little_giant")
    return Company(api, settings, uscc, line_id)


def finance(settings: Settings, sub: str = "finance-inbox") -> dict[str, str]:
    return auth(settings, "finance", sub)


async def decide(
    api: httpx.AsyncClient, headers: dict[str, str], path: str, decision: str = "approve"
) -> dict[str, Any]:
    response = await api.post(
        f"/api/v1{path}/approvals", json={"decision": decision, "reason": "inbox test"}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def inbox(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await api.get(INBOX, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ids(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    return [item["id"] for item in (await inbox(api, headers, limit=200, **params))["items"]]


async def walk(api: httpx.AsyncClient, headers: dict[str, str], limit: int, **params: Any) -> list[str]:
    """Every page of the inbox, ``limit`` at a time."""
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        page = await inbox(api, headers, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= limit
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


@pytest.fixture
async def mixed(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> tuple[Company, dict[str, str]]:
    """One enterprise's payouts of every kind, requested in this order: a drawdown finance rejects, a bridge
    loan, a listing reward, and a drawdown above the dual-approval threshold that one officer approved."""
    firm = await company(api, settings, sessions)
    made = {"rejected": await firm.draw("500.00")}
    made["loan"] = await firm.borrow("2000.00")
    made["reward"] = await firm.list()
    made["dual"] = await firm.draw("1500000.00")
    await decide(api, finance(settings, "finance-a"), f"/drawdowns/{made['rejected']}", "reject")
    half = await decide(api, finance(settings, "finance-a"), f"/drawdowns/{made['dual']}")
    assert half["status"] == "pending_approval"
    return firm, made


def test_the_inbox_statuses_are_the_payout_statuses_with_awaiting_approval() -> None:
    assert set(get_args(InboxStatus)) == {"awaiting_approval"} | set(PAYOUT_STATUSES) - {"pending_approval"}


async def test_the_inbox_mixes_kinds_awaiting_approval_first_then_oldest_first(
    api: httpx.AsyncClient, settings: Settings, mixed: tuple[Company, dict[str, str]]
) -> None:
    firm, made = mixed
    page = await inbox(api, finance(settings), uscc=firm.uscc)
    items = page["items"]
    assert page["next_cursor"] is None
    assert [(i["kind"], i["id"], i["status"]) for i in items] == [
        ("bridge_loan", made["loan"], "awaiting_approval"),
        ("listing_reward", made["reward"], "awaiting_approval"),
        ("drawdown", made["dual"], "awaiting_approval"),
        ("drawdown", made["rejected"], "rejected"),  # the oldest, but decided
    ]
    loan, reward, dual, rejected = items
    assert (loan["amount"], reward["amount"], dual["amount"], rejected["amount"]) == (
        "2000.00",
        "30000.00",
        "1500000.00",
        "500.00",
    )
    assert {i["uscc"] for i in items} == {firm.uscc}
    assert {i["requested_by"] for i in items} == {firm.sub}
    assert all(i["program"] == "credit-test" for i in items)
    requested = [datetime.fromisoformat(i["requested_at"]) for i in items]
    assert requested[:3] == sorted(requested[:3])
    for item in items:
        deadline = datetime.fromisoformat(item["approval_deadline"])
        assert deadline - datetime.fromisoformat(item["requested_at"]) == timedelta(days=10)

    # The approvals so far and how many each needs (two distinct approvers above 1,000,000.00).
    assert [(a["approver"], a["decision"]) for a in dual["approvals"]] == [("finance-a", "approve")]
    assert datetime.fromisoformat(dual["approvals"][0]["created_at"]) >= requested[2]
    assert (dual["approvals_needed"], dual["approvals_missing"]) == (2, 1)
    assert (loan["approvals"], loan["approvals_needed"], loan["approvals_missing"]) == ([], 1, 1)
    assert [(a["approver"], a["decision"]) for a in rejected["approvals"]] == [("finance-a", "reject")]
    assert (rejected["approvals_needed"], rejected["approvals_missing"]) == (1, 0)


async def test_can_approve_is_the_callers(
    api: httpx.AsyncClient, settings: Settings, mixed: tuple[Company, dict[str, str]]
) -> None:
    firm, made = mixed

    async def can(headers: dict[str, str]) -> dict[str, bool]:
        items = (await inbox(api, headers, uscc=firm.uscc))["items"]
        by_id = {i["id"]: i["can_approve"] for i in items}
        return {name: by_id[payout_id] for name, payout_id in made.items()}

    awaiting_only = {"rejected": False, "loan": True, "reward": True, "dual": True}
    assert await can(finance(settings, "finance-b")) == awaiting_only  # another officer
    assert await can(finance(settings, "finance-a")) == {
        **awaiting_only,
        "dual": False,
    }  # approved it already
    nothing = dict.fromkeys(made, False)
    assert await can(finance(settings, firm.sub)) == nothing  # the requester holding a finance role
    assert await can(firm.headers) == nothing  # the enterprise itself
    assert await can(auth(settings, "admin")) == nothing  # admin reads, never decides

    # What it says is what the decision endpoints do.
    second = await decide(api, finance(settings, "finance-b"), f"/drawdowns/{made['dual']}", "reject")
    assert second["status"] == "rejected"
    after = await can(finance(settings, "finance-c"))
    assert after == {**awaiting_only, "dual": False}
    statuses = {i["id"]: i["status"] for i in (await inbox(api, finance(settings), uscc=firm.uscc))["items"]}
    assert statuses[made["dual"]] == "rejected"


def test_no_decision_past_the_deadline_and_only_by_finance() -> None:
    at = datetime.now(UTC)
    officer = CurrentUser(sub="finance-x", role=Role.finance)

    def may(user: CurrentUser = officer, **changes: Any) -> bool:
        payout: dict[str, Any] = {
            "status": "pending_approval",
            "requested_by": "ent-1",
            "approval_deadline": at + timedelta(seconds=1),
            "approvers": {"finance-y"},
        }
        return payouts.may_decide(user, **{**payout, **changes}, at=at)

    assert may()
    assert not may(approval_deadline=at)
    assert not may(status="approved")
    assert not may(approvers={"finance-x"})
    assert not may(requested_by="finance-x")
    assert not may(CurrentUser(sub="admin-x", role=Role.admin))


async def test_each_filter(
    api: httpx.AsyncClient, settings: Settings, mixed: tuple[Company, dict[str, str]]
) -> None:
    firm, made = mixed
    headers = finance(settings)
    mine = {"uscc": firm.uscc}
    assert await ids(api, headers, kind="bridge_loan", **mine) == [made["loan"]]
    assert await ids(api, headers, kind="listing_reward", **mine) == [made["reward"]]
    assert await ids(api, headers, kind="drawdown", **mine) == [made["dual"], made["rejected"]]
    assert await ids(api, headers, status="awaiting_approval", **mine) == [
        made["loan"],
        made["reward"],
        made["dual"],
    ]
    assert await ids(api, headers, status="rejected", **mine) == [made["rejected"]]
    assert await ids(api, headers, status="disbursed", **mine) == []
    assert await ids(api, headers, status="rejected", kind="bridge_loan", **mine) == []
    assert await ids(api, headers, uscc=new_uscc()) == []
    # Amounts: at least, at most, both bounds included.
    assert await ids(api, headers, amount_min="2000.00", amount_max="30000.00", **mine) == [
        made["loan"],
        made["reward"],
    ]
    assert await ids(api, headers, amount_min="1500000.00", **mine) == [made["dual"]]
    assert await ids(api, headers, amount_max="500.00", **mine) == [made["rejected"]]
    assert await ids(api, headers, amount_min="30000.01", amount_max="30000.00", **mine) == []
    # The request date (UTC days), like GET /disbursements.
    today = datetime.now(UTC).date()
    assert len(await ids(api, headers, **{"from": str(today), "to": str(today)}, **mine)) == 4
    assert await ids(api, headers, **{"to": str(today - timedelta(days=1))}, **mine) == []
    assert await ids(api, headers, **{"from": str(today + timedelta(days=1))}, **mine) == []
    assert await ids(api, headers, **{"from": "2000-01-01", "to": "2000-01-02"}) == []


@pytest.mark.parametrize("value", ["1e3", "-5.00", "+5.00", "100.5", "100.001", "0100.00", "abc", "", "NaN"])
async def test_amount_filters_are_money_strings(
    api_rollback: httpx.AsyncClient, settings: Settings, value: str
) -> None:
    for name in ("amount_min", "amount_max"):
        response = await api_rollback.get(INBOX, params={name: value}, headers=finance(settings))
        assert response.status_code == 422, (name, value, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["status"], problem["errors"][0]["field"]) == (422, name)


async def test_bad_queries_and_callers_are_refused(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    headers = finance(settings)
    for params in (
        {"status": "pending_approval"},  # the inbox says awaiting_approval
        {"kind": "grant"},
        {"cursor": "not-a-cursor"},
        {"cursor": "2.abc"},
        {"from": "2026-13-01"},
        {"limit": "0"},
        {"stauts": "failed"},
    ):
        response = await api_rollback.get(INBOX, params=params, headers=headers)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    reviewer = auth(settings, "reviewer", level="provincial", region="500000")
    assert (await api_rollback.get(INBOX, headers=reviewer)).status_code == 403
    assert (await api_rollback.get(INBOX)).status_code == 401


async def test_an_enterprise_sees_only_its_own(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    mixed: tuple[Company, dict[str, str]],
) -> None:
    firm, made = mixed
    other = await company(api, settings, sessions)
    theirs = await other.draw("700.00")

    own = await ids(api, firm.headers)
    assert sorted(own) == sorted(made.values())
    assert await ids(api, other.headers) == [theirs]
    assert await ids(api, firm.headers, uscc=other.uscc) == []
    assert await ids(api, other.headers, uscc=other.uscc, kind="drawdown") == [theirs]
    assert theirs in await ids(api, auth(settings, "admin"), uscc=other.uscc)


async def test_pages_walk_one_stable_order(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    firm = await company(api, settings, sessions)
    made = [await firm.draw(f"{100 + n}.00") for n in range(5)]
    made.append(await firm.borrow("3000.00"))
    made.append(await firm.list())
    for decided in (made[1], made[3]):  # two of the oldest, decided: they go last
        await decide(api, finance(settings), f"/drawdowns/{decided}", "reject")
    expected = [made[0], made[2], made[4], made[5], made[6], made[1], made[3]]
    headers = finance(settings)
    assert await ids(api, headers, uscc=firm.uscc) == expected
    for limit in (1, 2, 3, 7):
        assert await walk(api, headers, limit, uscc=firm.uscc) == expected, limit
    assert await walk(api, firm.headers, 2) == expected  # the enterprise's own, unfiltered
    assert await walk(api, headers, 2, uscc=firm.uscc, status="awaiting_approval") == expected[:5]
    assert await walk(api, headers, 1, uscc=firm.uscc, status="rejected") == expected[5:]
    # A page boundary holds while payouts are requested and decided between pages: what stayed put is seen
    # once, in order; a payout requested since comes at the end of its segment, and one decided since (seen
    # on the first page, awaiting) shows again among the decided, in its new state.
    first = await inbox(api, headers, uscc=firm.uscc, limit=3)
    assert [i["id"] for i in first["items"]] == expected[:3]
    newest = await firm.draw("999.00")
    await decide(api, finance(settings), f"/drawdowns/{made[0]}", "reject")
    rest = await walk_from(api, headers, first["next_cursor"], uscc=firm.uscc, limit=2)
    names = {v: k for k, v in enumerate(made)} | {newest: "new"}
    assert [names[r] for r in rest] == [5, 6, "new", 0, 1, 3]


async def walk_from(api: httpx.AsyncClient, headers: dict[str, str], cursor: str, **params: Any) -> list[str]:
    seen: list[str] = []
    while cursor:
        page = await inbox(api, headers, cursor=cursor, **params)
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    return seen


# --- GET /drawdowns --------------------------------------------------------------------------------------


async def test_drawdowns_are_listed_filtered_and_scoped(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    firm = await company(api, settings, sessions)
    second_line = await open_line(sessions, uscc=firm.uscc, limit=D("1000000.00"))
    first = await firm.draw("100.00")
    rejected = await firm.draw("200.00")
    other_line = await firm.draw("300.00", second_line)
    await decide(api, finance(settings), f"/drawdowns/{rejected}", "reject")
    url = "/api/v1/drawdowns"

    async def listed(headers: dict[str, str], **params: Any) -> list[str]:
        response = await api.get(url, params={"limit": 200, **params}, headers=headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    headers = finance(settings)
    newest_first = [other_line, rejected, first]
    assert await listed(headers, uscc=firm.uscc) == newest_first
    assert await listed(firm.headers) == newest_first
    assert await listed(auth(settings, "admin"), uscc=firm.uscc) == newest_first
    assert await listed(headers, uscc=firm.uscc, status="pending_approval") == [other_line, first]
    assert await listed(headers, uscc=firm.uscc, status="rejected") == [rejected]
    assert await listed(headers, credit_line_id=str(second_line)) == [other_line]
    assert await listed(headers, credit_line_id=str(firm.line_id), status="rejected") == [rejected]
    today = datetime.now(UTC).date()
    assert await listed(headers, uscc=firm.uscc, **{"from": str(today), "to": str(today)}) == newest_first
    assert await listed(headers, uscc=firm.uscc, **{"to": str(today - timedelta(days=1))}) == []

    page = (await api.get(url, params={"uscc": firm.uscc, "limit": 2}, headers=headers)).json()
    assert [i["id"] for i in page["items"]] == newest_first[:2]
    rest = (
        await api.get(
            url, params={"uscc": firm.uscc, "limit": 2, "cursor": page["next_cursor"]}, headers=headers
        )
    ).json()
    assert ([i["id"] for i in rest["items"]], rest["next_cursor"]) == ([first], None)

    item = (await api.get(url, params={"uscc": firm.uscc, "status": "rejected"}, headers=headers)).json()
    [read] = item["items"]
    assert (read["credit_line_id"], read["amount"], read["status"]) == (
        str(firm.line_id),
        "200.00",
        "rejected",
    )
    assert [a["decision"] for a in read["approvals"]] == ["reject"]

    # An enterprise sees its own: another's filter gives nothing; other roles are refused.
    stranger = bearer(enterprise_token(settings, new_uscc()))
    assert await listed(stranger) == []
    assert await listed(stranger, uscc=firm.uscc) == []
    assert await listed(stranger, credit_line_id=str(firm.line_id)) == []
    reviewer = auth(settings, "reviewer", level="national", region="000000")
    assert (await api.get(url, headers=reviewer)).status_code == 403
    assert (await api.get(url)).status_code == 401
    assert (await api.get(url, params={"status": "awaiting_approval"}, headers=headers)).status_code == 422


async def test_concurrent_readers_share_the_page_and_get_the_ordinary_answer(
    api: httpx.AsyncClient, settings: Settings, resources: Any, mixed: tuple[Company, dict[str, str]]
) -> None:
    """services/credit/inbox.py: a caller whose token the API remembers is answered from a page read once for
    the requests waiting at that moment - the same bytes the ordinary handler answers, with its own
    ``can_approve``."""
    firm, made = mixed
    params = {"uscc": firm.uscc}
    officer = finance(settings, f"finance-{uuid.uuid4().hex[:8]}")
    first = await api.get(INBOX, params=params, headers=officer)  # a token not seen yet: the ordinary path
    assert first.status_code == 200
    unions: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "UNION ALL" in statement:
            unions.append(statement)

    sync = resources.engine.sync_engine
    event.listen(sync, "before_cursor_execute", count)
    try:
        again = await asyncio.gather(*(api.get(INBOX, params=params, headers=officer) for _ in range(12)))
        approver = await asyncio.gather(
            *(api.get(INBOX, params=params, headers=finance(settings, "finance-a")) for _ in range(2))
        )
    finally:
        event.remove(sync, "before_cursor_execute", count)
    assert {(r.status_code, r.content) for r in again} == {(200, first.content)}
    assert len(unions) <= 4, len(unions)  # a handful of reads, not one per request
    for response in approver:
        flags = {i["id"]: i["can_approve"] for i in response.json()["items"]}
        assert flags[made["dual"]] is False  # finance-a approved it already
        assert flags[made["loan"]] is True


async def test_two_reads_of_the_same_page_in_flight_both_answer(resources: Any) -> None:
    """A page asked for again while its first read is already sent goes out in a second read (at most two in
    flight); each read answers its own callers. (It once looked its question up in a table the first read
    had already emptied: the second read failed, and its callers fell back to the ordinary path.)"""
    from services.credit.inbox import SharedPages
    from services.credit.schemas import ListFilters

    pages = SharedPages(resources.sessionmaker, resources.settings.effective_database_url, width=2)
    filters = ListFilters(uscc=new_uscc(), status="pending_approval")

    async def ask() -> Any:
        return await pages.page(filters=filters, cursor=None, after=None, limit=50)

    first = asyncio.create_task(ask())
    await asyncio.sleep(0)  # the first caller asks; its read is made on the next turn, before the second asks
    second = asyncio.create_task(ask())
    third = asyncio.create_task(ask())
    answers = await asyncio.gather(first, second, third)
    assert all(answer is not None for answer in answers), answers
    assert all(answer.rows.rows == [] for answer in answers)
    await pages.close()


async def test_a_shared_page_is_read_again_only_when_the_payouts_version_moved(
    api: httpx.AsyncClient, settings: Settings, resources: Any, mixed: tuple[Company, dict[str, str]]
) -> None:
    """The inbox's shared reads check the payouts' version (bumped by every committed change to a payout or a
    decision on one) before their page: the same version, the page already read and no page query; a decision
    committed since, the page read again, with the decision in it."""
    from services.credit.inbox import SharedPages
    from services.credit.schemas import ListFilters

    firm, made = mixed
    pages = SharedPages(resources.sessionmaker, resources.settings.effective_database_url, width=1)
    filters = ListFilters(uscc=firm.uscc)
    unions: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "UNION ALL" in statement:
            unions.append(statement)

    async def read() -> Any:
        return await pages.page(filters=filters, cursor=None, after=None, limit=50)

    sync = resources.engine.sync_engine
    event.listen(sync, "before_cursor_execute", count)
    try:
        first = await read()
        again = await read()
        assert again is first
        assert len(unions) == 1  # the version had not moved: no second page query
        await decide(api, finance(settings, "finance-b"), f"/drawdowns/{made['dual']}")
        after = await read()
        assert len(unions) == 2
        assert after.version > first.version
    finally:
        event.remove(sync, "before_cursor_execute", count)
        await pages.close()
    approvers = {row.id: set(row.approvers or ()) for row in after.rows.rows}
    assert approvers[uuid.UUID(made["dual"])] == {"finance-a", "finance-b"}
