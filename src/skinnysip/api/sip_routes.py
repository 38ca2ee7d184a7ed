"""HTTP routes for the SIP operations (filled in by the SIP work)."""

from fastapi import APIRouter

router = APIRouter()
