"""The methods each path serves (RFC 9110 §9), whichever of its routes serves them.

Starlette answers a method no route of a path takes with a 405 from the first route whose path matched,
whose `Allow` names only that route's methods: `/api/v1/bridge-loans` said `Allow: POST` though a second
route serves GET there. `PathMethods` is one table of every route's path and methods, built from the app's
routes the first time it is asked (after every router is included) and never again; `MethodsLayer` serves
what the routes leave to the framework: HEAD wherever GET is (§9.3.2: the GET answer without its content)
and OPTIONS (§9.3.7: 204 with `Allow`; no CORS here, so no preflight to answer)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The order `Allow` lists methods in; any other a route declares follows them, sorted.
METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def route_path(scope: Scope) -> str:
    """The path routes match against: the request's path without the app's root path (as Starlette does)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (path == root or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def allow_header(methods: Iterable[str]) -> str:
    known = set(methods)
    ordered = [m for m in METHOD_ORDER if m in known]
    return ", ".join(ordered + sorted(known.difference(METHOD_ORDER)))


class PathMethods:
    """Which methods the app serves at a concrete path: the union over every route whose path matches it."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        # One entry per distinct path pattern; methods None: a route there takes any method.
        self._table: list[tuple[re.Pattern[str], frozenset[str] | None]] | None = None

    def _build(self) -> list[tuple[re.Pattern[str], frozenset[str] | None]]:
        patterns: dict[str, re.Pattern[str]] = {}
        methods: dict[str, set[str] | None] = {}
        for route in iter_route_contexts(self._app.routes):
            regex = getattr(route, "path_regex", None)
            if regex is None or isinstance(route.original_route, WebSocketRoute):
                continue
            declared = route.methods
            patterns.setdefault(regex.pattern, regex)
            known = methods.setdefault(regex.pattern, set())
            if not declared or known is None:
                methods[regex.pattern] = None  # Starlette: a route without methods matches every one
            else:
                known.update(m.upper() for m in declared)
        return [(patterns[p], None if m is None else frozenset(m)) for p, m in methods.items()]

    def served(self, path: str) -> frozenset[str] | None:
        """The methods routes declare at `path`; None when no route matches it, or one takes any method
        (nothing to say for the framework then)."""
        if self._table is None:
            self._table = self._build()
        found: set[str] = set()
        matched = False
        for regex, methods in self._table:
            if regex.match(path):
                if methods is None:
                    return None
                found |= methods
                matched = True
        return frozenset(found) if matched else None

    def allowed(self, path: str) -> frozenset[str] | None:
        """Every method a client may use at `path` (see `implied`); None as for `served`."""
        served = self.served(path)
        return None if served is None else implied(served)


def implied(served: frozenset[str]) -> frozenset[str]:
    """The declared methods, HEAD wherever GET, and OPTIONS: what `MethodsLayer` serves besides the routes."""
    return served | {"OPTIONS"} | ({"HEAD"} if "GET" in served else set())


class MethodsLayer:
    """Pure ASGI: OPTIONS on a path that has routes answers 204 with `Allow`; HEAD on a path served by GET
    runs GET and sends its status and headers without the content. Every other request passes untouched,
    as does a HEAD or OPTIONS that a route declares itself."""

    def __init__(self, app: ASGIApp, methods: PathMethods) -> None:
        self.app = app
        self.methods = methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        served = self.methods.served(route_path(scope))
        if served is None or method in served:
            await self.app(scope, receive, send)
        elif method == "OPTIONS":
            answer = Response(status_code=204, headers={"Allow": allow_header(implied(served))})
            await answer(scope, receive, send)
        elif "GET" in served:

            async def without_content(message: Message) -> None:
                if message["type"] == "http.response.body":
                    message = {**message, "body": b""}
                await send(message)

            await self.app({**scope, "method": "GET"}, receive, without_content)
        else:
            await self.app(scope, receive, send)  # the router's 405, with the path's `Allow`
