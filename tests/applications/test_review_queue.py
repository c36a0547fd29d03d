"""The review queue: ``GET /review-tasks`` (scope, filters, search, order, pages, counts) and claims
(``POST /review-tasks/{id}/claim`` and ``/release``), on tasks written straight to a rolled-back database;
then claims, decisions and escalation to a backup group through real review workflows."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from services.applications import service
from services.applications.models import Enterprise, ReviewTask
from services.auth import Role, TokenVerifier
from services.config import Settings
from services.programs import load_programs
from services.resources import Resources
from services.vocabulary import covers_region, region_prefix
from tests.applications.conftest import PROGRAMS, Applicant, poll
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, seed_application

QUEUE = "/api/v1/review-tasks"
PROVINCE = "650000"  # Xinjiang: no other test files anything there


def reviewer(
    settings: Settings, level: str, region: str, sub: str | None = None, groups: list[str] | None = None
) -> dict[str, str]:
    claims: dict[str, Any] = {"level": level, "region": region}
    if groups:
        claims["groups"] = groups
    return bearer(make_token(settings, "reviewer", sub or f"{level}-{region}", **claims))


async def open_task(
    session: AsyncSession,
    *,
    region: str,
    stage: str = "provincial",
    name: str | None = None,
    program: str = "demo",
    tier: str = "specialized_new",
    due: timedelta = timedelta(days=1),
    status: str = "open",
    escalated_to: str | None = None,
    claimed_by: str | None = None,
    claim_for: timedelta = timedelta(hours=1),
) -> ReviewTask:
    """An application in review with its task, written straight to the database (`due` and `claim_for` from
    now)."""
    now = datetime.now(UTC)
    uscc = random_uscc(region)
    session.add(
        Enterprise(
            uscc=uscc,
            name=name or f"Enterprise {uscc}",
            region_code=region,
            industry="machinery",
            founded_on=date(2010, 1, 1),
            registered_by="test",
        )
    )
    await session.flush()
    application = await seed_application(session, uscc=uscc, region=region, program=program, tier=tier)
    application.status, application.stage = "in_review", stage
    task = ReviewTask(
        application_id=application.id,
        stage=stage,
        region_code=region,
        status=status,
        due_at=now + due,
        overdue=escalated_to is not None,
        escalated_to=escalated_to,
        created_at=now - timedelta(days=1),
        claimed_by=claimed_by,
        claim_expires_at=now + claim_for if claimed_by else None,
    )
    session.add(task)
    await session.flush()
    await session.refresh(task)
    return task


async def queue(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    resp = await api.get(QUEUE, headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["items"]]


# --- scope, filters, order, counts ------------------------------------------------------------------------


@pytest.fixture
async def provincial_queue(session: AsyncSession) -> dict[str, ReviewTask]:
    """Five tasks in a provincial reviewer's queue (650000) and four that are not."""
    tasks = {
        "late": await open_task(
            session, region="650103", name="beta Tools", tier="little_giant", due=-timedelta(days=2)
        ),
        "soon": await open_task(session, region="650102", name="Alpha Machinery", due=timedelta(days=1)),
        "mine": await open_task(
            session,
            region="650104",
            name="ALPINE Foods",
            program="national",
            tier="innovative",
            due=timedelta(days=3),
            claimed_by="me",
        ),
        "theirs": await open_task(session, region="650105", due=timedelta(days=4), claimed_by="them"),
        "lapsed": await open_task(
            session,
            region="650106",
            due=timedelta(days=5),
            claimed_by="them",
            claim_for=-timedelta(minutes=1),
        ),
        # not in the queue: another level, another province, a decided task
        "municipal": await open_task(session, region="650102", stage="municipal"),
        "elsewhere": await open_task(session, region="110105"),
        "decided": await open_task(session, region="650102", status="decided"),
        "national": await open_task(session, region="650102", stage="national"),
    }
    return tasks


async def test_the_queue_its_order_and_what_each_item_shows(
    api_rollback: httpx.AsyncClient, settings: Settings, provincial_queue: dict[str, ReviewTask]
) -> None:
    t = provincial_queue
    me = reviewer(settings, "provincial", PROVINCE, sub="me")
    body = await queue(api_rollback, me)
    assert ids(body) == [str(t[k].id) for k in ("late", "soon", "mine", "theirs", "lapsed")]  # by due date
    assert body["next_cursor"] is None
    items = {item["id"]: item for item in body["items"]}
    late = items[str(t["late"].id)]
    assert late["application_id"] == str(t["late"].application_id)
    assert (late["enterprise_name"], late["uscc"], late["tier"], late["program"]) == (
        "beta Tools",
        t["late"].uscc,
        "little_giant",
        "demo",
    )
    assert (late["stage"], late["region_code"], late["overdue"], late["escalated_to"]) == (
        "provincial",
        "650103",
        True,
        None,
    )
    assert datetime.fromisoformat(late["due_at"]) == t["late"].due_at
    mine = items[str(t["mine"].id)]
    assert mine["claimed_by"] == "me"
    assert datetime.fromisoformat(mine["claim_expires_at"]) == t["mine"].claim_expires_at
    assert items[str(t["theirs"].id)]["claimed_by"] == "them"
    lapsed = items[str(t["lapsed"].id)]
    assert (lapsed["claimed_by"], lapsed["claim_expires_at"]) == (None, None)  # a lapsed claim is none
    assert items[str(t["soon"].id)]["overdue"] is False


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"program": "national"}, ["mine"]),
        ({"program": "demo"}, ["late", "soon", "theirs", "lapsed"]),
        ({"tier": "little_giant"}, ["late"]),
        ({"tier": "invisible_champion"}, []),
        ({"stage": "provincial"}, ["late", "soon", "mine", "theirs", "lapsed"]),
        ({"stage": "municipal"}, []),
        ({"overdue": "true"}, ["late"]),
        ({"overdue": "false"}, ["soon", "mine", "theirs", "lapsed"]),
        ({"assignee": "me"}, ["mine"]),
        ({"assignee": "none"}, ["late", "soon", "lapsed"]),
        ({"q": "alp"}, ["soon", "mine"]),  # name prefix, any case
        ({"q": "ALPHA m"}, ["soon"]),
        ({"q": "lpha"}, []),  # a prefix, not a substring
        ({"q": "%"}, []),  # LIKE's wildcards are plain characters
        ({"q": "_eta"}, []),
        ({"overdue": "false", "assignee": "none", "program": "demo"}, ["soon", "lapsed"]),
    ],
)
async def test_each_filter(
    api_rollback: httpx.AsyncClient,
    settings: Settings,
    provincial_queue: dict[str, ReviewTask],
    params: dict[str, str],
    expected: list[str],
) -> None:
    me = reviewer(settings, "provincial", PROVINCE, sub="me")
    body = await queue(api_rollback, me, **params)
    assert ids(body) == [str(provincial_queue[k].id) for k in expected]


async def test_search_by_uscc_prefix(
    api_rollback: httpx.AsyncClient, settings: Settings, provincial_queue: dict[str, ReviewTask]
) -> None:
    me = reviewer(settings, "provincial", PROVINCE, sub="me")
    theirs = provincial_queue["theirs"]
    for prefix in (theirs.uscc, theirs.uscc[:14], theirs.uscc[:14].lower()):
        assert ids(await queue(api_rollback, me, q=prefix)) == [str(theirs.id)]
    # Every USCC of the queue shares its registering authority's code (positions 3-8), so a short prefix
    # finds the whole province's.
    assert len(ids(await queue(api_rollback, me, q=theirs.uscc[:4]))) >= 1


async def test_counts_cover_the_whole_queue_whatever_the_filters(
    api_rollback: httpx.AsyncClient, settings: Settings, provincial_queue: dict[str, ReviewTask]
) -> None:
    me = reviewer(settings, "provincial", PROVINCE, sub="me")
    expected = {
        "total": 5,
        "stage": {"municipal": 0, "provincial": 5, "national": 0},
        "tier": {
            "innovative": 1,
            "specialized_new": 3,
            "little_giant": 1,
            "invisible_champion": 0,
            "single_champion": 0,
        },
        "program": {"demo": 4, "national": 1},
        "overdue": {"true": 1, "false": 4},
        "assignee": {"me": 1, "none": 3, "others": 1},
    }
    assert (await queue(api_rollback, me))["counts"] == expected
    filtered = await queue(api_rollback, me, tier="little_giant", assignee="me", limit=1)
    assert filtered["counts"] == expected
    # Another reviewer of the same queue: the same tasks, its own "me".
    other = await queue(api_rollback, reviewer(settings, "provincial", PROVINCE, sub="them"))
    assert other["counts"]["assignee"] == {"me": 1, "none": 3, "others": 1}
    assert other["counts"]["total"] == 5


async def test_pages_follow_the_due_date_then_the_id(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    due = timedelta(days=2)
    tasks = [await open_task(session, region="650201", due=due) for _ in range(3)]
    tasks += [await open_task(session, region="650202", due=timedelta(days=d)) for d in (1, 3)]
    expected = [str(t.id) for t in sorted(tasks, key=lambda t: (t.due_at, t.id))]
    city = reviewer(settings, "provincial", "650000")
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(5):
        body = await queue(api_rollback, city, **params)
        assert len(body["items"]) <= 2
        seen += ids(body)
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == expected
    bad = await api_rollback.get(QUEUE, headers=city, params={"cursor": "not-ours"})
    assert bad.status_code == 422


async def test_only_reviewers_have_a_queue_and_unknown_filters_are_refused(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    enterprise = bearer(make_token(settings, "enterprise", "e", uscc=random_uscc("650102")))
    for headers, status in (({}, 401), (enterprise, 403), (bearer(make_token(settings, Role.admin)), 403)):
        resp = await api_rollback.get(QUEUE, headers=headers)
        assert resp.status_code == status
        assert resp.headers["content-type"] == "application/problem+json"
    me = reviewer(settings, "provincial", PROVINCE)
    for params in ({"assignee": "someone"}, {"overdue": "maybe"}, {"owner": "me"}, {"q": ""}):
        assert (await api_rollback.get(QUEUE, headers=me, params=params)).status_code == 422, params


# --- the region rule: 000000 is the whole country ---------------------------------------------------------


def test_region_000000_covers_the_whole_country() -> None:
    assert region_prefix("000000") == ""
    assert all(covers_region("000000", code) for code in ("110105", "500103", "650102"))
    assert covers_region("650000", "650102")
    assert not covers_region("650000", "110105")


async def test_a_national_reviewer_of_000000_sees_every_province(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    tag = uuid.uuid4().hex[:8]
    here = await open_task(session, region="650102", stage="national", name=f"{tag} Kashgar Tools")
    there = await open_task(session, region="110105", stage="national", name=f"{tag} Chaoyang Tools")
    await open_task(session, region="650102", stage="provincial", name=f"{tag} Kashgar Gears")
    country = reviewer(settings, "national", "000000")
    assert set(ids(await queue(api_rollback, country, q=tag))) == {str(here.id), str(there.id)}
    # (the provincial stage's task is not a national reviewer's, wherever it is)
    assert ids(await queue(api_rollback, reviewer(settings, "national", "650000"), q=tag)) == [str(here.id)]
    # The same rule reads applications.
    for task in (here, there):
        resp = await api_rollback.get(f"/api/v1/applications/{task.application_id}", headers=country)
        assert resp.status_code == 200, resp.text
    listed = await api_rollback.get("/api/v1/applications", headers=country, params={"uscc": there.uscc})
    assert [a["id"] for a in listed.json()["items"]] == [str(there.application_id)]


# --- groups: escalated tasks in the backup group's queue --------------------------------------------------


async def test_the_groups_claim(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    token = make_token(
        settings, "reviewer", "g", level="municipal", region="650100", groups=["demo-backup-reviewers"]
    )
    assert (await verifier.verify(token)).groups == ("demo-backup-reviewers",)
    assert (await verifier.verify(make_token(settings, "finance", "f"))).groups == ()


def test_giantflow_token_carries_the_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt
    from typer.testing import CliRunner

    from services.cli import app
    from services.config import get_settings

    monkeypatch.setenv("GIANTFLOW_ENVIRONMENT", "development")
    get_settings.cache_clear()
    try:
        args = ["token", "--role", "reviewer", "--level", "national", "--region", "000000"]
        result = CliRunner().invoke(app, [*args, "--group", "demo-backup-reviewers", "--group", "audit"])
        assert result.exit_code == 0, result.output
        claims = jwt.decode(result.output.strip(), options={"verify_signature": False})
        assert (claims["groups"], claims["region"]) == (["demo-backup-reviewers", "audit"], "000000")
        plain = CliRunner().invoke(app, args)
        assert "groups" not in jwt.decode(plain.output.strip(), options={"verify_signature": False})
    finally:
        get_settings.cache_clear()


async def test_an_escalated_task_is_in_its_backup_groups_queue(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    group = f"backup-{uuid.uuid4().hex[:8]}"
    escalated = await open_task(
        session, region="650102", stage="municipal", due=-timedelta(hours=1), escalated_to=group
    )
    other = await open_task(
        session, region="650102", stage="municipal", due=-timedelta(hours=1), escalated_to="another-group"
    )
    member = reviewer(settings, "provincial", "110000", sub="member", groups=[group])
    body = await queue(api_rollback, member)
    assert str(escalated.id) in ids(body)
    assert str(other.id) not in ids(body)
    item = next(i for i in body["items"] if i["id"] == str(escalated.id))
    assert (item["escalated_to"], item["overdue"], item["stage"]) == (group, True, "municipal")
    assert body["counts"]["stage"]["municipal"] == 1
    outsider = reviewer(settings, "provincial", "110000", sub="outsider")
    assert str(escalated.id) not in ids(await queue(api_rollback, outsider))
    # A member may claim it like any task of its queue; a reviewer without the group may not see it.
    claimed = await api_rollback.post(f"{QUEUE}/{escalated.id}/claim", headers=member)
    assert claimed.status_code == 200, claimed.text
    assert (await api_rollback.post(f"{QUEUE}/{escalated.id}/claim", headers=outsider)).status_code == 404


# --- claims -----------------------------------------------------------------------------------------------


async def test_claim_and_release(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    task = await open_task(session, region="650102", stage="municipal")
    url = f"{QUEUE}/{task.id}"
    alice = reviewer(settings, "municipal", "650100", sub="alice")
    bob = reviewer(settings, "municipal", "650102", sub="bob")

    before = datetime.now(UTC)
    claimed = await api_rollback.post(f"{url}/claim", headers=alice)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["claimed_by"] == "alice"
    expires = datetime.fromisoformat(claimed.json()["claim_expires_at"])
    ttl = timedelta(seconds=300)  # programs/demo.toml: claim_ttl = "PT300S"
    assert before + ttl <= expires <= datetime.now(UTC) + ttl
    again = await api_rollback.post(f"{url}/claim", headers=alice)  # one's own again: renewed, not refused
    assert again.status_code == 200
    assert again.json()["claimed_by"] == "alice"
    assert datetime.fromisoformat(again.json()["claim_expires_at"]) >= expires

    for action in ("claim", "release"):  # one holder at a time, released only by it
        refused = await api_rollback.post(f"{url}/{action}", headers=bob)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "alice" in refused.json()["detail"]
    assert (await queue(api_rollback, bob))["counts"]["assignee"] == {"me": 0, "none": 0, "others": 1}
    assert ids(await queue(api_rollback, alice, assignee="me")) == [str(task.id)]

    released = await api_rollback.post(f"{url}/release", headers=alice)
    assert released.status_code == 200, released.text
    assert (released.json()["claimed_by"], released.json()["claim_expires_at"]) == (None, None)
    assert (await api_rollback.post(f"{url}/release", headers=bob)).status_code == 200  # nobody holds it
    assert (await api_rollback.post(f"{url}/claim", headers=bob)).json()["claimed_by"] == "bob"
    admin = bearer(make_token(settings, Role.admin, "admin-1"))
    assert (await api_rollback.post(f"{url}/claim", headers=admin)).status_code == 403  # reviewers claim
    freed = await api_rollback.post(f"{url}/release", headers=admin)  # an admin frees a stuck claim
    assert freed.status_code == 200
    assert freed.json()["claimed_by"] is None


async def test_who_may_claim(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    task = await open_task(session, region="650102", stage="municipal")
    decided = await open_task(session, region="650102", stage="municipal", status="decided")
    url = f"{QUEUE}/{task.id}/claim"
    enterprise = bearer(make_token(settings, "enterprise", "e", uscc=task.uscc))
    cases = [
        ({}, url, 401),
        (enterprise, url, 403),
        (reviewer(settings, "provincial", "650000"), url, 404),  # another level's queue
        (reviewer(settings, "municipal", "650200"), url, 404),  # another city's
        (reviewer(settings, "municipal", "650100"), f"{QUEUE}/{uuid.uuid4()}/claim", 404),
        (reviewer(settings, "municipal", "650100"), f"{QUEUE}/{decided.id}/claim", 409),
        (reviewer(settings, "municipal", "650100"), f"{QUEUE}/not-a-uuid/claim", 422),
    ]
    for headers, target, status in cases:
        resp = await api_rollback.post(target, headers=headers)
        assert resp.status_code == status, (target, headers, resp.text)


async def test_a_claim_is_idempotent_per_key(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    task = await open_task(session, region="650102", stage="municipal")
    alice = {**reviewer(settings, "municipal", "650100", sub="alice"), "Idempotency-Key": "claim-1"}
    first = await api_rollback.post(f"{QUEUE}/{task.id}/claim", headers=alice)
    again = await api_rollback.post(f"{QUEUE}/{task.id}/claim", headers=alice)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()


async def test_a_lapsed_claim_counts_as_none(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    task = await open_task(session, region="650102", stage="municipal")
    url = f"{QUEUE}/{task.id}"
    alice = reviewer(settings, "municipal", "650100", sub="alice")
    bob = reviewer(settings, "municipal", "650100", sub="bob")
    assert (await api_rollback.post(f"{url}/claim", headers=alice)).status_code == 200
    assert (await api_rollback.post(f"{url}/claim", headers=bob)).status_code == 409
    # The program's claim_ttl passes (the claim's time, moved back).
    await session.execute(
        text("UPDATE review_tasks SET claim_expires_at = now() - interval '1 second' WHERE id = :id"),
        {"id": task.id},
    )
    body = await queue(api_rollback, bob, assignee="none")
    assert str(task.id) in ids(body)
    assert body["counts"]["assignee"] == {"me": 0, "none": 1, "others": 0}
    item = next(i for i in body["items"] if i["id"] == str(task.id))
    assert item["claimed_by"] is None
    assert ids(await queue(api_rollback, alice, assignee="me")) == []
    taken = await api_rollback.post(f"{url}/claim", headers=bob)
    assert taken.status_code == 200
    assert taken.json()["claimed_by"] == "bob"


async def test_a_decision_on_a_task_another_reviewer_holds_is_a_409(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    """Refused before the workflow is asked (no Temporal is reachable here: anything that got that far would
    answer 503)."""
    task = await open_task(session, region="650102", stage="municipal")
    alice = reviewer(settings, "municipal", "650100", sub="alice")
    bob = reviewer(settings, "municipal", "650100", sub="bob")
    assert (await api_rollback.post(f"{QUEUE}/{task.id}/claim", headers=alice)).status_code == 200
    decision = {"decision": "approve", "reason": "looks complete"}
    url = f"/api/v1/applications/{task.application_id}/decisions"
    refused = await api_rollback.post(url, headers=bob, json=decision)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await api_rollback.post(url, headers=alice, json=decision)).status_code == 503  # on its way


async def test_of_two_reviewers_claiming_at_once_one_wins(
    api: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    district = f"658{uuid.uuid4().int % 1000:03d}"  # committed: a district of its own
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        task = await open_task(session, region=district, stage="municipal")
    claimers = [reviewer(settings, "municipal", district, sub=f"racer-{n}") for n in range(4)]
    answers = await asyncio.gather(*(api.post(f"{QUEUE}/{task.id}/claim", headers=h) for h in claimers))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    [winner] = [a.json()["claimed_by"] for a in answers if a.status_code == 200]
    assert all(winner in a.json()["detail"] for a in answers if a.status_code == 409)


# --- through real review workflows ------------------------------------------------------------------------


async def _in_review(applicant: Applicant) -> tuple[str, dict[str, Any]]:
    await applicant.register()
    created = await applicant.submit()
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    body = await poll(
        applicant.api,
        f"/api/v1/applications/{app_id}",
        applicant.headers,
        lambda b: b["status"] == "in_review",
    )
    return app_id, body


async def test_deciding_closes_the_claim(applicant: Applicant, settings: Settings) -> None:
    api = applicant.api
    app_id, body = await _in_review(applicant)
    task_id = body["task"]["id"]
    alice = reviewer(settings, "municipal", "500100", sub="alice-municipal")
    bob = reviewer(settings, "municipal", "500103", sub="bob-municipal")
    [item] = (await queue(api, alice, q=applicant.uscc))["items"]
    assert (item["id"], item["application_id"]) == (task_id, app_id)
    assert (await api.post(f"{QUEUE}/{task_id}/claim", headers=alice)).status_code == 200
    url = f"/api/v1/applications/{app_id}/decisions"
    refused = await api.post(url, headers=bob, json={"decision": "approve", "reason": "mine now"})
    assert refused.status_code == 409, refused.text
    decided = await api.post(url, headers=alice, json={"decision": "approve", "reason": "complete"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["stage"] == "provincial"
    # The decided task's claim ended with it; the next stage's task is nobody's.
    assert (await api.post(f"{QUEUE}/{task_id}/release", headers=alice)).status_code == 409
    assert (await queue(api, alice, q=applicant.uscc))["items"] == []
    provincial = reviewer(settings, "provincial", "500000", sub="carol-provincial")
    [next_task] = (await queue(api, provincial, q=applicant.uscc))["items"]
    assert next_task["id"] != task_id
    assert next_task["claimed_by"] is None


@pytest.fixture
def fast_sla(resources: Resources, tmp_path: Path) -> None:
    """The demo program with a 1-second stage SLA: a task is escalated to its backup group at once."""
    text_ = (PROGRAMS / "demo.toml").read_text().replace('stage_sla = "PT60S"', 'stage_sla = "PT1S"')
    (tmp_path / "demo.toml").write_text(text_)
    resources._programs = load_programs(tmp_path)


async def test_a_backup_group_member_decides_an_escalated_task(
    applicant: Applicant, settings: Settings, fast_sla: None
) -> None:
    api = applicant.api
    app_id, _ = await _in_review(applicant)
    url = f"/api/v1/applications/{app_id}"
    body = await poll(
        api, url, applicant.headers, lambda b: (b["task"] or {}).get("escalated_to") is not None
    )
    assert body["task"]["escalated_to"] == "demo-backup-reviewers"
    assert body["task"]["overdue"] is True
    # Outside the municipal stage's level and region, but in the program's backup group.
    member = reviewer(settings, "provincial", "110000", sub="backup-1", groups=["demo-backup-reviewers"])
    outsider = reviewer(settings, "provincial", "110000", sub="outsider-1")
    [item] = (await queue(api, member, q=applicant.uscc))["items"]
    assert (item["application_id"], item["stage"], item["escalated_to"]) == (
        app_id,
        "municipal",
        "demo-backup-reviewers",
    )
    assert (await queue(api, outsider, q=applicant.uscc))["items"] == []
    decision = {"decision": "approve", "reason": "decided by the backup group"}
    refused = await api.post(f"{url}/decisions", headers=outsider, json=decision)
    assert refused.status_code == 403, refused.text
    decided = await api.post(f"{url}/decisions", headers=member, json=decision)
    assert decided.status_code == 200, decided.text
    assert (decided.json()["status"], decided.json()["stage"]) == ("in_review", "provincial")
    history = (await api.get(url, headers=bearer(make_token(settings, Role.admin)))).json()["history"]
    assert [h["action"] for h in history][-2:] == ["sla_escalated", "approved"]
    assert history[-1]["actor"] == "backup-1"


async def test_the_kept_counts_follow_every_change_of_a_task(session: AsyncSession) -> None:
    """review_queue_counts (kept by a trigger) always equals the open tasks counted afresh."""
    tasks = [await open_task(session, region=f"65030{i}", stage="municipal") for i in range(4)]
    changes = [
        ("UPDATE review_tasks SET claimed_by = 'x', claim_expires_at = now() WHERE id = :a", 0),
        ("UPDATE review_tasks SET overdue = true, escalated_to = 'grp' WHERE id = :a", 1),
        ("UPDATE review_tasks SET stage = 'provincial' WHERE id = :a", 2),
        ("UPDATE review_tasks SET status = 'decided' WHERE id = :a", 3),
        ("UPDATE review_tasks SET status = 'open' WHERE id = :a", 3),
        ("DELETE FROM review_tasks WHERE id = :a", 0),
    ]
    fresh = text(
        "SELECT stage, region_code, coalesce(escalated_to, ''), program, tier, overdue, count(*) "
        "FROM review_tasks WHERE status = 'open' AND region_code LIKE '6503%' GROUP BY 1, 2, 3, 4, 5, 6"
    )
    kept = text(
        "SELECT stage, region_code, escalated_to, program, tier, overdue, tasks FROM review_queue_counts "
        "WHERE tasks > 0 AND region_code LIKE '6503%'"
    )
    for statement, which in changes:
        await session.execute(text(statement), {"a": tasks[which].id})
        assert set((await session.execute(kept)).all()) == set((await session.execute(fresh)).all()), (
            statement
        )


# --- the cache of rendered pages (services/applications/queue_views.py), on committed data -----------------


class RenderCount:
    """Counts the pages rendered the ordinary way rather than answered from the cache."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = service.queue_page

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await original(*args, **kwargs)

        monkeypatch.setattr(service, "queue_page", counting)


async def test_a_repeated_read_is_answered_from_the_cache_until_the_queue_or_the_clock_changes(
    api: httpx.AsyncClient, engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    district = f"659{uuid.uuid4().int % 1000:03d}"  # a district of its own: committed rows stay
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        later = await open_task(session, region=district, stage="municipal", due=timedelta(hours=1))
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        soon = await open_task(session, region=district, stage="municipal", due=timedelta(seconds=1.5))
    renders = RenderCount(monkeypatch)
    me = reviewer(settings, "municipal", district, sub="cache-me")
    params = {"q": later.uscc[:2], "limit": 50}

    first = await api.get(QUEUE, headers=me, params=params)
    again = await api.get(QUEUE, headers=me, params=params)
    assert (first.status_code, again.status_code, renders.calls) == (200, 200, 1)
    assert again.content == first.content
    assert ids(first.json()) == [str(soon.id), str(later.id)]
    assert (await api.get(QUEUE, headers=me, params={**params, "limit": 10})).status_code == 200
    assert renders.calls == 2  # another query string: a page of its own
    other = reviewer(settings, "municipal", district, sub="cache-other")
    assert (await api.get(QUEUE, headers=other, params=params)).status_code == 200
    assert renders.calls == 3  # another caller ("me" is someone else)

    # A change to the queue (a claim) renders again, and shows.
    assert (await api.post(f"{QUEUE}/{later.id}/claim", headers=me)).status_code == 200
    claimed = await api.get(QUEUE, headers=me, params=params)
    assert renders.calls == 4
    assert [i["claimed_by"] for i in claimed.json()["items"]] == [None, "cache-me"]
    assert claimed.json()["counts"]["assignee"]["me"] == 1
    # So does one written by anything else (the kept counts' trigger sees every writer).
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE review_tasks SET escalated_to = 'grp' WHERE id = :id"), {"id": soon.id}
        )
    escalated = await api.get(QUEUE, headers=me, params=params)
    assert renders.calls == 5
    assert escalated.json()["items"][0]["escalated_to"] == "grp"

    # The clock passes a due date: the task turns overdue, and the page with it.
    assert escalated.json()["items"][0]["overdue"] is False
    while datetime.now(UTC) <= soon.due_at:
        await asyncio.sleep(0.1)
    late = await api.get(QUEUE, headers=me, params=params)
    assert renders.calls == 6
    assert late.json()["items"][0]["overdue"] is True
    assert late.json()["counts"]["overdue"] == {"true": 1, "false": 1}


async def test_every_queue_query_is_index_backed(
    api_rollback: httpx.AsyncClient, connection: AsyncConnection, session: AsyncSession, settings: Settings
) -> None:
    """As tests/platform/test_query_plans.py does for every list, for the queue's callers it does not have (a
    backup group's member) and for the table of counts too: planned with sequential scans off, no query of
    ``GET /review-tasks`` reads review_tasks or review_queue_counts whole."""
    from sqlalchemy import event

    from tests.platform.test_query_plans import seq_scans

    await open_task(session, region="650102", stage="municipal", escalated_to="grp", due=-timedelta(hours=1))
    await open_task(session, region="650102", stage="provincial", claimed_by="me")
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, parameters))

    callers = [
        reviewer(settings, "provincial", PROVINCE, sub="me"),
        reviewer(settings, "provincial", "110000", sub="member", groups=["grp", "other"]),
        reviewer(settings, "national", "000000"),
        reviewer(settings, "municipal", "650102"),
    ]
    sync = connection.sync_connection
    assert sync is not None
    event.listen(sync, "before_cursor_execute", capture)
    try:
        for headers in callers:
            for params in ({}, {"assignee": "me", "q": "ent"}, {"overdue": "true", "tier": "innovative"}):
                assert (await api_rollback.get(QUEUE, headers=headers, params=params)).status_code == 200
    finally:
        event.remove(sync, "before_cursor_execute", capture)
    await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    failures = []
    for statement, parameters in captured:
        raw = (
            await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        ).scalar_one()
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        scans = set(seq_scans(plan)) | set(_scans_of(plan, "review_queue_counts"))
        if scans:
            failures.append(f"{scans}: {statement}")
    await connection.exec_driver_sql("SET LOCAL enable_seqscan = on")
    assert len(captured) >= 12
    assert not failures, "\n".join(failures)


def _scans_of(plan: dict[str, Any], table: str) -> list[str]:
    found = [table] if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") == table else []
    for child in plan.get("Plans", []):
        found += _scans_of(child, table)
    return found
