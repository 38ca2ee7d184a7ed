"""The FastAPI application: routers for SIP, SCCP, phones and pcap export, 400 on bad input;
the web page at ``/`` (files of :mod:`skinnysip.web` under ``/web/``); Swagger UI at ``/docs``
and ReDoc at ``/redoc`` from assets shipped in the ``fastapi-offline`` package (no CDN), each
page with a Content-Security-Policy that keeps the browser on this server.

As a service (:mod:`skinnysip.api.guard`, configured by :class:`ServiceSettings`): bearer
token (401), target policy (403), body cap (413), per-client rate and concurrency limits
(429 + ``Retry-After``), response cap; an unknown field is a 400 naming it; a wrong method a
405 with ``Allow``; no CORS. The OpenAPI document describes the real error bodies
(``{"success": false, "error": …}``) of every route instead of FastAPI's 422 model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from skinnysip import __version__
from skinnysip.api import lab_routes, pcap_routes, phone_routes, sccp_routes, sip_routes
from skinnysip.api.guard import ServiceGuard, ServiceSettings
from skinnysip.lab.runner import Lab
from skinnysip.result import validation_message

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
        msg = "unknown field" if err.get("type") == "extra_forbidden" else validation_message(str(err.get("msg", "invalid")))
        parts.append(f"{field}: {msg}")
    return "; ".join(parts) or "invalid request"


DOCS_ASSETS = "/static-offline-docs"
# No hidden traffic: the pages load nothing from anywhere but this server. ReDoc's bundle shows
# a Redocly logo from its CDN; the policy stops that request in the browser (the logo hides
# itself when it fails to load). Swagger UI's page starts it with an inline script.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:"


def _docs_pages(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the assets under DOCS_ASSETS, with DOCS_CSP."""
    assert app.openapi_url is not None and app.swagger_ui_oauth2_redirect_url is not None
    openapi_url, oauth2_redirect_url = app.openapi_url, app.swagger_ui_oauth2_redirect_url

    def guarded(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return guarded(get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        ))

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return guarded(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return guarded(get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        ))


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["success", "error"], "additionalProperties": True,
    "properties": {"success": {"type": "boolean", "enum": [False]},
                   "error": {"type": "string", "description": "What is wrong, one line."}},
}
_ERRORS = {
    "400": "Bad input: malformed JSON, a missing, unknown or invalid field (named in `error`).",
    "401": "The server requires `Authorization: Bearer <token>` and it is missing or wrong.",
    "403": "The server's target policy refuses the host this request would connect to.",
    "404": "No such phone or call (or no lab in this server).",
    "409": "The phone refuses the action (wrong state, limit reached, server unreachable).",
    "413": "The request body is larger than the server accepts.",
    "429": "Too many requests or operations from this client (or in total); see `Retry-After`.",
}


def _error_response(code: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": _ERRORS[code],
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if code == "429":
        out["headers"] = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
    if code == "401":
        out["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """The methods of every route whose path matches the request's (Starlette names only the
    first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    scope = {**request.scope, "method": "\x00"}
    pending = list(app.router.routes)
    for _ in range(10_000):  # bounded walk; FastAPI wraps included routers (original_router)
        if not pending:
            break
        route = pending.pop()
        inner = getattr(route, "original_router", None)
        if inner is not None:
            pending.extend(inner.routes)
            continue
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with the real error responses: 422 (never sent) replaced by the 400
    body; 401/413/429 on every ``/api/`` route but health; 403 where a route connects
    somewhere; 404/409 on the phone routes; a bearer security scheme."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "Required when the server listens beyond loopback (or was given a token)."}}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if path in ("/api/health",):
                continue
            codes = ["400", "401", "413", "429"]
            if method == "post" and any(path.startswith(p) for p in ("/api/sip/", "/api/sips/", "/api/sccp/")):
                codes.append("403")
            if path.startswith("/api/phones"):
                codes += ["403", "404", "409"]
            if path.startswith("/api/lab"):
                codes += ["404", "409"]
            for code in codes:
                responses.setdefault(code, _error_response(code))
            op["security"] = [{}, {"bearer": []}]
    app.openapi_schema = doc
    return doc


def create_app(settings: ServiceSettings | None = None, lab: Lab | None = None) -> FastAPI:
    """Build the API app guarded by ``settings`` (default: a loopback server's, from the
    environment: :meth:`ServiceSettings.for_listen`). Every route answers JSON; client errors
    are 400 ``{"success": false, "error": "<field>: <what is wrong>"}``. ``lab``: a running
    embedded lab (``serve --lab``; its owner closes it) shown at ``/api/lab``."""
    # FastAPIOffline is FastAPI plus the Swagger UI and ReDoc assets of its package, mounted at
    # DOCS_ASSETS; the /docs and /redoc pages are ours (below) so they carry DOCS_CSP.
    app = FastAPIOffline(
        docs_url=None,
        redoc_url=None,
        static_url=DOCS_ASSETS,
        title="skinnysip",
        version=__version__,
        description="Probe SIP/SIPS and SCCP servers; every result carries the full wire exchange.",
        lifespan=phone_routes.lifespan,  # closes every live phone on shutdown
    )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"success": False, "error": _describe_validation(list(exc.errors()))})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow lists every method of the path (RFC 9110 §15.5.6)
            headers["Allow"] = _allowed_methods(app, request) or headers.get("Allow", "")
        return JSONResponse(status_code=exc.status_code, content={"success": False, "error": str(exc.detail)},
                            headers=headers)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # last resort; operations should not raise
        return JSONResponse(status_code=500, content={"success": False, "error": f"internal error: {type(exc).__name__}"})

    app.include_router(sip_routes.router)
    app.include_router(sccp_routes.router)
    app.include_router(phone_routes.router)
    app.include_router(pcap_routes.router)
    app.include_router(lab_routes.router)
    app.state.lab = lab
    app.state.settings = settings = settings or ServiceSettings.for_listen("127.0.0.1")
    app.add_middleware(ServiceGuard, settings=settings)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.get("/api/health", tags=["meta"])
    async def health() -> dict[str, Any]:
        return {"success": True, "version": __version__}

    _docs_pages(app)

    index = WEB_DIR / "index.html"
    if WEB_DIR.is_dir():
        app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False, response_model=None)
    async def root() -> FileResponse | JSONResponse:
        if index.exists():
            return FileResponse(index, headers={"Content-Security-Policy": PAGE_CSP})
        return JSONResponse({"success": True, "docs": "/docs"})

    return app


app = create_app()
