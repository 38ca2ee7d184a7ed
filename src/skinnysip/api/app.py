"""The FastAPI application: routers for SIP, SCCP, phones and pcap export, 400 on bad input;
the web page at ``/`` (files of :mod:`skinnysip.web` under ``/web/``); Swagger UI at ``/docs``
and ReDoc at ``/redoc`` from assets shipped in the ``fastapi-offline`` package (no CDN)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from skinnysip import __version__
from skinnysip.api import pcap_routes, phone_routes, sccp_routes, sip_routes

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "")
            parts.append(f"body: invalid JSON at character {err['loc'][-1]}" + (f" ({reason})" if reason else ""))
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        field = ".".join(loc) or "body"
        parts.append(f"{field}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app() -> FastAPI:
    """Build the API app. Every route answers JSON; client errors are 400
    ``{"success": false, "error": "<field>: <what is wrong>"}``."""
    # FastAPIOffline is FastAPI with /docs and /redoc pointing at its packaged assets
    # (served under /static-offline-docs), so the docs render without internet.
    app = FastAPIOffline(
        title="skinnysip",
        version=__version__,
        description="Probe SIP/SIPS and SCCP servers; every result carries the full wire exchange.",
        lifespan=phone_routes.lifespan,  # closes every live phone on shutdown
    )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"success": False, "error": _describe_validation(list(exc.errors()))})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"success": False, "error": str(exc.detail)})

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # last resort; operations should not raise
        return JSONResponse(status_code=500, content={"success": False, "error": f"internal error: {type(exc).__name__}"})

    app.include_router(sip_routes.router)
    app.include_router(sccp_routes.router)
    app.include_router(phone_routes.router)
    app.include_router(pcap_routes.router)

    @app.get("/api/health", tags=["meta"])
    async def health() -> dict[str, Any]:
        return {"success": True, "version": __version__}

    index = WEB_DIR / "index.html"
    if WEB_DIR.is_dir():
        app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False, response_model=None)
    async def root() -> FileResponse | JSONResponse:
        if index.exists():
            return FileResponse(index)
        return JSONResponse({"success": True, "docs": "/docs"})

    return app


app = create_app()
