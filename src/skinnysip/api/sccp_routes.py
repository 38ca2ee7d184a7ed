"""HTTP routes for the SCCP operations (filled in by the SCCP work)."""

from fastapi import APIRouter

router = APIRouter()
