"""HTTP routes of the credit domain (benefits, credit lines, drawdowns, disbursements, funds, listings)."""

from fastapi import APIRouter

router = APIRouter(tags=["credit"])
