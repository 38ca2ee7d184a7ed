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
from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from skinnysip.pcap import MAX_MESSAGES, PcapError, exchange_to_pcapng
from skinnysip.result import WireMessage

router = APIRouter(tags=["pcap"])

PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"


class PcapBody(BaseModel):
    """The exchange to write (and an optional file name); any other field is a 400."""

    model_config = ConfigDict(extra="forbid")

    exchange: Annotated[list[WireMessage], Field(max_length=MAX_MESSAGES)] = Field(
        description="A result's `exchange`, unchanged."
    )
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
