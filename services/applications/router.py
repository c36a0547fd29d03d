"""HTTP routes of the applications domain."""

from fastapi import APIRouter

router = APIRouter(tags=["applications"])
