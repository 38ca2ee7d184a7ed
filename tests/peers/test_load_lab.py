"""``skinnysip load call`` against the lab's echo (extension 600) through the lab's proxy:
INVITE challenged 407 and answered with digest, the echo reflects our RTP, the calls the lab
recorded are the calls we counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from skinnysip.lab.config import LabSettings
from skinnysip.lab.runner import Lab
from skinnysip.load.runner import run_local, summary
from skinnysip.load.scenarios import LoadConfig, User

pytestmark = [pytest.mark.peer, pytest.mark.timeout(120)]

DOMAIN = "skinnysip.test"


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    settings = LabSettings(domain=DOMAIN, realm=DOMAIN, hosts=("127.0.0.1",), sip_port=0, sips_port=0,  # type: ignore[arg-type]
                           sccp_port=0)
    async with Lab(settings) as running:
        yield running


async def test_load_call_to_the_lab_echo(lab: Lab) -> None:
    port = int(lab.sip["udp"].rsplit(":", 1)[1])
    users = [User("1001", "demo1001"), User("1002", "demo1002")]
    config = LoadConfig("call", "127.0.0.1", port=port, domain=DOMAIN, users=users, to="600", rate=4, count=6,
                        limit=6, hold=2.0)
    monitor = await run_local(config, [])
    result = summary(monitor, config)
    assert (result["attempted"], result["successful"], result["failed"]) == (6, 6, 0), result
    # INVITE, the INVITE again with Proxy-Authorization after the lab's 407, BYE
    assert result["requestsSent"] == 6 * 3
    media = result["media"]
    assert media["rtpExpected"] >= 6 * 2 * 50 * 0.8  # the echo sent back ~50 packets/s each
    # no loss on the wire; MOS 4.4 unless late play-out discards on a loaded machine lower it
    assert media["rtpLost"] == 0 and media["mos"] >= 3.6
    echo_calls = [c for c in lab.calls() if str(c.get("to", "")).startswith("sip:600@")]
    assert len(echo_calls) == 6, lab.calls()


async def test_load_calls_offer_only_the_codecs_given(lab: Lab) -> None:
    """``--codecs PCMA``: every INVITE the lab saw offers PCMA alone (and telephone-event), and
    the calls still carry media both ways."""
    port = int(lab.sip["udp"].rsplit(":", 1)[1])
    config = LoadConfig("call", "127.0.0.1", port=port, domain=DOMAIN, users=[User("1001", "demo1001")], to="600",
                        rate=4, count=2, limit=2, hold=1.0, codecs=("PCMA",))
    config.validate()
    result = summary(await run_local(config, []), config)
    assert (result["attempted"], result["successful"]) == (2, 2), result
    assert result["media"]["rtpLost"] == 0 and result["media"]["rtpExpected"] >= 2 * 40
    offers = [m["raw"] for c in lab.calls() for m in c["messages"]
              if m["direction"] == "received" and m["summary"].startswith("INVITE") and "m=audio" in m["raw"]]
    assert offers and all("RTP/AVP 8 101\r\n" in raw for raw in offers), offers[:1]


async def test_load_calls_take_their_rtp_ports_from_the_range(lab: Lab) -> None:
    """``--rtp-ports FIRST-LAST``: every INVITE the lab saw offers an RTP port inside the
    range (even, its RTCP port too), and the calls carry media both ways."""
    from peertools import free_even_range

    first, last = free_even_range(16)
    port = int(lab.sip["udp"].rsplit(":", 1)[1])
    config = LoadConfig("call", "127.0.0.1", port=port, domain=DOMAIN, users=[User("1001", "demo1001")], to="600",
                        rate=4, count=3, limit=3, hold=1.0, rtp_ports=(first, last))
    config.validate()
    result = summary(await run_local(config, []), config)
    assert (result["attempted"], result["successful"]) == (3, 3), result
    assert result["media"]["rtpLost"] == 0 and result["media"]["rtpExpected"] >= 3 * 40
    offered = [int(m["raw"].split("m=audio ", 1)[1].split(" ", 1)[0]) for c in lab.calls() for m in c["messages"]
               if m["direction"] == "received" and m["summary"].startswith("INVITE") and "m=audio" in m["raw"]]
    assert len(set(offered)) == 3 and all(first <= p < last and p % 2 == 0 for p in offered), offered


async def test_load_calls_carry_the_added_header_fields(lab: Lab, tmp_path) -> None:
    """--header on calls: the INVITE (first and with Proxy-Authorization) carries the
    fields; the lab's echo answers as ever."""
    port = int(lab.sip["udp"].rsplit(":", 1)[1])
    path = tmp_path / "messages.log"
    config = LoadConfig("call", "127.0.0.1", port=port, domain=DOMAIN, users=[User("1001", "demo1001")], to="600",
                        rate=4, count=2, limit=2, hold=0.5, trace_msg=str(path),
                        headers=[("X-Campaign", "load 1"), ("User-Agent", "load-agent/2")])
    monitor = await run_local(config, [])
    assert summary(monitor, config)["successful"] == 2
    text = path.read_bytes().decode("utf-8")  # as written: CRLF line ends
    invites = [m for m in text.split("\n----- ") if " sent UDP " in m and "\nINVITE sip:600@" in m]
    assert len(invites) == 4, text[:3000]  # each call: INVITE, then with Proxy-Authorization
    for invite in invites:
        assert "\r\nX-Campaign: load 1\r\n" in invite and invite.count("\r\nUser-Agent: ") == 1
        assert "\r\nUser-Agent: load-agent/2\r\n" in invite


async def test_load_calls_over_ipv6_to_the_lab_echo_are_answered_over_ipv6() -> None:
    """The lab on both families: load calls to ``[::1]`` reach the echo (the services phone
    sits on IPv4 behind the proxy) and are answered in the offer's family — before, the echo
    refused the IPv6 offer with 488 (incompatible network address formats)."""
    settings = LabSettings(domain=DOMAIN, realm=DOMAIN, hosts=("127.0.0.1", "::1"), sip_port=0, sips_port=0,  # type: ignore[arg-type]
                           sccp_port=0)
    async with Lab(settings) as lab:
        assert lab.proxy is not None
        port = lab.proxy.listeners[("udp", "::1")][1]
        config = LoadConfig("call", "::1", port=port, domain=DOMAIN, users=[User("1001", "demo1001")], to="600",
                            rate=4, count=2, limit=2, hold=1.5)
        monitor = await run_local(config, [])
        result = summary(monitor, config)
    assert (result["successful"], result["failed"]) == (2, 0), result
    assert result["media"]["rtpExpected"] >= 2 * 1.5 * 50 * 0.8 and result["media"]["rtpLost"] == 0


async def test_load_calls_take_each_users_target_from_its_line(lab: Lab) -> None:
    """``to="[field3]"`` (SIPp's keyword): 1001 calls the echo (600), 1002 the tone (601), each
    as its users-file line says; the lab saw each pair's calls."""
    port = int(lab.sip["udp"].rsplit(":", 1)[1])
    users = [User("1001", "demo1001", None, ("1001", "demo1001", "1001", "600")),
             User("1002", "demo1002", None, ("1002", "demo1002", "1002", "601"))]
    config = LoadConfig("call", "127.0.0.1", port=port, domain=DOMAIN, users=users, to="[field3]", rate=4, count=4,
                        limit=4, hold=1.0)
    config.validate()
    result = summary(await run_local(config, []), config)
    assert (result["attempted"], result["successful"], result["failed"]) == (4, 4, 0), result
    pairs = sorted((str(c.get("from", "")).split("@")[0], str(c.get("to", "")).split("@")[0]) for c in lab.calls())
    assert pairs == [("sip:1001", "sip:600")] * 2 + [("sip:1002", "sip:601")] * 2, lab.calls()


async def test_load_answer_in_two_worker_processes_answers_the_lab_calls(lab: Lab, tmp_path) -> None:
    """``load answer --processes 2``: worker 0 registers 1002, worker 1 registers 1003 (the
    users file split as attempts are); 1001's load calls through the lab's proxy to each are
    answered by the worker that holds it, the summary adds both workers' calls, and at the
    end the lab has no binding left."""
    import asyncio
    import json
    import sys

    port = int(lab.sip["udp"].rsplit(":", 1)[1])
    assert lab.proxy is not None
    users = tmp_path / "callees.csv"
    users.write_text("SEQUENTIAL\n1002;demo1002\n1003;demo1003\n")
    answer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "skinnysip", "load", "answer", "127.0.0.1", "--port", str(port), "--domain", DOMAIN,
        "--users", str(users), "--processes", "2", "-m", "4", "--duration", "60", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(200):  # both registered (each worker started by spawn: a few seconds)
            if {b["user"] for b in lab.proxy.bindings()} >= {"1002", "1003"}:
                break
            await asyncio.sleep(0.1)
        bound = {b["user"]: b["source"] for b in lab.proxy.bindings()}
        assert set(bound) == {"1002", "1003"} and bound["1002"] != bound["1003"], bound
        callers = [User("1001", "demo1001", None, ("1001", "demo1001", "1001", callee)) for callee in ("1002", "1003")]
        config = LoadConfig("call", "127.0.0.1", port=port, domain=DOMAIN, users=callers, to="[field3]", rate=4,
                            count=4, limit=4, hold=1.0)
        called = summary(await run_local(config, []), config)
        out, err = await asyncio.wait_for(answer.communicate(), 60)
    finally:
        if answer.returncode is None:
            answer.kill()
            await answer.wait()
    assert (called["successful"], called["failed"]) == (4, 0), called
    result = json.loads(out)
    assert answer.returncode == 0, err.decode()[-2000:]
    assert (result["attempted"], result["successful"], result["workers"]) == (4, 4, 2), result
    assert (result["registered"], result["notRegistered"]) == (2, 0)
    assert [w["attempted"] for w in result["workerTotals"]] == [2, 2], result["workerTotals"]
    assert result["media"]["rtpExpected"] > 0 and result["media"]["rtpLost"] == 0
    assert lab.proxy.bindings() == []
