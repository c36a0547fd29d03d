"""Methods per path (RFC 9110): a 405's `Allow` lists every method the path serves, whichever route serves
it; OPTIONS answers 204 with that `Allow`; HEAD is served wherever GET is."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

ANY_ID = "7b0c9a4e-5d1f-4c3b-9e2a-6f8d0b1c2a3e"  # no such object: routing answers before any lookup

# Every method a path serves, as a client may rely on them: HEAD wherever GET, OPTIONS everywhere.
PATH_METHODS = {
    "/api/v1/bridge-loans": {"GET", "HEAD", "POST", "OPTIONS"},
    "/api/v1/applications": {"GET", "HEAD", "POST", "OPTIONS"},
    f"/api/v1/documents/{ANY_ID}": {"GET", "HEAD", "OPTIONS"},
    f"/api/v1/applications/{ANY_ID}/submit": {"POST", "OPTIONS"},
    f"/api/v1/applications/{ANY_ID}/supplements": {"POST", "OPTIONS"},
    "/api/v1/credit-lines": {"GET", "HEAD", "OPTIONS"},
    "/healthz": {"GET", "HEAD", "OPTIONS"},
}


def allowed(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["allow"].split(",") if m.strip()}


@pytest.mark.parametrize(("path", "methods"), PATH_METHODS.items())
async def test_a_405_allows_every_method_the_path_serves(
    api_rollback: httpx.AsyncClient, path: str, methods: set[str]
) -> None:
    resp = await api_rollback.delete(path)
    assert resp.status_code == 405
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["detail"] == f"DELETE is not allowed on {path}"
    assert allowed(resp) == methods


@pytest.mark.parametrize(("path", "methods"), PATH_METHODS.items())
async def test_options_answers_204_with_the_paths_methods(
    api_rollback: httpx.AsyncClient, path: str, methods: set[str]
) -> None:
    resp = await api_rollback.options(path)
    assert resp.status_code == 204
    assert resp.content == b""
    assert allowed(resp) == methods
    assert resp.headers["x-content-type-options"] == "nosniff"  # still passes through the app's middleware


async def test_options_on_an_unknown_path_is_a_404(api_rollback: httpx.AsyncClient) -> None:
    resp = await api_rollback.options("/api/v1/no-such-thing")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"


async def test_head_answers_as_get_without_a_body(api_rollback: httpx.AsyncClient) -> None:
    got = await api_rollback.get("/healthz")
    head = await api_rollback.head("/healthz")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]
    # A refusal is the same as GET's, its body left off.
    anonymous = await api_rollback.head("/api/v1/credit-lines")
    assert anonymous.status_code == 401
    assert anonymous.content == b""
    assert anonymous.headers["content-type"] == "application/problem+json"


async def test_head_where_there_is_no_get_is_a_405(api_rollback: httpx.AsyncClient) -> None:
    resp = await api_rollback.head("/api/v1/enterprises")
    assert resp.status_code == 405
    assert allowed(resp) == {"POST", "OPTIONS"}


async def test_the_table_is_built_once_from_every_matching_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two patterns that both match one path (`/items/{item}` and `/items/special`) each lend their
    methods; the routes are read on the first question only."""
    from fastapi import FastAPI

    from services.errors import install_problem_handlers
    from services.methods import PathMethods

    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/items/{item}")
    async def read(item: str) -> dict[str, str]:
        return {"item": item}

    @app.delete("/items/special")
    async def remove() -> None:
        return None

    builds = 0
    build = PathMethods._build

    def counted(self: PathMethods) -> Any:
        nonlocal builds
        builds += 1
        return build(self)

    monkeypatch.setattr(PathMethods, "_build", counted)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        put = await client.put("/items/special")
        assert put.status_code == 405
        assert allowed(put) == {"GET", "HEAD", "DELETE", "OPTIONS"}
        options = await client.options("/items/other")
        assert options.status_code == 204
        assert allowed(options) == {"GET", "HEAD", "OPTIONS"}
        assert (await client.head("/items/special")).status_code == 200
    assert builds == 1
