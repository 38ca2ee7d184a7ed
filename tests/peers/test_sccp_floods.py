"""Call managers that flood: every SCCP operation still ends, its record stays bounded (issue 11).

A fake call manager (a few lines of asyncio: no real program floods on demand) answers the
station with a never-ending stream of frames — KeepAliveAck, or a message the station has no use
for — for longer than the operation's timeout. Each operation must end within its timeout plus
the teardown margin, keep at most 1000 messages / 1 MB of raw hex in ``exchange`` and count the
rest in ``droppedMessages``, and stay small in memory (tracemalloc peak). The wall-clock bound is
generous: it proves "ends", not speed.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from skinnysip.probes.sccp import TEARDOWN, SCCPRequest, SCCPResult, run_operation
from skinnysip.result import ExchangeLimit
from skinnysip.sccp.messages import FrameDecoder, encode

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

TIMEOUT_MS = 2000
#: the bound on "ends": the timeout, the teardown steps and a wide margin for a loaded machine
ENDS_WITHIN = TIMEOUT_MS / 1000 + 2 * TEARDOWN + 3.0
PEAK_BYTES = 40_000_000


@asynccontextmanager
async def flooding_cm(flood: bytes, *, ack_register: bool) -> AsyncIterator[tuple[int, list[int]]]:
    """A CM that (after RegisterAck, if ``ack_register``) writes ``flood`` frames without end;
    yields its port and a one-item list counting the frames it wrote."""
    written = [0]
    per_chunk = max(1, 65536 // len(flood))
    chunk = flood * per_chunk

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while True:  # wait for Register (or the probe's KeepAlive)
                data = await reader.read(4096)
                if not data:
                    return
                names = [m.name for m in decoder.feed(data)]
                if "Register" in names or "KeepAlive" in names:
                    break
            if ack_register and "Register" in names:
                writer.write(encode("RegisterAck", {"keepAliveInterval": 30}) + encode("CapabilitiesReq"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # bounded even if the station never leaves
                writer.write(chunk)
                written[0] += per_chunk
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], written
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def flooded(op: str, flood: bytes, *, ack_register: bool, **kw: object) -> tuple[SCCPResult, float, int, int]:
    """Run ``op`` against a flooding CM; (result, seconds, tracemalloc peak bytes, frames sent)."""
    async with flooding_cm(flood, ack_register=ack_register) as (port, written):
        request = SCCPRequest.model_validate({"host": "127.0.0.1", "port": port, "timeout": TIMEOUT_MS, **kw})
        tracemalloc.start()
        try:
            t0 = time.monotonic()
            result = await asyncio.wait_for(run_operation(op, request), 60)
            elapsed = time.monotonic() - t0
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return result, elapsed, peak, written[0]


def assert_bounded(result: SCCPResult, elapsed: float, peak: int) -> None:
    assert elapsed < ENDS_WITHIN, f"{result.operation} took {elapsed:.1f} s"
    assert len(result.exchange) <= 1000
    assert sum(len(m.raw) for m in result.exchange) <= 1_000_000
    assert result.dropped_messages > 0
    assert result.to_api()["droppedMessages"] == result.dropped_messages
    assert peak < PEAK_BYTES, f"tracemalloc peak {peak / 1e6:.1f} MB"


KEEPALIVE_ACK = encode("KeepAliveAck")
#: a CM→station message the station has no use for (DisplayNotify, reference §2)
NOTIFY = encode("DisplayNotify", {"timeout": 1, "notify": "flood"})


async def test_register_against_a_keepalive_ack_flood() -> None:
    """The case of issue 11: KeepAliveAck for the whole timeout, never a RegisterAck."""
    result, elapsed, peak, written = await flooded("register", KEEPALIVE_ACK, ack_register=False)
    assert not result.success and not result.registered
    assert result.error == f"no RegisterAck or RegisterReject within {TIMEOUT_MS} ms"
    assert_bounded(result, elapsed, peak)
    assert result.exchange[0].summary == "Register"
    assert {m.summary for m in result.exchange[1:]} == {"KeepAliveAck"}
    assert written > 1000 + result.dropped_messages // 2  # the CM really flooded


@pytest.mark.parametrize("op", ["linestate", "call-setup"])
async def test_flood_after_register_ack(op: str) -> None:
    """RegisterAck, then only noise: the configuration (or the call) never comes; the operation
    says so within its timeout, and still unregisters."""
    result, elapsed, peak, _ = await flooded(op, NOTIFY, ack_register=True, dialNumber="600")
    assert not result.success and result.registered
    assert result.error is not None and f"within {TIMEOUT_MS} ms" in result.error
    assert_bounded(result, elapsed, peak)
    sent = [m.summary for m in result.exchange if m.direction == "sent"]
    assert sent[:2] == ["Register", "CapabilitiesRes"]


async def test_probe_against_a_flood_of_other_messages() -> None:
    result, elapsed, peak, _ = await flooded("probe", NOTIFY, ack_register=False)
    assert not result.success and result.keep_alive_ack is False
    assert result.error == f"no KeepAliveAck within {TIMEOUT_MS} ms"
    assert_bounded(result, elapsed, peak)


async def test_probe_answered_at_once_keeps_a_small_record() -> None:
    """A flood of KeepAliveAck answers the probe's KeepAlive: success, and the frames that kept
    coming while the connection closed are counted, not kept."""
    result, elapsed, peak, _ = await flooded("probe", KEEPALIVE_ACK, ack_register=False)
    assert result.success and result.keep_alive_ack
    assert elapsed < ENDS_WITHIN and len(result.exchange) <= 1000 and peak < PEAK_BYTES


async def test_record_limit_is_configurable() -> None:
    async with flooding_cm(KEEPALIVE_ACK, ack_register=False) as (port, _):
        request = SCCPRequest.model_validate({"host": "127.0.0.1", "port": port, "timeout": 500})
        result = await run_operation("register", request, record_limit=ExchangeLimit(max_messages=10))
    assert len(result.exchange) == 10 and result.dropped_messages > 0
    async with flooding_cm(KEEPALIVE_ACK, ack_register=False) as (port, _):
        request = SCCPRequest.model_validate({"host": "127.0.0.1", "port": port, "timeout": 500})
        result = await run_operation("register", request, record_limit=ExchangeLimit(max_bytes=240))
    # Register is an 80-byte frame (160 hex digits), then 12-byte KeepAliveAcks (24 each)
    assert [m.summary for m in result.exchange] == ["Register"] + ["KeepAliveAck"] * 3
    assert sum(len(m.raw) for m in result.exchange) == 232


#: the biggest frame the station accepts (2000 bytes, [AST]'s cap) of a message it has no use for
BIG = encode("Unknown_0x7777", {"data": bytes(2000 - 12)})


@pytest.mark.parametrize("flood", [KEEPALIVE_ACK, BIG], ids=["keepalive-acks", "2000-byte-frames"])
async def test_long_lived_phone_keeps_the_newest_bounded_record(flood: bytes) -> None:
    """Without an operation's limit the phone keeps the newest messages, bounded in count and
    raw size; its waits still end on time."""
    from skinnysip.phone.sccp_phone import MAX_WIRE, MAX_WIRE_BYTES, SCCPAccount, SCCPPhone

    async with flooding_cm(flood, ack_register=False) as (port, _):
        phone = SCCPPhone(SCCPAccount(host="127.0.0.1", port=port, timeout=TIMEOUT_MS / 1000))
        tracemalloc.start()
        try:
            await phone.connect()
            t0 = time.monotonic()
            assert await phone.register() is None
            elapsed = time.monotonic() - t0
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            await asyncio.wait_for(phone.close(), 10)
    assert elapsed < ENDS_WITHIN
    assert len(phone.wire) <= MAX_WIRE and sum(len(m.raw) for m in phone.wire) <= MAX_WIRE_BYTES
    assert phone.wire_dropped > 0 and phone.wire[-1].summary != "Register"  # the newest kept
    assert peak < PEAK_BYTES, f"tracemalloc peak {peak / 1e6:.1f} MB"
