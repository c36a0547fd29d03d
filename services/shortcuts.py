"""Answers from the caches before the framework: the hot reads' route classes and the layer that asks them.

Three reads are answered from caches most of the time - ``GET /applications/{id}`` (the rendered views),
``GET /review-tasks`` (a reviewer's pages) and ``GET /payouts`` (finance's inbox). Their route classes
(``ShortcutRoute``) have a ``shortcut``: the cached bytes it may answer for a request, judged before FastAPI
solves any dependency, or None for anything else - which then takes the route's ordinary handler, answering
exactly as it would have.

``Shortcuts`` asks that shortcut one step earlier still: just inside the request-context middleware (request
id, security headers, the log line and the request metrics all apply), before Starlette's exception layers,
the routing of some seventy routes and FastAPI's request wrappers, which cost a cached answer a fifth of its
time on this machine (docs/performance.md). A GET whose path a shortcut route matches asks it once; a hit
is answered there, a miss goes on through the framework, whose route handler then does not ask again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from services.deps import StrictQueryRoute
from services.errors import GiantflowError
from services.methods import route_path
from services.telemetry import ROUTE_TEMPLATE

TRIED = "giantflow.shortcut_tried"  # the scope key saying the layer asked this request's shortcut already


class ShortcutRoute(StrictQueryRoute):
    """A route class whose ``shortcut`` may answer a GET from a cache before any dependency is solved."""

    async def shortcut(self, request: Request) -> bytes | None:
        """The cached JSON this request may be answered with, or None (the ordinary handler answers)."""
        raise NotImplementedError

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        ordinary = super().get_route_handler()

        async def handler(request: Request) -> Response:
            if not request.scope.get(TRIED):
                body = await self.shortcut(request)
                if body is not None:
                    return Response(body, media_type="application/json")
            return await ordinary(request)

        return handler


def _shortcut_routes(routes: Sequence[BaseRoute], *, prefix: str) -> Iterator[tuple[str, ShortcutRoute]]:
    """Each GET ``ShortcutRoute`` under ``routes`` with its full path. An included router is walked through
    its own routes and prefix (FastAPI keeps it as a branch, ``original_router`` + ``include_context``),
    not through ``iter_route_contexts``, which builds every route's request state - about 0.4 s an app."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            branch_prefix: str = getattr(route, "include_context").prefix  # noqa: B009 - FastAPI's private branch
            yield from _shortcut_routes(included.routes, prefix=prefix + branch_prefix)
        elif isinstance(route, ShortcutRoute) and "GET" in (route.methods or ()):
            yield prefix + route.path, route


class Shortcuts:
    """Pure ASGI: a GET for a path a ``ShortcutRoute`` serves is offered to its shortcut before the framework
    (see the module's text). The table of those routes is built on the first request, once every router is
    included."""

    def __init__(self, app: ASGIApp, *, routes_of: FastAPI) -> None:
        self.app = app
        self._routes_of = routes_of
        self._table: list[tuple[re.Pattern[str], str, ShortcutRoute, dict[str, Any]]] | None = None

    def _build(self) -> list[tuple[re.Pattern[str], str, ShortcutRoute, dict[str, Any]]]:
        table = []
        for path, route in _shortcut_routes(self._routes_of.routes, prefix=""):
            regex, template, convertors = compile_path(path)
            table.append((regex, template, route, convertors))
        return table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            if self._table is None:
                self._table = self._build()
            path = route_path(scope)
            for regex, template, route, convertors in self._table:
                matched = regex.match(path)
                if matched is None:
                    continue
                scope["path_params"] = {
                    name: convertors[name].convert(value) for name, value in matched.groupdict().items()
                }
                try:
                    body = await route.shortcut(Request(scope, receive))
                except GiantflowError:  # the ordinary handler answers it with its problem
                    body = None
                if body is not None:
                    scope[ROUTE_TEMPLATE] = template
                    await Response(body, media_type="application/json")(scope, receive, send)
                    return
                scope[TRIED] = True
                break
        await self.app(scope, receive, send)
