"""HTTP routes for the SCCP operations: ``POST /api/sccp/{probe,register,linestate,call-setup}``.

A route validates the JSON body (:class:`~skinnysip.probes.sccp.SCCPRequest`: ``host``
required; ``port`` 2000, or 2443 with ``tls``; ``deviceName`` ``SEP001122334455``;
``deviceType`` 7 (Cisco 7960); ``timeout`` ms (100–60000, default 10000); ``tls``,
``tlsVerify``, ``protocolVersion`` (0–22, default 11), ``lineNumber``, ``dialNumber``,
``holdMs`` (0–120000)), runs the operation of :mod:`skinnysip.probes.sccp` and returns its
result's ``to_api()`` unchanged — the same body ``skinnysip sccp … --json`` prints, described
in the OpenAPI document by :data:`RESPONSE_MODEL` (the ``SCCPResult`` dataclass's fields).

A bad or unknown field is a 400 ``{"success": false, "error": "<field>: <what is wrong>"}``
(the app's validation handler); a host the server's target policy refuses is a 403 with the
reason (:mod:`skinnysip.api.guard`); a dead, silent, rejecting or garbage-speaking server is a 200 with
``success: false`` and ``error``. Times are milliseconds.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, model_validator

from skinnysip.api.guard import check_target
from skinnysip.api.sip_routes import HOST_SCHEMA, integral_floats
from skinnysip.models import api_model
from skinnysip.probes.sccp import DIAL_PATTERN, SCCPRequest, SCCPResult, run_operation
from skinnysip.sccp.station import DEVICE_NAME_RULES

router = APIRouter(tags=["sccp"])

#: the device names :func:`skinnysip.sccp.station.validate_device_name` accepts, as one pattern
DEVICE_NAME_PATTERN = "^(?:" + "|".join(p.pattern for _, p in DEVICE_NAME_RULES) + ")$"


class SCCPBody(SCCPRequest):
    """:class:`SCCPRequest` with unknown fields refused (400 naming the field) and the host's
    pattern in the schema. ``server`` is an alias of ``host`` (give one)."""

    model_config = ConfigDict(**{**SCCPRequest.model_config, "extra": "forbid"})

    host: str = Field(min_length=1, max_length=255, json_schema_extra=HOST_SCHEMA,
                      description="Call manager: host name, IPv4 or IPv6 address.", examples=["127.0.0.1"])
    device_name: str = Field("SEP001122334455", json_schema_extra={"pattern": DEVICE_NAME_PATTERN},
                             description="; ".join(rule for rule, _ in DEVICE_NAME_RULES) + ".")

    server: str | None = Field(None, min_length=1, max_length=255, json_schema_extra=HOST_SCHEMA,
                               description="The seed's name for `host`: give exactly one of them.")

    @model_validator(mode="before")
    @classmethod
    def _server_alias(cls, data: Any) -> Any:
        data = integral_floats(cls, data)
        if isinstance(data, dict) and data.get("server") is not None:
            if data.get("host") is not None:
                raise ValueError("give `host` or `server` (the same field), not both")
            data = {**data, "host": data["server"]}
        return data


def _one_host(schema: dict[str, Any]) -> None:
    # the combination the validator enforces: exactly one of host / server
    schema["required"] = [r for r in schema.get("required", []) if r != "host"]
    schema["oneOf"] = [{"required": ["host"]}, {"required": ["server"]}]


SCCPBody.model_config["json_schema_extra"] = _one_host
SCCPBody.model_rebuild(force=True)


class SCCPCallBody(SCCPBody):
    """``/api/sccp/call-setup``: ``dialNumber`` is required."""

    dial_number: str = Field(pattern=DIAL_PATTERN, description="Number to dial: 0-9 * # A-D +, 1-24.")


SCCPCallBody.model_config["json_schema_extra"] = _one_host
SCCPCallBody.model_rebuild(force=True)


#: the response body of every SCCP route: the operation's result as ``to_api()`` gives it
RESPONSE_MODEL = api_model(SCCPResult)


async def _run(name: str, req: SCCPBody) -> JSONResponse:
    await check_target(req.host)
    return JSONResponse((await run_operation(name, req)).to_api())


@router.post("/api/sccp/probe", response_model=RESPONSE_MODEL)
async def sccp_probe(req: SCCPBody) -> JSONResponse:
    """Connect and exchange KeepAlive → KeepAliveAck; reports ``keepAliveAck``, ``connectMs``,
    ``latencyMs``."""
    return await _run("probe", req)


@router.post("/api/sccp/register", response_model=RESPONSE_MODEL)
async def sccp_register(req: SCCPBody) -> JSONResponse:
    """Register (RegisterAck or RegisterReject with its reason), answer capabilities, unregister."""
    return await _run("register", req)


@router.post("/api/sccp/linestate", response_model=RESPONSE_MODEL)
async def sccp_linestate(req: SCCPBody) -> JSONResponse:
    """Register and report lines (number, label, display name), speed dials and soft keys."""
    return await _run("linestate", req)


@router.post("/api/sccp/call-setup", response_model=RESPONSE_MODEL)
async def sccp_call_setup(req: SCCPCallBody) -> JSONResponse:
    """Register, go off-hook, dial ``dialNumber``, hold ``holdMs`` with RTP both ways, hang up;
    reports ``rtpPacketsSent`` / ``rtpPacketsReceived`` and the call's states. ``dialNumber``
    is required here (400 without it)."""
    return await _run("call-setup", req)
