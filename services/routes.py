"""Every domain router, mounted under /api/v1."""

from fastapi import APIRouter

from services.applications.router import router as applications_router
from services.credit.router import router as credit_router

api_router = APIRouter()
api_router.include_router(applications_router)
api_router.include_router(credit_router)
