"""The expert pool over HTTP (services/applications/panels_router.py), in a rolled-back transaction; the draw,
the blind files and the answers run in tests/workflows/test_panels.py."""

from __future__ import annotations

import httpx

from services.config import Settings
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc

API = "/api/v1"


def admin(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, "admin", "admin-panels"))


def expert(settings: Settings, expert_id: str) -> dict[str, str]:
    return bearer(make_token(settings, "expert", f"user-{expert_id}", expert_id=expert_id))


async def test_the_pool_and_declared_conflicts(api_rollback: httpx.AsyncClient, settings: Settings) -> None:
    body = {"expert_id": "ex-1", "name": "Expert One", "region_code": "110105", "fields": ["machinery"]}
    created = await api_rollback.post(f"{API}/experts", headers=admin(settings), json=body)
    assert created.status_code == 201, created.text
    assert created.json()["fields"] == ["machinery"]
    again = await api_rollback.post(f"{API}/experts", headers=admin(settings), json=body)
    assert again.status_code == 409
    await api_rollback.post(
        f"{API}/experts", headers=admin(settings), json={**body, "expert_id": "ex-2", "region_code": "310104"}
    )

    uscc = random_uscc("500103")
    own = await api_rollback.post(
        f"{API}/experts/ex-1/conflicts", headers=expert(settings, "ex-1"), json={"uscc": uscc, "reason": "x"}
    )
    assert own.status_code == 201, own.text
    twice = await api_rollback.post(
        f"{API}/experts/ex-1/conflicts", headers=expert(settings, "ex-1"), json={"uscc": uscc}
    )
    assert twice.status_code == 409
    # another expert's conflicts are not the caller's to declare; an unknown expert is not found
    theirs = await api_rollback.post(
        f"{API}/experts/ex-2/conflicts", headers=expert(settings, "ex-1"), json={"uscc": uscc}
    )
    assert theirs.status_code == 404
    unknown = await api_rollback.post(
        f"{API}/experts/nobody/conflicts", headers=admin(settings), json={"uscc": uscc}
    )
    assert unknown.status_code == 404

    listed = await api_rollback.get(f"{API}/experts", headers=admin(settings), params={"limit": "1"})
    assert listed.status_code == 200
    page = listed.json()
    assert [e["expert_id"] for e in page["items"]] == ["ex-1"]
    assert page["items"][0]["conflicts"] == [uscc]
    rest = await api_rollback.get(
        f"{API}/experts", headers=admin(settings), params={"limit": "1", "cursor": page["next_cursor"]}
    )
    assert [e["expert_id"] for e in rest.json()["items"]] == ["ex-2"]


async def test_an_expert_token_opens_the_panel_endpoints_only(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    headers = expert(settings, "ex-1")
    for path in ("/applications", "/enterprises/" + random_uscc("500103"), "/recognitions", "/notifications"):
        resp = await api_rollback.get(f"{API}{path}", headers=headers)
        assert resp.status_code == 403, (path, resp.text)
    seats = await api_rollback.get(f"{API}/panel-assignments", headers=headers)
    assert seats.status_code == 200
    assert seats.json()["items"] == []
    none = await api_rollback.get(
        f"{API}/panel-assignments/{'0' * 8}-0000-4000-8000-{'0' * 12}", headers=headers
    )
    assert none.status_code == 404
    # only experts have seats
    assert (await api_rollback.get(f"{API}/panel-assignments", headers=admin(settings))).status_code == 403
