"""Recognitions imported from a ministry's published list (services/applications/imported.py): entered one by
one or as a CSV, shown like any other recognition, and given their program's benefits exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.applications import service
from services.auth import CurrentUser, Role
from services.config import Settings
from services.resources import Resources
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def admin(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, "admin", "admin-imports"))


def owner(settings: Settings, uscc: str) -> dict[str, str]:
    return bearer(make_token(settings, "enterprise", f"user-{uscc}", uscc=uscc))


def row(uscc: str, reference: str, **extra: Any) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    return {
        "program": "demo",
        "tier": "specialized_new",
        "uscc": uscc,
        "name": f"Listed {uscc}",
        "region_code": "500103",
        "industry": "machinery",
        "founded_on": "2011-05-01",
        "batch": "2026-6",
        "list_reference": reference,
        "recognized_on": str(today - timedelta(days=3)),
        "valid_until": str(today + timedelta(days=3 * 365)),
        **extra,
    }


async def credit_lines(api: httpx.AsyncClient, headers: dict[str, str], *, at_least: int = 1) -> list[Any]:
    """The credit lines once `at_least` are there, then a moment more (a duplicate would show)."""
    for _ in range(200):
        items: list[Any] = (await api.get("/api/v1/credit-lines", headers=headers)).json()["items"]
        if len(items) >= at_least:
            await asyncio.sleep(1.0)
            items = (await api.get("/api/v1/credit-lines", headers=headers)).json()["items"]
            return items
        await asyncio.sleep(0.1)
    raise AssertionError("no credit line")


async def test_one_row_imported_twice_is_one_recognition_with_its_benefits_once(
    api: httpx.AsyncClient, admin: dict[str, str], settings: Settings, resources: Resources
) -> None:
    uscc = random_uscc("500103")  # not registered: the row registers it
    reference = f"工信部2026年第{uuid.uuid4().hex[:6]}批"
    first = await api.post("/api/v1/recognitions/imports", headers=admin, json=row(uscc, reference))
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["unchanged"], body["refused"]) == (1, 0, 0)
    recognition = body["recognitions"][0]
    assert (recognition["source"], recognition["list_reference"], recognition["batch"]) == (
        "import",
        reference,
        "2026-6",
    )
    assert recognition["application_id"] is None
    assert recognition["certificate_no"].startswith("DEMO-")

    again = await api.post("/api/v1/recognitions/imports", headers=admin, json=row(uscc, reference))
    assert again.status_code == 200, again.text
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 1)
    assert again.json()["recognitions"][0]["id"] == recognition["id"]

    headers = owner(settings, uscc)
    lines = await credit_lines(api, headers)
    assert [line["limit"] for line in lines] == ["2000000.00"]  # the program's amount, once
    benefits = (await api.get("/api/v1/benefits", headers=headers)).json()["items"]
    assert sorted(b["kind"] for b in benefits).count("credit_line") == 1

    # Like any other: on the enterprise, in its list, in public verification, in the counts.
    profile = (await api.get(f"/api/v1/enterprises/{uscc}", headers=headers)).json()
    assert profile["name"] == f"Listed {uscc}"
    assert [t["tier"] for t in profile["current_tiers"]] == ["specialized_new"]
    listed = (await api.get("/api/v1/recognitions", headers=headers)).json()["items"]
    assert [r["id"] for r in listed] == [recognition["id"]]
    public = (await api.get(f"/api/v1/public/recognitions/{recognition['certificate_no']}")).json()
    assert (public["status"], public["tier"]) == ("valid", "specialized_new")
    async with resources.sessionmaker() as session:
        counts = await service.recognition_counts(
            session, user=CurrentUser(sub="a", role=Role.admin), filters={"uscc": uscc}
        )
    assert (counts.total, counts.by_province) == (1, [("500000", 1)])

    # Revoked by an admin like any other: public verification says so.
    revoked = await api.post(
        f"/api/v1/recognitions/{recognition['id']}/revocation",
        headers=admin,
        json={"reason": "withdrawn from list"},
    )
    assert revoked.status_code == 200, revoked.text
    public = (await api.get(f"/api/v1/public/recognitions/{recognition['certificate_no']}")).json()
    assert public["status"] == "revoked"


async def test_a_csv_list_imported_twice_changes_nothing_the_second_time(
    api: httpx.AsyncClient, admin: dict[str, str], settings: Settings
) -> None:
    known = random_uscc("500103")
    registered = await api.post(
        "/api/v1/enterprises",
        headers=owner(settings, known),
        json={
            "uscc": known,
            "name": "Known Co",
            "region_code": "500103",
            "industry": "x",
            "founded_on": "2010-01-01",
        },
    )
    assert registered.status_code == 201, registered.text
    new = random_uscc("500103")
    reference = f"工信部2026年第{uuid.uuid4().hex[:6]}批"
    header = "统一社会信用代码,企业名称,地区,行业,成立日期,项目,梯度,批次,名单,认定日期,有效期至"
    good = row(new, reference)
    lines = [
        header,
        f"{new},重庆某机械有限公司,500103,机械,2011-05-01,demo,specialized_new,2026-6,{reference},"
        f"{good['recognized_on']},{good['valid_until']}",
        f"{known},,,,,demo,specialized_new,2026-6,{reference},{good['recognized_on']},{good['valid_until']}",
        f"91500000000000000X,坏代码,500103,机械,2011-05-01,demo,specialized_new,2026-6,{reference},"
        f"{good['recognized_on']},",
        f"{random_uscc('500103')},无名,500103,机械,2011-05-01,demo,single_champion,2026-6,{reference},"
        f"{good['recognized_on']},",
        "",
    ]
    content = "\r\n".join(lines).encode("gbk")  # GBK, as lists often are
    files = {"file": ("名单.csv", content, "text/csv")}

    first = await api.post("/api/v1/recognitions/imports", headers=admin, files=files)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["unchanged"], body["refused"]) == (2, 0, 2)
    assert {(e["line"], e["field"]) for e in body["errors"]} == {(4, "uscc"), (5, "tier")}
    assert {r["uscc"] for r in body["recognitions"]} == {new, known}

    second = await api.post("/api/v1/recognitions/imports", headers=admin, files=files)
    assert (second.json()["created"], second.json()["unchanged"], second.json()["refused"]) == (0, 2, 2)
    for uscc in (new, known):
        assert len(await credit_lines(api, owner(settings, uscc))) == 1
    profile = (await api.get(f"/api/v1/enterprises/{new}", headers=owner(settings, new))).json()
    assert profile["name"] == "重庆某机械有限公司"


async def test_imports_are_refused_to_others_and_for_bad_input(
    api: httpx.AsyncClient, admin: dict[str, str], settings: Settings
) -> None:
    body = row(random_uscc("500103"), "工信部2026年第一批")
    for headers in (owner(settings, body["uscc"]), bearer(make_token(settings, "finance"))):
        assert (await api.post("/api/v1/recognitions/imports", headers=headers, json=body)).status_code == 403
    bad = await api.post(
        "/api/v1/recognitions/imports", headers=admin, json={**body, "uscc": "91500000000000000X"}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "uscc"
    unknown = await api.post(
        "/api/v1/recognitions/imports", headers=admin, json={**body, "name": None, "founded_on": None}
    )
    assert unknown.status_code == 422
    assert {e["field"] for e in unknown.json()["errors"]} == {"name", "founded_on"}
    pdf = await api.post(
        "/api/v1/recognitions/imports",
        headers=admin,
        files={"file": ("x.csv", b"\xff\xfe\x00garbage\xff", "text/csv")},
    )
    assert pdf.status_code == 422
    text = await api.post(
        "/api/v1/recognitions/imports", headers={**admin, "content-type": "text/plain"}, content=b"x"
    )
    assert text.status_code == 415
