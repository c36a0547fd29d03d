"""GET /applications/{id} answers from a cache of rendered views keyed by ``applications.version``, which
database triggers bump on every change the view shows. The cache must save work and never show anything
stale or to anyone else."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.applications import service
from services.applications.views import ApplicationViews, CachedViewRoute
from services.auth import TokenVerifier
from services.config import Settings
from tests.applications.conftest import Applicant, poll, reviewer_headers
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, seed_application


class RenderCount:
    """Counts the reads that went the ordinary (ORM) way rather than the cached one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = service.get_application

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await original(*args, **kwargs)

        monkeypatch.setattr(service, "get_application", counting)


async def in_review(applicant: Applicant) -> str:
    await applicant.register()
    created = await applicant.submit()
    assert created.status_code == 201, created.text
    app_id: str = created.json()["id"]
    await poll(
        applicant.api,
        f"/api/v1/applications/{app_id}",
        applicant.headers,
        lambda b: b["stage"] == "municipal",
    )
    return app_id


async def test_a_repeated_read_is_served_from_the_cache_and_any_change_renders_again(
    applicant: Applicant, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = await in_review(applicant)
    url = f"/api/v1/applications/{app_id}"
    renders = RenderCount(monkeypatch)
    first = await applicant.api.get(url, headers=applicant.headers)
    second = await applicant.api.get(url, headers=applicant.headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert renders.calls <= 1  # the second answer came from the cache

    # A change written behind the API's back - here as an operator's SQL - shows on the very next read.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE review_tasks SET overdue = true WHERE application_id = :id AND status = 'open'"),
            {"id": app_id},
        )
    before = renders.calls
    changed = (await applicant.api.get(url, headers=applicant.headers)).json()
    assert changed["task"]["overdue"] is True
    assert renders.calls == before + 1

    # So does a document the application comes to cite (a row of another table).
    [extra] = await applicant.evidence("ip_certificates")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO application_documents (application_id, document_id, source, cited_by, cited_at) "
                "VALUES (:a, :d, 'supplement', 'operator', now())"
            ),
            {"a": app_id, "d": extra},
        )
    shown = (await applicant.api.get(url, headers=applicant.headers)).json()
    assert extra in [d["id"] for d in shown["documents"]]


async def test_a_cached_view_is_never_shown_to_another_caller_or_audience(
    applicant: Applicant, settings: Settings
) -> None:
    app_id = await in_review(applicant)
    url = f"/api/v1/applications/{app_id}"
    api = applicant.api
    municipal = reviewer_headers(settings, "municipal", "500100")
    decided = await api.post(
        f"{url}/decisions",
        headers=municipal,
        json={"decision": "approve", "reason": "complete", "internal_note": "strong file"},
    )
    assert decided.status_code == 200, decided.text
    provincial = reviewer_headers(settings, "provincial", "500000")
    for _ in range(2):  # the second round is answered from the cache
        owner = (await api.get(url, headers=applicant.headers)).json()
        staff = (await api.get(url, headers=provincial)).json()
        assert [h.get("internal_note") for h in owner["history"]] == [None] * len(owner["history"])
        assert "strong file" in [h.get("internal_note") for h in staff["history"]]
        other = bearer(make_token(settings, "enterprise", "someone-else", uscc=random_uscc()))
        assert (await api.get(url, headers=other)).status_code == 404
        assert (
            await api.get(url, headers=reviewer_headers(settings, "municipal", "110100"))
        ).status_code == 404
        finance = bearer(make_token(settings, "finance", "finance-1"))
        assert (await api.get(url, headers=finance)).status_code == 403


async def test_unknown_ids_are_404_whatever_the_cache_holds(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    admin = bearer(make_token(settings, "admin"))
    resp = await api.get(f"/api/v1/applications/{uuid.uuid4()}", headers=admin)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"


async def version(session: AsyncSession, application_id: uuid.UUID) -> int:
    value = await session.scalar(
        text("SELECT version FROM applications WHERE id = :id"), {"id": application_id}
    )
    assert value is not None
    return int(value)


async def test_triggers_bump_the_version_for_every_row_the_view_shows(session: AsyncSession) -> None:
    app = await seed_application(session)
    other = await seed_application(session, uscc=app.uscc, tier="little_giant")
    await session.flush()
    start = await version(session, app.id)

    await session.execute(text("UPDATE applications SET stage = 'municipal' WHERE id = :id"), {"id": app.id})
    assert await version(session, app.id) == start + 1
    for statement in (
        "INSERT INTO review_tasks (id, application_id, stage, region_code, status, due_at, created_at) "
        "VALUES (gen_random_uuid(), :id, 'municipal', '500103', 'open', now(), now())",
        "UPDATE review_tasks SET overdue = true WHERE application_id = :id",
        "DELETE FROM review_tasks WHERE application_id = :id",
    ):
        before = await version(session, app.id)
        await session.execute(text(statement), {"id": app.id})
        assert await version(session, app.id) == before + 1, statement

    document = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO documents (id, uscc, kind, filename, content_type, size, sha256, uploaded_by) "
            "VALUES (:d, :u, 'business_licence', 'x.pdf', 'application/pdf', 1, :h, 'x')"
        ),
        {"d": document, "u": app.uscc, "h": "0" * 64},
    )
    moved_from, moved_to = await version(session, app.id), await version(session, other.id)
    await session.execute(
        text(
            "INSERT INTO application_documents (application_id, document_id, source, cited_by, cited_at) "
            "VALUES (:a, :d, 'application', 'x', now())"
        ),
        {"a": app.id, "d": document},
    )
    assert await version(session, app.id) == moved_from + 1
    await session.execute(
        text("UPDATE application_documents SET application_id = :o WHERE application_id = :a"),
        {"a": app.id, "o": other.id},
    )
    assert await version(session, app.id) == moved_from + 2  # it left this application
    assert await version(session, other.id) == moved_to + 1  # and joined that one


class GatedStatement:
    """LOOKUP as prepared, but the first query's answer is held back until the test opens the gate."""

    def __init__(self, statement: Any, fetched: asyncio.Event, gate: asyncio.Event) -> None:
        self.statement, self.fetched, self.gate = statement, fetched, gate

    async def fetch(self, *args: Any) -> Any:
        rows = await self.statement.fetch(*args)
        if not self.fetched.is_set():
            self.fetched.set()
            await self.gate.wait()
        return rows


async def test_waiting_lookups_share_one_query_but_never_one_sent_before_they_asked(
    engine: AsyncEngine, migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncSession(engine, expire_on_commit=False) as s:
        apps = [await seed_application(s) for _ in range(3)]
        await s.commit()
    views = ApplicationViews(migrated, lambda: AsyncSession(engine), lookups=1)
    batches: list[int] = []
    fetched, gate = asyncio.Event(), asyncio.Event()
    fetch, lookup = views._fetch, views._lookup

    async def gated_fetch(conn: Any, ids: Any) -> Any:
        return await fetch(GatedStatement(conn, fetched, gate), ids)

    async def counted_lookup(batch: Any) -> None:
        batches.append(len(batch))
        await lookup(batch)

    monkeypatch.setattr(views, "_fetch", gated_fetch)
    monkeypatch.setattr(views, "_lookup", counted_lookup)
    try:
        unknown = uuid.uuid4()
        ids = [a.id for a in apps]
        first = asyncio.gather(*(views.access(i) for i in [*ids, ids[0], unknown]))
        await asyncio.wait_for(fetched.wait(), 10)  # that query has read the rows; its answer is held back
        assert batches == [4]  # five callers, four distinct ids, one query

        # A change commits after that query read the row; a caller asking now must see it.
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE applications SET stage = 'municipal' WHERE id = :id"), {"id": ids[0]}
            )
        later = asyncio.ensure_future(views.access(ids[0]))
        await asyncio.sleep(0.05)
        assert not later.done()
        assert batches == [4]
        gate.set()
        answers = await first
        fresh = await later
        assert [a.uscc if a else None for a in answers] == [a.uscc for a in apps] + [apps[0].uscc, None]
        assert answers[0] is not None
        assert fresh is not None
        assert fresh.version == answers[0].version + 1
        assert batches == [4, 1]
    finally:
        gate.set()
        await views.close()


async def test_a_closed_or_unreachable_lookup_answers_none(engine: AsyncEngine, migrated: str) -> None:
    unreachable = ApplicationViews(
        "postgresql+asyncpg://nobody@127.0.0.1:9/none", lambda: AsyncSession(engine), lookups=1
    )
    assert await asyncio.gather(*(unreachable.access(uuid.uuid4()) for _ in range(3))) == [None] * 3
    await unreachable.close()
    views = ApplicationViews(migrated, lambda: AsyncSession(engine))
    await views.close()
    assert await views.access(uuid.uuid4()) is None


class VerifyCount:
    """Counts full token verifications: every request the ordinary route handler takes makes one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = TokenVerifier.verify

        async def counting(verifier: TokenVerifier, token: str) -> Any:
            self.calls += 1
            return await original(verifier, token)

        monkeypatch.setattr(TokenVerifier, "verify", counting)


async def test_a_remembered_caller_is_answered_from_the_cache_before_any_dependency(
    applicant: Applicant, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = await in_review(applicant)
    url = f"/api/v1/applications/{app_id}"
    api = applicant.api
    first = await api.get(url, headers=applicant.headers)  # verified, rendered, cached
    verifies, renders = VerifyCount(monkeypatch), RenderCount(monkeypatch)
    second = await api.get(url, headers=applicant.headers)
    assert second.status_code == 200
    assert second.content == first.content
    assert (verifies.calls, renders.calls) == (0, 0)  # the shortcut answered
    assert second.headers["content-type"] == first.headers["content-type"] == "application/json"
    own = ("x-request-id", "date", "server-timing")  # each answer's own
    assert {k: v for k, v in second.headers.items() if k not in own} == {
        k: v for k, v in first.headers.items() if k not in own
    }
    assert second.headers["x-request-id"] != first.headers["x-request-id"]

    # Whatever the shortcut does not judge goes the ordinary way and gets the ordinary answer.
    upper = await api.get(
        url.upper().replace("/API/V1/APPLICATIONS/", "/api/v1/applications/"), headers=applicant.headers
    )
    assert upper.status_code == 200
    assert upper.content == first.content
    assert (verifies.calls, renders.calls) == (1, 0)  # the ordinary handler, answering from the same cache
    assert (await api.get(f"{url}?fields=all", headers=applicant.headers)).status_code == 422
    assert (await api.get(url, headers={"Authorization": "Basic " + "x" * 20})).status_code == 401
    finance = bearer(make_token(settings, "finance", "finance-1"))
    elsewhere = reviewer_headers(settings, "municipal", "110100")
    for _ in range(2):  # the second time these callers are remembered, and still refused the same way
        assert (await api.get(url, headers=finance)).status_code == 403
        assert (await api.get(url, headers=elsewhere)).status_code == 404
    assert renders.calls == 2  # the reviewer from elsewhere, refused twice on the ordinary path


async def test_the_shortcut_is_asked_once_per_request_before_routing_and_counted_by_its_route(
    applicant: Applicant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shortcut layer (services/shortcuts.py) asks the route's shortcut before the framework: a hit is
    answered there and counted under the route's template; a miss goes on to the route, which does not ask
    again."""
    app_id = await in_review(applicant)
    url = f"/api/v1/applications/{app_id}"
    api = applicant.api
    first = await api.get(url, headers=applicant.headers)  # rendered and cached
    asked: list[str] = []
    original = CachedViewRoute.shortcut

    async def counting(self: CachedViewRoute, request: Any) -> bytes | None:
        asked.append(request.url.path)
        return await original(self, request)

    monkeypatch.setattr(CachedViewRoute, "shortcut", counting)
    labels = {"method": "GET", "route": "/api/v1/applications/{application_id}", "status": "200"}
    before = REGISTRY.get_sample_value("giantflow_http_requests_total", labels) or 0.0
    hit = await api.get(url, headers=applicant.headers)
    assert hit.status_code == 200
    assert hit.content == first.content
    assert len(asked) == 1
    # A spelling the shortcut does not judge: asked once, then answered by the route's ordinary handler.
    upper = url.upper().replace("/API/V1/APPLICATIONS/", "/api/v1/applications/")
    miss = await api.get(upper, headers=applicant.headers)
    assert miss.status_code == 200
    assert miss.content == first.content
    assert len(asked) == 2
    assert REGISTRY.get_sample_value("giantflow_http_requests_total", labels) == before + 2
    # HEAD runs the route as GET (services/methods.py), where the route's handler asks the shortcut.
    head = await api.head(url, headers=applicant.headers)
    assert head.status_code == 200
    assert head.content == b""
    assert len(asked) == 3
