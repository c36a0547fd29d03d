"""Programs as managed data (services/catalog): versions created through the API are validated exactly as
program files are, read by the API and a worker without a restart, and an application keeps the version that
judged it - through its review and its benefits."""

from __future__ import annotations

import asyncio
import json
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.config import Settings
from services.programs import ProgramFileError, load_program_file
from services.resources import Resources
from tests.applications.conftest import poll, reviewer_headers
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, strong_metrics

PROGRAMS = Path(__file__).resolve().parents[2] / "programs"
DEMO_TEXT = (PROGRAMS / "demo.toml").read_text(encoding="utf-8")


def demo_document(key: str, **durations: str) -> dict[str, Any]:
    """The demo program file as a JSON document under another key (dates as ISO strings)."""
    document: dict[str, Any] = json.loads(json.dumps(tomllib.loads(DEMO_TEXT), default=str))
    document["key"] = key
    document["durations"].update(durations)
    return document


def fresh_key() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def admin(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, "admin", "admin-programs"))


# -- validated exactly as a file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["durations"].update(notice_period="five days"), "durations.notice_period"),
        (
            lambda d: d["tiers"]["specialized_new"].update(credit_line_limit=2000000.5),
            "tiers.specialized_new",
        ),
        (lambda d: d["durations"].update(re_review_window="PT400S"), "durations"),  # a cross-field check
        (  # the demo batch would be judged by a superseded standard
            lambda d: d.update(rulesets=[{"version": "national-2022", "effective_from": "2022-06-01"}]),
            "",
        ),
        (lambda d: d.update(surprise=True), "surprise"),
    ],
)
async def test_a_bad_document_is_refused_with_the_file_loaders_message(
    api: httpx.AsyncClient, admin: dict[str, str], tmp_path: Path, change: Callable[[Any], None], field: str
) -> None:
    document = demo_document(fresh_key())
    change(document)
    path = tmp_path / "program.toml"
    path.write_text(_toml(document), encoding="utf-8")
    with pytest.raises(ProgramFileError) as refused:
        load_program_file(path)
    file_message = str(refused.value).removeprefix(f"{path}: ")

    resp = await api.post("/api/v1/programs", headers=admin, json=document)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["detail"] == file_message
    assert body["errors"][0]["field"].startswith(field or "body")
    assert (await api.get(f"/api/v1/programs/{document['key']}", headers=admin)).status_code == 404


def _toml(document: dict[str, Any]) -> str:
    """A JSON document back as TOML (dates as TOML dates), enough for the demo program's shape."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str) and len(v) == 10 and v[4] == "-" and v[7] == "-":
            return v  # a date
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        return json.dumps(v)

    lines = []
    for key, v in document.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            continue
        lines.append(f'"{key}" = {value(v)}')
    for key, v in document.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"[[{key}]]")
                lines.extend(f'"{k}" = {value(x)}' for k, x in item.items())
    return "\n".join(lines) + "\n"


# -- versions, pick-up, pinning ----------------------------------------------------------------------


async def test_versions_are_numbered_listed_and_never_changed(
    api: httpx.AsyncClient, admin: dict[str, str], resources: Resources, settings: Settings
) -> None:
    key = fresh_key()
    created = await api.post("/api/v1/programs", headers=admin, json=demo_document(key))
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["current"], created.json()["source"]) == (
        1,
        True,
        "api",
    )
    assert (await api.post("/api/v1/programs", headers=admin, json=demo_document(key))).status_code == 409
    same = await api.post(f"/api/v1/programs/{key}/versions", headers=admin, json=demo_document(key))
    assert same.status_code == 409  # it would change nothing
    other_key = await api.post(f"/api/v1/programs/{key}/versions", headers=admin, json=demo_document("x-y"))
    assert other_key.status_code == 422
    assert other_key.json()["errors"][0]["field"] == "key"

    second = await api.post(
        f"/api/v1/programs/{key}/versions", headers=admin, json=demo_document(key, notice_period="PT5S")
    )
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 2
    # Read by this API at once (it swapped its book after the commit), and listed as current.
    assert resources.programs[key].durations.notice_period.iso == "PT5S"
    listed = {p["key"]: p for p in (await api.get("/api/v1/programs")).json()}
    assert (listed[key]["notice_period"], listed[key]["version"]) == ("PT5S", 2)
    history = (await api.get(f"/api/v1/programs/{key}/versions", headers=admin)).json()
    assert [(v["version"], v["current"]) for v in history] == [(2, True), (1, False)]
    first = (await api.get(f"/api/v1/programs/{key}/versions/1", headers=admin)).json()
    assert first["document"]["durations"]["notice_period"] == "PT20S"
    assert (await api.get(f"/api/v1/programs/{key}", headers=admin)).json()["version"] == 2

    # Editing a version is no request at all, and the database refuses it too: editing means a new version.
    edit = await api.put(f"/api/v1/programs/{key}/versions/1", headers=admin, json=demo_document(key))
    assert edit.status_code == 405
    async with resources.engine.connect() as conn:
        with pytest.raises(DBAPIError, match="append-only"):
            await conn.execute(
                text("UPDATE program_versions SET note = 'x' WHERE program = :key AND version = 1"),
                {"key": key},
            )

    enterprise = bearer(make_token(settings, "enterprise", "e-1", uscc=random_uscc("500103")))
    for headers in (enterprise, bearer(make_token(settings, "finance"))):
        assert (
            await api.post("/api/v1/programs", headers=headers, json=demo_document(fresh_key()))
        ).status_code == 403
        assert (await api.get(f"/api/v1/programs/{key}/versions", headers=headers)).status_code == 403


@pytest.fixture
async def separate_worker(resources: Resources, worker: Any) -> AsyncIterator[Resources]:
    """A worker process of its own: its own Resources and program registry (polling the database as a
    worker does), on a task queue the API now starts its workflows on."""
    from workflows.worker import build_worker

    queue = f"programs-{uuid.uuid4().hex[:8]}"
    settings = resources.settings.model_copy(update={"temporal_task_queue": queue})
    own = Resources(
        settings=settings,
        engine=resources.engine,
        sessionmaker=resources.sessionmaker,
        temporal=resources.temporal,
        http=resources.http,
        owns=False,
    )
    await own.program_registry.start()
    resources.settings = settings
    try:
        async with build_worker(resources.temporal, own, task_queue=queue):
            yield own
    finally:
        await own.close()


async def _register_and_submit(
    api: httpx.AsyncClient, settings: Settings, program: str
) -> tuple[str, dict[str, str]]:
    uscc = random_uscc("500103")
    headers = bearer(make_token(settings, "enterprise", f"user-{uscc}", uscc=uscc))
    registered = await api.post(
        "/api/v1/enterprises",
        headers=headers,
        json={
            "uscc": uscc,
            "name": f"Enterprise {uscc}",
            "region_code": "500103",
            "industry": "machinery",
            "founded_on": "2012-03-01",
        },
    )
    assert registered.status_code == 201, registered.text
    evidence = []
    for kind in ("business_licence", "financial_statements_3y"):
        uploaded = await api.post(
            "/api/v1/documents",
            headers=headers,
            data={"kind": kind},
            files={"file": (f"{kind}.pdf", b"%PDF-1.4 evidence", "application/pdf")},
        )
        assert uploaded.status_code == 201, uploaded.text
        evidence.append(uploaded.json()["id"])
    created = await api.post(
        "/api/v1/applications",
        headers=headers,
        json={
            "uscc": uscc,
            "program": program,
            "tier": "specialized_new",
            "metrics": strong_metrics(),
            "evidence": evidence,
        },
    )
    assert created.status_code == 201, created.text
    return created.json()["id"], headers


async def _approve_to_recognition(
    api: httpx.AsyncClient, settings: Settings, app_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    url = f"/api/v1/applications/{app_id}"
    for level, region in (("municipal", "500100"), ("provincial", "500000")):
        decided = await api.post(
            f"{url}/decisions",
            headers=reviewer_headers(settings, level, region),
            json={"decision": "approve", "reason": "complete"},
        )
        assert decided.status_code == 200, decided.text
    return await poll(api, url, headers, lambda b: b["status"] == "recognized", timeout=30)


async def _credit_limit(api: httpx.AsyncClient, headers: dict[str, str]) -> str:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        lines = (await api.get("/api/v1/credit-lines", headers=headers)).json()["items"]
        if lines:
            assert len(lines) == 1
            return str(lines[0]["limit"])
        assert asyncio.get_running_loop().time() < deadline, "no credit line"
        await asyncio.sleep(0.2)


async def test_a_new_version_is_picked_up_and_a_running_review_keeps_its_own(
    api: httpx.AsyncClient, admin: dict[str, str], settings: Settings, separate_worker: Resources
) -> None:
    key = fresh_key()
    v1 = demo_document(key, notice_period="PT1S")
    created = await api.post("/api/v1/programs", headers=admin, json=v1)
    assert created.status_code == 201, created.text

    # Filed under version 1 and in review before version 2 exists.
    first, first_headers = await _register_and_submit(api, settings, key)
    url = f"/api/v1/applications/{first}"
    body = await poll(api, url, first_headers, lambda b: b["status"] == "in_review")
    assert body["program_version"] == 1

    v2 = demo_document(key, notice_period="PT1S", validity="PT600S")
    v2["tiers"]["specialized_new"]["credit_line_limit"] = "2500000.00"
    created = await api.post(f"/api/v1/programs/{key}/versions", headers=admin, json=v2)
    assert created.status_code == 201, created.text
    # The worker reads it within about a second, without a restart.
    deadline = asyncio.get_running_loop().time() + 5
    while (
        separate_worker.programs.get(key) is None
        or separate_worker.programs[key].durations.validity.iso != "PT600S"
    ):
        assert asyncio.get_running_loop().time() < deadline, "the worker never read version 2"
        await asyncio.sleep(0.1)

    # A new application is judged by version 2 ...
    second, second_headers = await _register_and_submit(api, settings, key)
    assert (
        await poll(
            api, f"/api/v1/applications/{second}", second_headers, lambda b: b["status"] == "in_review"
        )
    )["program_version"] == 2

    # ... and the one started before completes under version 1: its validity and credit line are version 1's.
    done = await _approve_to_recognition(api, settings, first, first_headers)
    assert done["program_version"] == 1
    recognition = (await api.get("/api/v1/recognitions", headers=first_headers)).json()["items"][0]
    span = datetime.fromisoformat(recognition["valid_until"]) - datetime.fromisoformat(
        recognition["valid_from"]
    )
    assert span == timedelta(seconds=300)
    assert await _credit_limit(api, first_headers) == "2000000.00"

    done = await _approve_to_recognition(api, settings, second, second_headers)
    recognition = (await api.get("/api/v1/recognitions", headers=second_headers)).json()["items"][0]
    span = datetime.fromisoformat(recognition["valid_until"]) - datetime.fromisoformat(
        recognition["valid_from"]
    )
    assert span == timedelta(seconds=600)
    assert await _credit_limit(api, second_headers) == "2500000.00"


# -- batches --------------------------------------------------------------------------------------------


async def test_batches_are_added_opened_and_closed_as_versions(
    api: httpx.AsyncClient, admin: dict[str, str], settings: Settings
) -> None:
    key = fresh_key()
    today = datetime.now(UTC).date()
    document = demo_document(key)
    document["batches"] = [
        {
            "key": "next",
            "opens_on": str(today + timedelta(days=30)),
            "closes_on": str(today + timedelta(days=60)),
        }
    ]
    assert (await api.post("/api/v1/programs", headers=admin, json=document)).status_code == 201

    def open_now(listed: list[dict[str, Any]]) -> list[str]:
        program = next(p for p in listed if p["key"] == key)
        return [b["key"] for b in program["open_batches"]]

    assert open_now((await api.get("/api/v1/programs")).json()) == []
    not_open = await api.post(f"/api/v1/programs/{key}/batches/next/close", headers=admin)
    assert not_open.status_code == 409

    opened = await api.post(f"/api/v1/programs/{key}/batches/next/open", headers=admin)
    assert opened.status_code == 201, opened.text
    assert (opened.json()["version"], opened.json()["open_batches"]) == (2, ["next"])
    assert opened.json()["document"]["batches"][0]["opens_on"] == str(today)
    assert open_now((await api.get("/api/v1/programs")).json()) == ["next"]
    assert (await api.post(f"/api/v1/programs/{key}/batches/next/open", headers=admin)).status_code == 409

    first, headers = await _register_and_submit(api, settings, key)  # filed in the open batch
    assert (await api.get(f"/api/v1/applications/{first}", headers=headers)).json()["batch"] == "next"

    closed = await api.post(f"/api/v1/programs/{key}/batches/next/close", headers=admin)
    assert closed.status_code == 201, closed.text
    assert (closed.json()["version"], closed.json()["open_batches"]) == (3, [])
    assert open_now((await api.get("/api/v1/programs")).json()) == []

    reopen = await api.post(f"/api/v1/programs/{key}/batches/next/open", headers=admin, json={})
    assert reopen.status_code == 422  # closed: it needs a new closing day
    reopened = await api.post(
        f"/api/v1/programs/{key}/batches/next/open",
        headers=admin,
        json={"closes_on": str(today + timedelta(days=7))},
    )
    assert reopened.status_code == 201, reopened.text
    assert reopened.json()["open_batches"] == ["next"]

    added = await api.post(
        f"/api/v1/programs/{key}/batches",
        headers=admin,
        json={
            "key": "later",
            "opens_on": str(today + timedelta(days=90)),
            "closes_on": str(today + timedelta(days=120)),
        },
    )
    assert added.status_code == 201, added.text
    assert [b["key"] for b in added.json()["document"]["batches"]] == ["next", "later"]
    twice = await api.post(
        f"/api/v1/programs/{key}/batches",
        headers=admin,
        json={"key": "later", "opens_on": str(today), "closes_on": str(today)},
    )
    assert twice.status_code == 409
    old_standard = await api.post(
        f"/api/v1/programs/{key}/batches",
        headers=admin,
        json={"key": "past", "opens_on": "2026-12-01", "closes_on": "2026-11-01"},
    )
    assert old_standard.status_code == 422  # as a file with this batch would be refused
    assert old_standard.json()["errors"][0]["field"] == "batches[2].closes_on"
    assert (await api.post(f"/api/v1/programs/{key}/batches/none/open", headers=admin)).status_code == 404
    history = (await api.get(f"/api/v1/programs/{key}/versions", headers=admin)).json()
    assert [v["note"] for v in history][:3] == ["batch later added", "batch next opened", "batch next closed"]


# -- seeding ----------------------------------------------------------------------------------------------


async def test_files_seed_the_database_once(resources: Resources, tmp_path: Path) -> None:
    from services.catalog.registry import ProgramRegistry

    key = fresh_key()
    (tmp_path / "p.toml").write_text(DEMO_TEXT.replace('key = "demo"', f'key = "{key}"'), encoding="utf-8")
    first = ProgramRegistry(resources.engine, tmp_path)
    await first.start()
    await first.close()
    again = ProgramRegistry(resources.engine, tmp_path)
    await again.start()  # nothing new: still version 1
    assert again.book.numbers[key] == 1
    await again.close()

    # The file changed while the database's latest came from the file: the file is the next version.
    edited = DEMO_TEXT.replace('key = "demo"', f'key = "{key}"').replace('"PT20S"', '"PT25S"', 1)
    (tmp_path / "p.toml").write_text(edited, encoding="utf-8")
    third = ProgramRegistry(resources.engine, tmp_path)
    await third.start()
    assert third.book.numbers[key] == 2
    assert third.book.at(key, 1).durations.notice_period.iso == "PT20S"
    await third.close()

    # An admin made a version since (the database is ahead): a changed file is logged and not used.
    from services.catalog import repository

    async with resources.sessionmaker.begin() as session:
        document = third.book[key].model_dump(mode="json")
        document["durations"]["notice_period"] = "PT30S"
        await repository.add(session, key=key, version=3, document=document, source="api", created_by="admin")
    (tmp_path / "p.toml").write_text(edited.replace('"PT25S"', '"PT40S"'), encoding="utf-8")
    fourth = ProgramRegistry(resources.engine, tmp_path)
    await fourth.start()
    assert fourth.book.numbers[key] == 3
    assert fourth.book[key].durations.notice_period.iso == "PT30S"
    await fourth.close()
