"""Every console router, and the static files (htmx, the style sheet), for create_app to mount."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles

from services.console.admin import router as admin_router
from services.console.finance import router as finance_router
from services.console.notifications import router as notifications_router
from services.console.reports import router as reports_router
from services.console.reviews import router as reviews_router
from services.console.signin import router as signin_router
from services.console.web import HERE, ConsoleRoute, error_page, gettext_for

fallback = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@fallback.get("/console/{rest:path}")
async def not_found(request: Request, rest: str) -> object:
    return error_page(
        request, 404, gettext_for(request)("Not found: there is nothing here that you may see.")
    )


CONSOLE_ROUTERS: list[APIRouter] = [
    signin_router,
    admin_router,
    reports_router,
    reviews_router,
    finance_router,
    notifications_router,
]


def mount_console(app: FastAPI) -> None:
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for router in CONSOLE_ROUTERS:
        app.include_router(router)
    app.include_router(fallback)  # last: the console's 404 page for any other path under /console/
