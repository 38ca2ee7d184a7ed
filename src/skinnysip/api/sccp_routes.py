"""HTTP routes for the SCCP operations: ``POST /api/sccp/{probe,register,linestate,call-setup}``.

A route validates the JSON body (:class:`~skinnysip.probes.sccp.SCCPRequest`: ``host``
required; ``port`` 2000, or 2443 with ``tls``; ``deviceName`` ``SEP001122334455``;
``deviceType`` 7 (Cisco 7960); ``timeout`` ms (100–60000, default 10000); ``tls``,
``tlsVerify``, ``protocolVersion`` (0–22, default 11), ``lineNumber``, ``dialNumber``,
``holdMs`` (0–120000)), runs the operation of :mod:`skinnysip.probes.sccp` and returns its
result's ``to_api()`` unchanged — the same body ``skinnysip sccp … --json`` prints.

A bad field is a 400 ``{"success": false, "error": "<field>: <what is wrong>"}`` (the app's
validation handler); a dead, silent, rejecting or garbage-speaking server is a 200 with
``success: false`` and ``error``. Times are milliseconds.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from skinnysip.probes.sccp import SCCPRequest, run_operation

router = APIRouter(tags=["sccp"])


@router.post("/api/sccp/probe")
async def sccp_probe(req: SCCPRequest) -> dict[str, Any]:
    """Connect and exchange KeepAlive → KeepAliveAck; reports ``keepAliveAck``, ``connectMs``,
    ``latencyMs``."""
    return (await run_operation("probe", req)).to_api()


@router.post("/api/sccp/register")
async def sccp_register(req: SCCPRequest) -> dict[str, Any]:
    """Register (RegisterAck or RegisterReject with its reason), answer capabilities, unregister."""
    return (await run_operation("register", req)).to_api()


@router.post("/api/sccp/linestate")
async def sccp_linestate(req: SCCPRequest) -> dict[str, Any]:
    """Register and report lines (number, label, display name), speed dials and soft keys."""
    return (await run_operation("linestate", req)).to_api()


@router.post("/api/sccp/call-setup", response_model=None)
async def sccp_call_setup(req: SCCPRequest) -> dict[str, Any] | JSONResponse:
    """Register, go off-hook, dial ``dialNumber``, hold ``holdMs`` with RTP both ways, hang up;
    reports ``rtpPacketsSent`` / ``rtpPacketsReceived`` and the call's states. ``dialNumber``
    is required here (400 without it)."""
    if not req.dial_number:
        return JSONResponse(status_code=400, content={"success": False, "error": "dialNumber: Field required"})
    return (await run_operation("call-setup", req)).to_api()
