"""The embedded lab over HTTP: ``GET /api/lab`` (addresses, demo accounts, devices,
extensions), ``GET /api/lab/calls`` (every call the lab handled, with its messages) and
``GET /api/lab/stir.pem`` (the certificate of the lab's STIR/SHAKEN signatures: the ``x5u``
its Identity headers name).

The lab runs in the API server's event loop when ``skinnysip serve --lab`` started it
(``app.state.lab``, a running :class:`~skinnysip.lab.runner.Lab`); without it both routes
answer 404 ``{"success": false, "error": "no lab: start the server with --lab"}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from skinnysip.lab.runner import Lab

__all__ = ["router"]

router = APIRouter(tags=["lab"])

NO_LAB = "no lab: start the server with 'skinnysip serve --lab'"


def _lab(request: Request) -> Lab:
    lab = getattr(request.app.state, "lab", None)
    if lab is None or lab.proxy is None:
        raise HTTPException(404, NO_LAB)
    return lab  # type: ignore[no-any-return]


@router.get("/api/lab")
async def lab_info(request: Request) -> dict[str, Any]:
    """The running lab: ``{"enabled": true, "domain", "realm", "algorithm", "sip": {"udp",
    "tcp", "tls"} (each "host:port"), "sccp": "host:port", "accounts": [{"user", "password"
    (demo passwords only, else null), "aor"}], "devices": [{"name", "line"}], "extensions":
    {"600": "echo", …}, "registrations": [{"user", "contact", "expires" (s), "transport",
    "source", and where the phone gave them "instance" (its +sip.instance), "regId" (an RFC 5626
    outbound binding), "pubGruu"/"tempGruu" (RFC 5627), "path" (RFC 3327)}], "subscriptions":
    {"message-summary", "presence", "dialog" (live subscriptions to the lab as notifier, RFC 6665),
    "publications" (presence PUBLISHed to it, RFC 3903)}, "notes": [...]}``. 404 without a lab."""
    lab = _lab(request)
    body = lab.info()
    assert lab.proxy is not None
    body["registrations"] = lab.proxy.bindings()
    body["subscriptions"] = lab.proxy.subscriptions()
    return body


@router.get("/api/lab/calls")
async def lab_calls(request: Request) -> dict[str, Any]:
    """``{"calls": [{"callId", "from", "to", "method", "state", "started" (epoch s),
    "messages": [WireMessage…]}]}``, oldest first (the last 200 calls, 1000 messages each).
    404 without a lab."""
    return {"calls": _lab(request).calls()}


@router.get("/api/lab/stir.pem", response_class=Response,
            responses={200: {"content": {"application/pem-certificate-chain": {}}},
                       404: {"description": "No lab, or a lab that does not sign (stir.sign)."}})
async def lab_stir_certificate(request: Request) -> Response:
    """The certificate (PEM) the lab's STIR/SHAKEN signatures verify with (RFC 8224 §7.4; the
    ``x5u`` of its PASSporTs when ``serve --lab --stir`` set it). 404 without a lab or when
    the lab does not sign."""
    lab = _lab(request)
    if lab.stir_certificate is None:
        raise HTTPException(404, "the lab does not sign calls: start it with --stir (or stir.sign in its config)")
    return Response(lab.stir_certificate, media_type="application/pem-certificate-chain")
