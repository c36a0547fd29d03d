"""Every domain router, each mounted under /api/v1 by create_app (directly on the app: a router nested in
another is matched level by level on every request)."""

from fastapi import APIRouter

from services.applications.imports_router import router as recognition_imports_router
from services.applications.panels_router import router as panels_router
from services.applications.public import router as public_router
from services.applications.router import ROUTERS as APPLICATIONS_ROUTERS
from services.catalog.router import router as catalog_router
from services.credit.reconciliation_router import router as reconciliation_router
from services.credit.router import router as credit_router
from services.notifications.router import document_webhooks
from services.notifications.router import router as notifications_router
from services.pools.router import router as pools_router
from services.reports.router import router as reports_router

API_PREFIX = "/api/v1"
DOMAIN_ROUTERS: list[APIRouter] = [
    *APPLICATIONS_ROUTERS,
    public_router,
    credit_router,
    reconciliation_router,
    notifications_router,
    pools_router,
    catalog_router,
    recognition_imports_router,
    panels_router,
    reports_router,
]

__all__ = ["API_PREFIX", "DOMAIN_ROUTERS", "document_webhooks"]
