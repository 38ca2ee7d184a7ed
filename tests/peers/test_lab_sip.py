"""The lab's SIP registrar and proxy against real phones on 127.0.0.1: baresip registers over
UDP, TCP and TLS and calls the lab's echo (its recording has its own tone back), baresip and
our SIPPhone call each other through the lab with audio both ways (tone frequencies in both
recordings), 404/480/486 as a PBX answers, binding expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from baresip_peer import baresip
from test_phone_baresip import share_of

from skinnysip.lab.config import LabSettings
from skinnysip.lab.runner import Lab
from skinnysip.phone.sip_phone import SIPAccount

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

DOMAIN = "skinnysip.test"  # the baresip harness's AOR domain
OUR_TONE, THEIR_TONE = 440.0, 660.0


def settings(**kw: object) -> LabSettings:
    base: dict[str, object] = dict(domain=DOMAIN, realm=DOMAIN, hosts=("127.0.0.1",), sip_port=0, sips_port=0,
                                   sccp_port=0)
    base.update(kw)
    return LabSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(settings()) as running:
        yield running


def port(lab: Lab, transport: str) -> int:
    return int(lab.sip[transport].rsplit(":", 1)[1])


async def registered(lab: Lab, user: str, count: int = 1, timeout: float = 10.0) -> None:
    assert lab.proxy is not None
    for _ in range(int(timeout / 0.1)):
        if len([b for b in lab.proxy.bindings() if b["user"] == user]) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user} never registered: {lab.proxy.bindings()}")


def account(lab: Lab, user: str, transport: str = "udp", **kw: object) -> SIPAccount:
    return SIPAccount(aor=f"sip:{user}@{DOMAIN}", password=f"demo{user}", registrar=f"127.0.0.1:{port(lab, transport)}",
                      transport=transport, tls_verify=False, expires=60, source=f"tone:{OUR_TONE}",  # type: ignore[arg-type]
                      **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_baresip_registers_and_hears_the_echo(lab: Lab, transport: str) -> None:
    async with baresip("1001", "demo1001", f"127.0.0.1:{port(lab, transport)}", transport=transport,
                       tone_hz=THEIR_TONE) as phone:
        await registered(lab, "1001")
        binding = next(b for b in lab.proxy.bindings() if b["user"] == "1001")  # type: ignore[union-attr]
        assert binding["transport"] == transport
        await phone.command("dial", f"sip:600@{DOMAIN}")
        await phone.wait_event("CALL_ESTABLISHED", timeout=15)
        await asyncio.sleep(4)
        await phone.command("hangup")
        await phone.wait_event("CALL_CLOSED")
        heard = share_of(phone.recordings()["dec"], THEIR_TONE, skip=0.5)
    assert heard >= 0.85, heard
    calls = lab.calls()
    call = next(c for c in calls if c["to"].startswith("sip:600@"))
    summaries = [m["summary"] for m in call["messages"]]
    assert "407 Proxy Authentication Required" in summaries and any(s.startswith("ACK") for s in summaries)
    assert any(s.startswith("BYE") for s in summaries) and call["state"] == "ended"
