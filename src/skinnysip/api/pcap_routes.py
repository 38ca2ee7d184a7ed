"""``POST /api/pcap``: a result's wire exchange back as a pcapng file for Wireshark.

The body is ``{"exchange": [...]}``, the ``exchange`` list of any SIP or SCCP result
unchanged (each item ``direction``, ``time`` s since the epoch, ``local``, ``remote``,
``transport``, ``summary``, ``raw``, optional ``decoded``); the answer is
``application/vnd.tcpdump.pcap`` (pcapng) written by :func:`skinnysip.pcap.exchange_to_pcapng`.
An exchange it cannot write (a host that is not an IP address, SCCP hex that is not hex, too
many messages) is a 400 naming the message and field: ``exchange[2].remote: …``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from skinnysip.api.sip_routes import IPV4_PATTERN, IPV6_PATTERN, PORT_PATTERN
from skinnysip.pcap import MAX_MESSAGES, PcapError, exchange_to_pcapng
from skinnysip.result import WireMessage

router = APIRouter(tags=["pcap"])

PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"


MAX_TIME = 1e12  # s since the epoch accepted in a message's time
_V4, _V6, _PORT = IPV4_PATTERN, IPV6_PATTERN, PORT_PATTERN


def _item(ip: str) -> dict[str, Any]:
    endpoint = {"type": "string", "pattern": f"^{ip}:{_PORT}$"}
    return {"properties": {"local": endpoint, "remote": endpoint}}


#: What the writer needs of each message, stated in the schema: IP-literal endpoints of one IP
#: version (IPv4 ``a.b.c.d:port`` or ``[v6]:port``), udp/tcp/tls, a time within pcapng's range,
#: and ``raw`` in hex when ``decoded`` is present (an SCCP frame).
EXCHANGE_ITEM_SCHEMA: dict[str, Any] = {
    "allOf": [
        {"$ref": "#/components/schemas/WireMessage"},
        {"oneOf": [_item(_V4), _item(rf"\[{_V6}\]")]},
        {"properties": {"transport": {"enum": ["udp", "tcp", "tls", "ws", "wss"]},
                        "time": {"type": "number", "minimum": 0, "maximum": MAX_TIME}}},
        {"if": {"required": ["decoded"], "properties": {"decoded": {"type": "object"}}},
         "then": {"properties": {"raw": {"type": "string", "pattern": "^(?:[0-9a-fA-F]{2})*$"}}}},
    ]
}


class PcapBody(BaseModel):
    """The exchange to write (and an optional file name); any other field is a 400."""

    model_config = ConfigDict(extra="forbid")

    exchange: Annotated[list[WireMessage], Field(max_length=MAX_MESSAGES)] = Field(
        description="A result's `exchange`, unchanged.",
        json_schema_extra={"items": EXCHANGE_ITEM_SCHEMA},
    )
    @model_validator(mode="after")
    def _times(self) -> PcapBody:
        # pcapng stores microseconds since the epoch as an unsigned 64-bit number
        for i, msg in enumerate(self.exchange):
            if not 0 <= msg.time <= MAX_TIME:
                raise ValueError(f"exchange[{i}].time: {msg.time} is not 0 to {MAX_TIME:.0f} s since the epoch")
        return self

    filename: str | None = Field(
        None, max_length=100, pattern=r"^[A-Za-z0-9._-]+$",
        description="File name for the download (default skinnysip-exchange.pcapng).",
    )


@router.post(
    "/api/pcap",
    response_class=Response,
    responses={200: {"content": {PCAP_MEDIA_TYPE: {}}, "description": "pcapng file"}},
)
async def pcap(body: PcapBody) -> Response:
    """Write the exchange as pcapng: UDP as IP/UDP, TCP as IP/TCP segments with continuous
    sequence numbers, TLS plaintext as Wireshark exported PDUs (see :mod:`skinnysip.pcap`)."""
    try:
        data = await asyncio.to_thread(exchange_to_pcapng, body.exchange)
    except PcapError as exc:
        return JSONResponse(status_code=400, content={"success": False, "error": str(exc)})
    name = body.filename or "skinnysip-exchange.pcapng"
    return Response(
        content=data,
        media_type=PCAP_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
